#!/usr/bin/env python3
"""A third-party MQTT client (Eclipse paho-mqtt) driven by Hearth's tests.

Every mode prints one JSON object per line on stdout, so the Swift test can assert on it.

  publish      publish payloads and report each acknowledgement's reason code
  answer       act as a device: answer commands on devices/SERIAL/commands/+
  aliases      topic-alias tricks against the device namespace
  rules        the gateway's broker rules (issue 14): spaces in ids, a denied topic, keep-alive
               wills, overlapping subscriptions, subscription ids, subscribe options, shared
               subscriptions, Maximum Packet Size, Receive Maximum, DISCONNECT expiry
  conformance  run broker checks (QoS 0/1/2, wildcards, retained, will, session resume,
               request/response) against a general-purpose listener
  fleet        many devices at once (--fleet FILE: a JSON list of {serial, cert, key}), each
               streaming --count QoS 1 readings; a device whose connection is lost after it
               connected stops there (the test moves it to another node); one line per device
               with the sequence numbers acknowledged
"""
import argparse
import json
import os
import ssl
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


_out_lock = threading.Lock()


def out(obj):
    # One write per line under a lock: paho's network thread prints too.
    with _out_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def make_client(args, client_id=None, clean=True, expiry=None):
    version = mqtt.MQTTv5 if args.version == 5 else mqtt.MQTTv311
    kwargs = {"callback_api_version": mqtt.CallbackAPIVersion.VERSION2, "client_id": client_id or "", "protocol": version}
    if version == mqtt.MQTTv311:
        kwargs["clean_session"] = clean
    c = mqtt.Client(**kwargs)
    if args.cafile:
        c.tls_set(ca_certs=args.cafile, certfile=args.cert, keyfile=args.key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    c._hearth_connected = threading.Event()
    c._hearth_connack = None
    c._hearth_ended = False

    def on_connect(client, userdata, flags, reason_code, properties):
        client._hearth_connack = (reason_code.value if hasattr(reason_code, "value") else int(reason_code), flags.session_present, properties)
        client._hearth_connected.set()

    c.on_connect = on_connect

    def on_disconnect(client, userdata, flags, reason_code, properties):
        # The server's DISCONNECT (5.0): its reason and retry-after hint, if any.
        line = {"disconnect": reason_code.value if hasattr(reason_code, "value") else int(reason_code)}
        for key, value in (getattr(properties, "UserProperty", None) or []) if properties is not None else []:
            if key == "retry-after":
                line["retryAfter"] = int(value)
        out(line)
        if line["disconnect"] != 0:
            client._hearth_ended = True  # by the server: no acknowledgement can follow

    c.on_disconnect = on_disconnect
    props = None
    if version == mqtt.MQTTv5 and expiry is not None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = expiry
    if version == mqtt.MQTTv5:
        c._hearth_connect_kwargs = {"clean_start": clean, "properties": props}
    else:
        c._hearth_connect_kwargs = {}
    return c


def connect(c, args, wait=30):
    c.connect(args.host, args.port, keepalive=30, **c._hearth_connect_kwargs)
    c.loop_start()
    if not c._hearth_connected.wait(wait):
        raise RuntimeError("no CONNACK")
    return c._hearth_connack


reasons = {}


def track_acks(c):
    """Records each publish's acknowledgement reason code (and reason string) by message id."""
    acks = {}
    done = threading.Condition()

    def on_publish(client, userdata, mid, reason_code, properties):
        with done:
            acks[mid] = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
            reason = getattr(properties, "ReasonString", None) if properties is not None else None
            if reason:
                reasons[mid] = reason
            done.notify_all()

    c.on_publish = on_publish
    return acks, done


def subscribe(c, topic, qos=1, timeout=15):
    """Subscribes and waits for the SUBACK (never a fixed sleep: machines under load are slow)."""
    acked = threading.Event()
    c.on_subscribe = lambda client, userdata, mid, reason_codes, properties: acked.set()
    c.subscribe(topic, qos=qos)
    if not acked.wait(timeout):
        raise RuntimeError(f"no SUBACK for {topic}")


def open_publisher(args):
    """Connects with acknowledgement tracking and prints the CONNACK; None if refused."""
    c = make_client(args, client_id=args.client_id)
    acks, done = track_acks(c)
    rc, _, _ = connect(c, args)
    out({"connack": rc})
    return (c, acks, done) if rc == 0 else None


def cmd_publish(args):
    opened = open_publisher(args)
    if opened is None:
        return
    c, acks, done = opened
    mids = []
    for payload in args.payload:
        if c._hearth_ended or not c.is_connected():
            mids.append(None)  # the server is gone: never sent, reported with no code
            continue
        info = c.publish(args.topic, payload.encode(), qos=args.qos)
        mids.append(info.mid)
        if args.wait_each:
            try:
                info.wait_for_publish(10)
            except (RuntimeError, ValueError):
                pass  # the connection ended under it
        if args.interval:
            time.sleep(args.interval)
    report_acks(c, acks, done, mids, args.timeout)


def report_acks(c, acks, done, mids, timeout):
    """Waits (up to `timeout`, or until the server ends the connection) for every publish's
    acknowledgement, prints each, disconnects."""
    deadline = time.time() + timeout
    with done:
        while len([m for m in mids if m in acks]) < len(mids) and time.time() < deadline and not c._hearth_ended:
            done.wait(0.2)
    for i, mid in enumerate(mids):
        line = {"index": i, "rc": acks.get(mid)}
        if mid in reasons:
            line["reason"] = reasons[mid]
        out(line)
    c.disconnect()
    c.loop_stop()


def cmd_aliases(args):
    """Topic-alias tricks (MQTT 5.0): map aliases to our own and to another device's topic."""
    opened = open_publisher(args)
    if opened is None:
        return
    c, acks, done = opened
    steps = [(args.topic, 1), ("", 1), (args.other, 2), ("", 2), (args.other, 1), ("", 1)]
    mids = []
    for i, (topic, alias) in enumerate(steps):
        props = Properties(PacketTypes.PUBLISH)
        props.TopicAlias = alias
        payload = json.dumps({"seq": i + 1, "values": json.loads(args.payload[0])})
        info = c.publish(topic, payload, qos=1, properties=props)
        info.wait_for_publish(5)
        mids.append(info.mid)
    report_acks(c, acks, done, mids, args.timeout)


def cmd_answer(args):
    c = make_client(args, client_id=args.client_id)
    answered = threading.Event()
    count = [0]

    def on_message(client, userdata, msg):
        body = json.loads(msg.payload)
        topic = msg.topic + "/result"
        props = None
        if args.version == 5 and getattr(msg.properties, "ResponseTopic", None):
            topic = msg.properties.ResponseTopic
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = msg.properties.CorrelationData
        out({"command": msg.topic.rsplit("/", 1)[-1], "parameters": body.get("parameters"), "qos": msg.qos})
        client.publish(topic, json.dumps({"id": body["id"], "status": args.status, "detail": "done by paho"}), qos=1, properties=props)
        count[0] += 1
        if count[0] >= args.count:
            answered.set()

    c.on_message = on_message
    rc, _, _ = connect(c, args)
    out({"connack": rc})
    if rc != 0:
        return
    subscribe(c, f"devices/{args.serial}/commands/+", qos=1)
    out({"ready": True})
    answered.wait(args.timeout)
    time.sleep(0.3)
    c.disconnect()
    c.loop_stop()


def cmd_conformance(args):
    base = f"conf/{uuid.uuid4().hex[:8]}"
    results = {}

    def collector(client_id=None, clean=True, expiry=None):
        c = make_client(args, client_id=client_id, clean=clean, expiry=expiry)
        c._hearth_messages = []
        c._hearth_event = threading.Event()

        def on_message(client, userdata, msg):
            client._hearth_messages.append(msg)
            client._hearth_event.set()

        c.on_message = on_message
        return c

    def wait_for(c, n, timeout=20):
        deadline = time.time() + timeout
        while len(c._hearth_messages) < n and time.time() < deadline:
            time.sleep(0.05)
        return c._hearth_messages

    pub = make_client(args)
    connect(pub, args)

    # QoS 0, 1 and 2 end to end.
    sub = collector()
    connect(sub, args)
    subscribe(sub, f"{base}/qos/#", qos=2)
    for q in (0, 1, 2):
        pub.publish(f"{base}/qos/{q}", f"q{q}".encode(), qos=q).wait_for_publish(5)
    got = wait_for(sub, 3)
    results["qos"] = sorted((m.topic.rsplit("/", 1)[-1], m.qos, m.payload.decode()) for m in got) == [("0", 0, "q0"), ("1", 1, "q1"), ("2", 2, "q2")]

    # Wildcards: + matches one level, # any number.
    plus = collector()
    connect(plus, args)
    subscribe(plus, f"{base}/wild/+/x", qos=1)
    hash_ = collector()
    connect(hash_, args)
    subscribe(hash_, f"{base}/wild/#", qos=1)
    for t in ("a/x", "b/y", "c/d/x"):
        pub.publish(f"{base}/wild/{t}", b"w", qos=1).wait_for_publish(5)
    wait_for(hash_, 3)
    time.sleep(0.3)
    results["wildcards"] = [m.topic for m in plus._hearth_messages] == [f"{base}/wild/a/x"] and sorted(m.topic for m in hash_._hearth_messages) == sorted(f"{base}/wild/{t}" for t in ("a/x", "b/y", "c/d/x"))

    # Retained: a later subscriber gets the last retained message, flagged as retained.
    pub.publish(f"{base}/ret", b"kept", qos=1, retain=True).wait_for_publish(5)
    late = collector()
    connect(late, args)
    subscribe(late, f"{base}/ret", qos=1)
    got = wait_for(late, 1)
    results["retained"] = len(got) == 1 and got[0].retain and got[0].payload == b"kept"

    # Will: an abrupt loss publishes the will.
    watcher = collector()
    connect(watcher, args)
    subscribe(watcher, f"{base}/will", qos=1)
    doomed = make_client(args)
    doomed.will_set(f"{base}/will", b"gone", qos=1)
    connect(doomed, args)
    time.sleep(0.2)
    doomed.loop_stop()
    doomed.socket().close()
    got = wait_for(watcher, 1)
    results["will"] = len(got) == 1 and got[0].payload == b"gone"

    # Session resume: subscriptions and queued QoS 1 messages survive a reconnect.
    cid = f"resume-{uuid.uuid4().hex[:8]}"
    # 5.0: a fresh session (Clean Start) that outlives the connection (Session Expiry); 3.1.1: clean session 0.
    s1 = collector(client_id=cid, clean=(args.version == 5), expiry=300)
    connect(s1, args)
    subscribe(s1, f"{base}/sess", qos=1)
    s1.disconnect()
    s1.loop_stop()
    time.sleep(0.3)
    pub.publish(f"{base}/sess", b"while away", qos=1).wait_for_publish(5)
    time.sleep(0.3)
    s2 = collector(client_id=cid, clean=False, expiry=300)
    rc, present, _ = connect(s2, args)
    got = wait_for(s2, 1)
    results["session_resume"] = rc == 0 and present and len(got) == 1 and got[0].payload == b"while away"

    # Request/response: the responder answers on the request's response topic with its correlation data.
    responder = make_client(args)

    def respond(client, userdata, msg):
        if args.version == 5:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = msg.properties.CorrelationData
            client.publish(msg.properties.ResponseTopic, b"pong:" + msg.payload, qos=1, properties=props)
        else:
            req = json.loads(msg.payload)
            client.publish(req["reply"], json.dumps({"id": req["id"], "answer": "pong"}), qos=1)

    responder.on_message = respond
    connect(responder, args)
    subscribe(responder, f"{base}/req", qos=1)
    requester = collector()
    connect(requester, args)
    subscribe(requester, f"{base}/resp", qos=1)
    if args.version == 5:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"{base}/resp"
        props.CorrelationData = b"corr-42"
        requester.publish(f"{base}/req", b"ping", qos=1, properties=props)
        got = wait_for(requester, 1)
        results["request_response"] = len(got) == 1 and got[0].payload == b"pong:ping" and got[0].properties.CorrelationData == b"corr-42"
    else:
        requester.publish(f"{base}/req", json.dumps({"id": "corr-42", "reply": f"{base}/resp"}), qos=1)
        got = wait_for(requester, 1)
        results["request_response"] = len(got) == 1 and json.loads(got[0].payload) == {"id": "corr-42", "answer": "pong"}

    extra = []
    if args.version == 5:
        # Will delay: nothing while the delay runs, the will after it.
        watcher2 = collector()
        connect(watcher2, args)
        subscribe(watcher2, f"{base}/wd", qos=1)
        late_will = make_client(args, client_id=f"wd-{uuid.uuid4().hex[:8]}", clean=True, expiry=60)
        wprops = Properties(PacketTypes.WILLMESSAGE)
        wprops.WillDelayInterval = 2
        late_will.will_set(f"{base}/wd", b"late", qos=1, properties=wprops)
        connect(late_will, args)
        time.sleep(0.2)
        late_will.loop_stop()
        late_will.socket().close()
        time.sleep(1.0)
        early = len(watcher2._hearth_messages)
        got = wait_for(watcher2, 1, timeout=20)  # a loaded CI machine can be slow; early or never still fails
        results["will_delay"] = early == 0 and len(got) == 1 and got[0].payload == b"late"

        # Message expiry: a message that expires while its subscriber is away is not delivered.
        cid2 = f"exp-{uuid.uuid4().hex[:8]}"
        e1 = collector(client_id=cid2, clean=True, expiry=300)
        connect(e1, args)
        subscribe(e1, f"{base}/exp", qos=1)
        e1.disconnect()
        e1.loop_stop()
        time.sleep(0.3)
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = 1
        pub.publish(f"{base}/exp", b"stale", qos=1, properties=props).wait_for_publish(5)
        pub.publish(f"{base}/exp", b"fresh", qos=1).wait_for_publish(5)
        time.sleep(2.2)
        e2 = collector(client_id=cid2, clean=False, expiry=300)
        connect(e2, args)
        got = wait_for(e2, 2, timeout=2)
        results["message_expiry"] = [m.payload for m in got] == [b"fresh"]
        extra = [watcher2, e2]

    for c in [pub, sub, plus, hash_, late, watcher, s2, responder, requester] + extra:
        c.disconnect()
        c.loop_stop()
    out(results)


def cmd_rules(args):
    """The broker rules of the gateway redesign, with paho as the client (issue 14)."""
    base = f"rules/{uuid.uuid4().hex[:8]}"
    v5 = args.version == 5
    results = {}
    clients = []

    def client(client_id=None, clean=True, expiry=None, props=None, keepalive=30):
        c = make_client(args, client_id=client_id, clean=clean, expiry=expiry)
        c._hearth_messages = []
        c.on_message = lambda cl, u, msg: cl._hearth_messages.append(msg)
        if v5 and props:
            p = c._hearth_connect_kwargs.get("properties") or Properties(PacketTypes.CONNECT)
            for k, v in props.items():
                setattr(p, k, v)
            c._hearth_connect_kwargs["properties"] = p
        c._hearth_keepalive = keepalive
        clients.append(c)
        return c

    def start(c):
        c.connect(args.host, args.port, keepalive=c._hearth_keepalive, **c._hearth_connect_kwargs)
        c.loop_start()
        if not c._hearth_connected.wait(30):
            raise RuntimeError("no CONNACK")
        return c._hearth_connack

    def wait_for(c, n, timeout=10):
        deadline = time.time() + timeout
        while len(c._hearth_messages) < n and time.time() < deadline:
            time.sleep(0.05)
        return c._hearth_messages

    def suback(c, topic, qos=1, options=None, props=None):
        got = {}
        acked = threading.Event()

        def on_subscribe(cl, u, mid, reason_codes, properties):
            got["codes"] = [r.value if hasattr(r, "value") else int(r) for r in reason_codes]
            acked.set()

        c.on_subscribe = on_subscribe
        if v5:
            c.subscribe(topic, options=options or mqtt.SubscribeOptions(qos=qos), properties=props)
        else:
            c.subscribe(topic, qos=qos)
        acked.wait(15)
        return got.get("codes")

    pub = client()
    start(pub)

    # A client id with a space (the Paho interoperability suite's "clean retained").
    spaced = client(client_id="clean retained")
    results["client_id_with_space"] = start(spaced)[0] == 0

    # A denied topic (--dev-deny test/nosubscribe) is refused at SUBSCRIBE.
    denied = client()
    start(denied)
    codes = suback(denied, "test/nosubscribe", qos=1)
    results["denied_subscription"] = codes is not None and codes[0] >= 0x80

    # Keep-alive expiry: a client that stops sending is closed and its will published.
    watcher = client()
    start(watcher)
    suback(watcher, f"{base}/ka", qos=1)
    silent = client(keepalive=2)
    silent.will_set(f"{base}/ka", b"keepalive-will", qos=1)
    start(silent)
    silent.loop_stop()  # no more PINGREQs; the socket stays open
    got = wait_for(watcher, 1, timeout=15)
    results["keepalive_will"] = len(got) == 1 and got[0].payload == b"keepalive-will"

    # Overlapping subscriptions: QoS 0 on a/#, QoS 1 on a/+: at least one copy at QoS 1.
    over = client()
    start(over)
    suback(over, f"{base}/ov/#", qos=0)
    suback(over, f"{base}/ov/+", qos=1)
    pub.publish(f"{base}/ov/x", b"o", qos=1).wait_for_publish(5)
    got = wait_for(over, 1)
    time.sleep(0.5)
    results["overlapping"] = len(over._hearth_messages) >= 1 and max(m.qos for m in over._hearth_messages) == 1

    if v5:
        # Subscription identifiers: each matching subscription's id reaches the client.
        ids = client()
        start(ids)
        for n, f in ((1, f"{base}/id/#"), (2, f"{base}/id/+")):
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = n
            suback(ids, f, qos=1, props=props)
        pub.publish(f"{base}/id/x", b"i", qos=1).wait_for_publish(5)
        got = wait_for(ids, 1)
        time.sleep(0.5)
        seen = set()
        for m in ids._hearth_messages:
            v = getattr(m.properties, "SubscriptionIdentifier", [])
            seen.update(v if isinstance(v, list) else [v])
        results["subscription_identifiers"] = seen == {1, 2}

        # Subscribe options: No Local, Retain As Published, Retain Handling 2.
        opts = client()
        start(opts)
        suback(opts, f"{base}/nl", options=mqtt.SubscribeOptions(qos=1, noLocal=True))
        opts.publish(f"{base}/nl", b"own", qos=1).wait_for_publish(5)
        pub.publish(f"{base}/rap", b"kept", qos=1, retain=True).wait_for_publish(5)
        suback(opts, f"{base}/rap", options=mqtt.SubscribeOptions(qos=1, retainAsPublished=True))
        pub.publish(f"{base}/rh", b"old", qos=1, retain=True).wait_for_publish(5)
        suback(opts, f"{base}/rh", options=mqtt.SubscribeOptions(qos=1, retainHandling=2))
        pub.publish(f"{base}/rap", b"live", qos=1, retain=True).wait_for_publish(5)
        time.sleep(1)
        by_topic = {}
        for m in opts._hearth_messages:
            by_topic.setdefault(m.topic.rsplit("/", 1)[-1], []).append((m.payload, m.retain))
        results["subscribe_options"] = (
            "nl" not in by_topic
            and by_topic.get("rap") == [(b"kept", True), (b"live", True)]
            and "rh" not in by_topic
        )

        # Shared subscriptions: two members, four messages, two each.
        members = [client(), client()]
        for m in members:
            start(m)
            suback(m, f"$share/g/{base}/sh", qos=1)
        for i in range(4):
            pub.publish(f"{base}/sh", str(i).encode(), qos=1).wait_for_publish(5)
        time.sleep(1)
        results["shared"] = [len(m._hearth_messages) for m in members] == [2, 2]

        # Maximum Packet Size: a message too large for the client is dropped, the next delivered.
        small = client(props={"MaximumPacketSize": 64})
        start(small)
        suback(small, f"{base}/mps", qos=1)
        pub.publish(f"{base}/mps", b"x" * 200, qos=1).wait_for_publish(5)
        pub.publish(f"{base}/mps", b"fits", qos=1).wait_for_publish(5)
        time.sleep(1)
        results["maximum_packet_size"] = [m.payload for m in small._hearth_messages] == [b"fits"]

        # (Topic aliases from the server: neither paho-mqtt nor libmosquitto resolves incoming
        # aliases, so PacketConformanceTests checks them byte for byte.)

        # Flow control: with Receive Maximum 1 every message still arrives, in order.
        narrow = client(props={"ReceiveMaximum": 1})
        start(narrow)
        suback(narrow, f"{base}/flow", qos=1)
        for i in range(10):
            pub.publish(f"{base}/flow", str(i).encode(), qos=1)
        got = wait_for(narrow, 10)
        results["receive_maximum"] = [m.payload for m in got] == [str(i).encode() for i in range(10)]

        # Session expiry set on DISCONNECT: 0 ends the session now.
        cid = f"dx-{uuid.uuid4().hex[:8]}"
        d1 = client(client_id=cid, clean=True, expiry=300)
        start(d1)
        dprops = Properties(PacketTypes.DISCONNECT)
        dprops.SessionExpiryInterval = 0
        d1.disconnect(properties=dprops)
        d1.loop_stop()
        time.sleep(0.3)
        d2 = client(client_id=cid, clean=False, expiry=300)
        rc, present, _ = start(d2)
        results["disconnect_session_expiry"] = rc == 0 and not present

    for c in clients:
        try:
            c.disconnect()
            c.loop_stop()
        except Exception:
            pass
    out(results)


def cmd_fleet(args):
    """Devices streaming readings side by side, one paho client (and network thread) each. A
    refused or failed connection attempt is retried (paho's reconnect, 1-16 s) until the device
    has connected; once it has, losing the connection ends the device's run. Devices start spread
    over --spread seconds, as a fleet coming back does."""
    with open(args.fleet) as f:
        devices = json.load(f)
    lock = threading.Lock()
    finished = threading.Condition(lock)
    state = {}
    connected = [0]

    def start(device):
        serial = device["serial"]
        c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=serial, protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=args.cafile, certfile=device["cert"], keyfile=device["key"], tls_version=ssl.PROTOCOL_TLS_CLIENT)
        # Patient as a device is: a handshake storm on a loaded (or debug-built) server answers
        # late, and clients that give up after paho's 5 s and retry at once only feed it.
        c.connect_timeout = 60
        c.reconnect_delay_set(min_delay=1, max_delay=16)
        c.max_queued_messages_set(0)
        c.max_inflight_messages_set(args.inflight)
        st = {"serial": serial, "mids": {}, "acked": [], "codes": {}, "connected": False, "ended": False, "disconnects": []}
        state[serial] = st

        def end(client):
            with finished:
                if not st["ended"]:
                    st["ended"] = True
                    finished.notify_all()

        def on_connect(client, userdata, flags, reason_code, properties):
            if reason_code.value != 0 or st["connected"]:
                return
            st["connected"] = True
            with lock:
                connected[0] += 1
                if connected[0] == len(devices):
                    out({"allConnected": connected[0]})
            for seq in range(1, args.count + 1):
                payload = json.dumps({"seq": seq, "values": json.loads(args.values)}).encode()
                info = client.publish(f"devices/{serial}/telemetry", payload, qos=1)
                with lock:
                    st["mids"][info.mid] = seq

        def on_publish(client, userdata, mid, reason_code, properties):
            with finished:
                seq = st["mids"].get(mid)
                code = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
                st["codes"][code] = st["codes"].get(code, 0) + 1
                if seq is not None and code == 0:
                    st["acked"].append(seq)
                if len(st["acked"]) == args.count:
                    st["ended"] = True
                    finished.notify_all()

        def on_disconnect(client, userdata, flags, reason_code, properties):
            code = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
            st["disconnects"].append(code)
            if st["connected"]:
                client.disconnect()  # no reconnect: this node is gone for this device
                end(client)

        c.on_connect = on_connect
        c.on_publish = on_publish
        c.on_disconnect = on_disconnect
        c.connect_async(args.host, args.port, keepalive=30)
        c.loop_start()
        return c

    clients = []
    for d in devices:
        clients.append(start(d))
        time.sleep(args.spread / max(1, len(devices)))
    deadline = time.time() + args.timeout
    with finished:
        while time.time() < deadline and not all(st["ended"] for st in state.values()):
            finished.wait(0.5)
    for c in clients:
        try:
            c.disconnect()
        except Exception:
            pass
    time.sleep(0.5)  # the DISCONNECTs go out from each client's thread
    with lock:
        for st in state.values():
            out({"serial": st["serial"], "connected": st["connected"], "acked": sorted(st["acked"]),
                 "codes": {str(k): v for k, v in st["codes"].items()}, "disconnects": st["disconnects"]})
    # Joining hundreds of network threads one by one takes minutes; the process ends here.
    os._exit(0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["publish", "answer", "conformance", "aliases", "rules", "fleet"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--version", type=int, choices=[3, 5], default=5)
    p.add_argument("--cafile")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--client-id")
    p.add_argument("--topic")
    p.add_argument("--qos", type=int, default=1)
    p.add_argument("--payload", action="append", default=[])
    p.add_argument("--wait-each", action="store_true")
    p.add_argument("--interval", type=float, default=0, help="publish mode: seconds between publishes")
    p.add_argument("--serial")
    p.add_argument("--other", help="another device's topic (aliases mode)")
    p.add_argument("--status", default="ok")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=15)
    p.add_argument("--fleet", help="fleet mode: a JSON file listing each device's serial, cert and key")
    p.add_argument("--inflight", type=int, default=20, help="fleet mode: readings each device has unacknowledged at most")
    p.add_argument("--spread", type=float, default=5, help="fleet mode: seconds over which the devices start")
    p.add_argument("--values", default='{"state": "locked"}', help="fleet mode: each reading's values (JSON)")
    args = p.parse_args()
    {"publish": cmd_publish, "answer": cmd_answer, "conformance": cmd_conformance, "aliases": cmd_aliases, "rules": cmd_rules,
     "fleet": cmd_fleet}[args.mode](args)


if __name__ == "__main__":
    main()

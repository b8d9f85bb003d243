#!/usr/bin/env python3
"""A third-party MQTT client (Eclipse paho-mqtt) driven by Hearth's tests.

Every mode prints one JSON object per line on stdout, so the Swift test can assert on it.

  publish      publish payloads and report each acknowledgement's reason code
  answer       act as a device: answer commands on devices/SERIAL/commands/+
  aliases      topic-alias tricks against the device namespace
  conformance  run broker checks (QoS 0/1/2, wildcards, retained, will, session resume,
               request/response) against a general-purpose listener
"""
import argparse
import json
import ssl
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def out(obj):
    print(json.dumps(obj), flush=True)


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

    def on_connect(client, userdata, flags, reason_code, properties):
        client._hearth_connack = (reason_code.value if hasattr(reason_code, "value") else int(reason_code), flags.session_present, properties)
        client._hearth_connected.set()

    c.on_connect = on_connect
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


def track_acks(c):
    """Records each publish's acknowledgement reason code by message id."""
    acks = {}
    done = threading.Condition()

    def on_publish(client, userdata, mid, reason_code, properties):
        with done:
            acks[mid] = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
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
        info = c.publish(args.topic, payload.encode(), qos=args.qos)
        mids.append(info.mid)
        if args.wait_each:
            info.wait_for_publish(10)
    report_acks(c, acks, done, mids, args.timeout)


def report_acks(c, acks, done, mids, timeout):
    """Waits (up to `timeout`) for every publish's acknowledgement, prints each, disconnects."""
    deadline = time.time() + timeout
    with done:
        while len([m for m in mids if m in acks]) < len(mids) and time.time() < deadline:
            done.wait(0.2)
    for i, mid in enumerate(mids):
        out({"index": i, "rc": acks.get(mid)})
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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["publish", "answer", "conformance", "aliases"])
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
    p.add_argument("--serial")
    p.add_argument("--other", help="another device's topic (aliases mode)")
    p.add_argument("--status", default="ok")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=15)
    args = p.parse_args()
    {"publish": cmd_publish, "answer": cmd_answer, "conformance": cmd_conformance, "aliases": cmd_aliases}[args.mode](args)


if __name__ == "__main__":
    main()

import Foundation
import HearthBroker
import HearthFixtures
import HearthGateway
import HearthMQTT
import HearthTestSupport
import Logging
import NIOCore
import Testing

/// One broker rule a test, packets compared byte for byte, in the style of Mosquitto's
/// `test/broker/`: raw sockets send what the test says and nothing else, so no client library
/// smooths over what the gateway actually writes. Serialized: the peers read with blocking
/// `poll`, which must not starve the tests beside them.
@Suite(.serialized) struct PacketConformanceTests {
    /// A development-listener gateway for the duration of `body`.
    static func withGateway(
        _ configure: (inout GatewayConfiguration) -> Void = { _ in },
        _ body: (_ gateway: MQTTGateway, _ port: Int) async throws -> Void
    ) async throws {
        var configuration = GatewayConfiguration(developmentListener: ("127.0.0.1", 0))
        configure(&configuration)
        try await withRunningGateway(configuration) {
            try MQTTGateway(configuration: $0, logger: $1, onBound: $2)
        } _: { gateway, ports in
            try await body(gateway, ports[.development] ?? 0)
        }
    }

    /// A client that speaks only in packets the test writes.
    struct Peer {
        let socket: RawSocket
        let version: MQTTVersion

        init(port: Int, _ version: MQTTVersion = .v5, receiveBuffer: Int32? = nil) throws {
            socket = try #require(RawSocket(port: port, receiveBuffer: receiveBuffer))
            self.version = version
        }

        func send(_ packet: MQTTPacket) {
            var buffer = ByteBuffer()
            packet.write(version: version, to: &buffer)
            socket.send(Array(buffer.readableBytesView))
        }

        /// CONNECTs and returns the CONNACK's bytes.
        @discardableResult
        func connect(
            _ id: String, cleanStart: Bool = true, keepAlive: UInt16 = 60, will: Connect.Will? = nil,
            properties: Properties = []
        ) async -> [UInt8]? {
            send(
                .connect(
                    Connect(
                        version: version, clientID: id, cleanStart: cleanStart, keepAlive: keepAlive, will: will,
                        properties: properties)))
            return await socket.readPacket()
        }

        /// SUBSCRIBEs and returns the SUBACK's bytes.
        @discardableResult
        func subscribe(_ filter: String, qos: QoS = .atMostOnce, id: UInt16 = 1, properties: Properties = [])
            async -> [UInt8]?
        {
            send(
                .subscribe(Subscribe(packetID: id, requests: [.init(filter: filter, qos: qos)], properties: properties))
            )
            return await socket.readPacket()
        }

        func read(_ timeout: TimeInterval = 10) async -> [UInt8]? { await socket.readPacket(timeout: timeout) }

        /// The next packet decoded (as the client would), or nil.
        func readDecoded(_ timeout: TimeInterval = 10) async -> MQTTPacket? {
            guard let bytes = await read(timeout) else { return nil }
            var parser = MQTTParser(version: version, maximumPacketSize: .max)
            var buffer = ByteBuffer(bytes: bytes)
            return try? parser.next(&buffer)
        }
    }

    /// A new peer's CONNECT answered (nil if it could not even connect).
    static func connectOnce(
        _ port: Int, _ version: MQTTVersion, _ id: String, cleanStart: Bool = true, properties: Properties = []
    ) async -> [UInt8]? {
        await (try? Peer(port: port, version))?.connect(id, cleanStart: cleanStart, properties: properties)
    }

    static let connack311: [UInt8] = [0x20, 0x02, 0x00, 0x00]

    /// Any UTF-8 client id up to the limit, spaces included (Paho's interoperability suite cleans
    /// up as "clean retained"); control characters are still refused.
    @Test func aClientIdentifierMayHoldSpaces() async throws {
        try await Self.withGateway { _, port in
            await #expect(Self.connectOnce(port, .v3_1_1, "clean retained") == Self.connack311)
            await #expect(Self.connectOnce(port, .v3_1_1, "kitchen sensor é") == Self.connack311)
            await #expect(
                Self.connectOnce(port, .v3_1_1, "bad\u{7}id") == [0x20, 0x02, 0x00, 0x02], "identifier rejected")
        }
    }

    /// The per-connection limits ARCHITECTURE 21 and SECURITY.md state are the defaults, and the
    /// gateway enforces them on the wire: 512 KiB/s of payload (a publish beyond it answered 0x97),
    /// 100 inbound QoS 2 in flight (the 101st: DISCONNECT 0x93), 50 subscriptions (the 51st filter of
    /// a SUBSCRIBE refused 0x97); a TLS handshake gets 10 s and a CONNECT 10 s.
    @Test func theDocumentedConnectionLimitsAreTheDefaultsAndAreEnforced() async throws {
        let limits = ConnectionLimits()
        #expect(limits.publishesPerSecond == 100 && limits.bytesPerSecond == 512 * 1024)
        #expect(limits.maximumSubscriptions == 50 && limits.receiveMaximum == 100)
        #expect(limits.maximumQueuedPerSession == 1000 && limits.connectTimeout == 10)
        #expect(GatewayConfiguration().handshakeTimeout == .seconds(10))
        // Packets up to 1 MiB here, so that the byte budget is what refuses. Each connection starts
        // with a full second's budget: 512 KiB of payload in one publish is taken, a byte more is
        // not (however slowly a loaded machine reads it).
        try await Self.withGateway({ $0.limits.maximumPacketSize = 1 << 20 }) { _, port in
            for (size, reason) in [(512 * 1024, ReasonCode.success), (512 * 1024 + 1, .quotaExceeded)] {
                let peer = try Peer(port: port)
                await peer.connect("bytes-\(size)")
                peer.send(
                    .publish(
                        Publish(
                            topic: "bytes/x", payload: [UInt8](repeating: 0x61, count: size), qos: .atLeastOnce,
                            packetID: 1)))
                guard case .puback(let ack)? = await peer.readDecoded() else {
                    Issue.record("no PUBACK for \(size) bytes")
                    return
                }
                #expect(ack.reason == reason, "\(size) bytes: \(ack.reason)")
            }

            // Receive Maximum 100: QoS 2 publishes never released stay in flight; the 101st is a
            // protocol error, DISCONNECT 0x93 (Receive Maximum exceeded).
            let holder = try Peer(port: port)
            await holder.connect("in-flight")
            for id in UInt16(1)...101 {
                holder.send(.publish(Publish(topic: "held/x", payload: [1], qos: .exactlyOnce, packetID: id)))
            }
            var pubrecs = 0
            var ended: ReasonCode?
            while ended == nil, let packet = await holder.readDecoded() {
                if case .pubrec = packet { pubrecs += 1 }
                if case .disconnect(let d) = packet { ended = d.reason }
            }
            #expect(
                pubrecs == 100 && ended == .receiveMaximumExceeded,
                "\(pubrecs) PUBRECs, then \(String(describing: ended))")

            let subscriber = try Peer(port: port)
            await subscriber.connect("many-filters")
            subscriber.send(
                .subscribe(
                    Subscribe(
                        packetID: 1, requests: (1...51).map { .init(filter: "quota/\($0)", qos: .atMostOnce) })))
            guard case .suback(let granted)? = await subscriber.readDecoded() else {
                Issue.record("no SUBACK")
                return
            }
            #expect(granted.reasons.count == 51)
            #expect(granted.reasons.prefix(50).allSatisfy { $0 == .success } && granted.reasons.last == .quotaExceeded)
        }
    }

    /// QoS 0 messages are not queued for a disconnected session (ARCHITECTURE 24, as Mosquitto);
    /// QoS 1 messages are, and arrive when it comes back.
    @Test func qos0IsNotQueuedForAnOfflineSession() async throws {
        try await Self.withGateway { _, port in
            let away = try Peer(port: port)
            await away.connect("away", properties: [.sessionExpiryInterval(60)])
            await away.subscribe("offline/#", qos: .atLeastOnce)
            away.send(.disconnect(ReasonPacket()))
            let sender = try Peer(port: port)
            await sender.connect("sender")
            sender.send(.publish(Publish(topic: "offline/zero", payload: [0x30], qos: .atMostOnce)))
            sender.send(.publish(Publish(topic: "offline/one", payload: [0x31], qos: .atLeastOnce, packetID: 1)))
            await #expect(sender.readDecoded().map { if case .puback = $0 { true } else { false } } == true)
            let back = try Peer(port: port)
            await #expect(back.connect("away", cleanStart: false, properties: [.sessionExpiryInterval(60)])?[2] == 1)
            let delivered = await back.socket.readPackets(window: 1).compactMap { bytes -> String? in
                var parser = MQTTParser(version: .v5, maximumPacketSize: .max)
                var buffer = ByteBuffer(bytes: bytes)
                guard case .publish(let p)? = try? parser.next(&buffer) else { return nil }
                return p.topic
            }
            #expect(delivered == ["offline/one"], "\(delivered)")
        }
    }

    /// A session resumed within its expiry reports Session Present 1 (MQTT 5.0 §3.2.2.1.1).
    @Test func aResumedSessionIsPresent() async throws {
        try await Self.withGateway { _, port in
            let first = try Peer(port: port)
            await #expect(
                first.connect("resume", cleanStart: false, properties: [.sessionExpiryInterval(60)])?.prefix(4) == [
                    0x20, 0x0E, 0x00, 0x00,
                ])
            first.send(.disconnect(ReasonPacket(reason: .success)))
            #expect(await first.socket.closedByServer(within: 10))
            let second = try Peer(port: port)
            await #expect(
                second.connect("resume", cleanStart: false, properties: [.sessionExpiryInterval(60)])?.prefix(4) == [
                    0x20, 0x0E, 0x01, 0x00,
                ], "session present")
            // 3.1.1: a persistent session (clean session 0) is present on the next connect too.
            let old = try Peer(port: port, .v3_1_1)
            await #expect(old.connect("resume311", cleanStart: false) == [0x20, 0x02, 0x00, 0x00])
            // Whether the server has seen the close yet or takes the session over: present either way.
            old.socket.closeNow()
            await #expect(Self.connectOnce(port, .v3_1_1, "resume311", cleanStart: false) == [0x20, 0x02, 0x01, 0x00])
        }
    }

    /// DISCONNECT may shorten or end a session (§3.14.2.2.2), but not revive one that was to end.
    @Test func disconnectCarriesTheSessionExpiry() async throws {
        try await Self.withGateway { _, port in
            let ending = try Peer(port: port)
            await ending.connect("ends", cleanStart: false, properties: [.sessionExpiryInterval(60)])
            ending.send(.disconnect(ReasonPacket(reason: .success, properties: [.sessionExpiryInterval(0)])))
            #expect(await ending.socket.closedByServer(within: 10))
            await #expect(
                Self.connectOnce(port, .v5, "ends", cleanStart: false, properties: [.sessionExpiryInterval(60)])?
                    .prefix(4) == [0x20, 0x0E, 0x00, 0x00], "the session ended with the connection")

            let reviving = try Peer(port: port)
            await reviving.connect("revives")
            reviving.send(.disconnect(ReasonPacket(reason: .success, properties: [.sessionExpiryInterval(30)])))
            let refusal = await reviving.read()
            #expect(
                refusal?.prefix(3) == [0xE0, refusal.map { UInt8($0.count - 2) } ?? 0, 0x82],
                "DISCONNECT 0x82 protocol error: \(refusal ?? [])")
            #expect(await reviving.socket.closedByServer(within: 10))
        }
    }

    /// A message larger than the client's Maximum Packet Size is not sent to it (§3.1.2.25); the
    /// next one that fits is.
    @Test func aMessageAboveTheClientsMaximumPacketSizeIsDropped() async throws {
        try await Self.withGateway { gateway, port in
            let small = try Peer(port: port)
            await small.connect("small", properties: [.maximumPacketSize(32)])
            await #expect(small.subscribe("big/#") == [0x90, 0x04, 0x00, 0x01, 0x00, 0x00])
            let sender = try Peer(port: port)
            await sender.connect("sender")
            sender.send(.publish(Publish(topic: "big/a", payload: Array(repeating: 0x41, count: 100))))
            sender.send(.publish(Publish(topic: "big/b", payload: Array("hi".utf8))))
            // PUBLISH QoS 0, topic "big/b", no properties, payload "hi".
            await #expect(small.read() == [0x30, 0x0A, 0x00, 0x05] + Array("big/b".utf8) + [0x00] + Array("hi".utf8))
            #expect(gateway.counters.deliveriesDropped == 1)
        }
    }

    /// Overlapping subscriptions of one client: one copy, at the highest QoS granted, carrying
    /// every matching subscription identifier (§3.3.4).
    @Test func overlappingSubscriptionsDeliverOnceWithEveryIdentifier() async throws {
        try await Self.withGateway { _, port in
            let client = try Peer(port: port)
            await client.connect("overlap")
            await #expect(
                client.subscribe("ov/#", qos: .atMostOnce, id: 1, properties: [.subscriptionIdentifier(1)]) == [
                    0x90, 0x04, 0x00, 0x01, 0x00, 0x00,
                ])
            await #expect(
                client.subscribe("ov/+", qos: .atLeastOnce, id: 2, properties: [.subscriptionIdentifier(2)]) == [
                    0x90, 0x04, 0x00, 0x02, 0x00, 0x01,
                ])
            let sender = try Peer(port: port)
            await sender.connect("overlap-sender")
            sender.send(.publish(Publish(topic: "ov/a", payload: [0x31], qos: .atLeastOnce, packetID: 9)))
            await #expect(sender.read() == [0x40, 0x02, 0x00, 0x09], "PUBACK")
            let delivered = await client.socket.readPackets(window: 1)
            #expect(delivered.count == 1, "one copy: \(delivered)")
            let p = try #require(delivered.first)
            #expect(p[0] == 0x32, "QoS 1")
            let identifiers = Set(stride(from: 0, to: p.count - 1, by: 1).filter { p[$0] == 0x0B }.map { p[$0 + 1] })
            #expect(identifiers.isSuperset(of: [1, 2]), "both subscription identifiers: \(p)")
        }
    }

    /// The will after an abrupt close waits its Will Delay Interval, and a reconnect within it
    /// cancels it (§3.1.3.2.2).
    @Test func aDelayedWillWaitsAndAReconnectCancelsIt() async throws {
        try await Self.withGateway { _, port in
            let watcher = try Peer(port: port)
            await watcher.connect("watcher")
            await watcher.subscribe("wills/#")
            let will = { (topic: String) in
                Connect.Will(topic: topic, payload: Array("gone".utf8), properties: [.willDelayInterval(4)])
            }
            let leaving = try Peer(port: port)
            await leaving.connect("leaving", will: will("wills/leaving"), properties: [.sessionExpiryInterval(60)])
            let returning = try Peer(port: port)
            await returning.connect(
                "returning", will: will("wills/returning"), properties: [.sessionExpiryInterval(60)])
            let closedAt = Date()
            leaving.socket.reset()
            returning.socket.reset()
            try await Task.sleep(for: .milliseconds(300))
            try await Peer(port: port).connect("returning", cleanStart: false, properties: [.sessionExpiryInterval(60)])
            await #expect(
                watcher.read() == [0x30, 0x14, 0x00, 0x0D] + Array("wills/leaving".utf8) + [0x00] + Array("gone".utf8))
            #expect(Date().timeIntervalSince(closedAt) >= 3.9, "not before the delay")
            await #expect(watcher.read(3) == nil, "the resumed session's will is cancelled")
        }
    }

    /// A retained message is not sent to a later subscriber once its Message Expiry Interval has
    /// passed; before that it goes with the time left (§3.3.2.3.3).
    @Test func retainedMessagesExpire() async throws {
        try await Self.withGateway { _, port in
            let sender = try Peer(port: port)
            await sender.connect("retainer")
            sender.send(
                .publish(
                    Publish(topic: "exp/short", payload: [0x31], retain: true, properties: [.messageExpiryInterval(1)]))
            )
            sender.send(
                .publish(
                    Publish(topic: "exp/long", payload: [0x32], retain: true, properties: [.messageExpiryInterval(600)])
                ))
            try await Task.sleep(for: .milliseconds(2100))
            let late = try Peer(port: port)
            await late.connect("late")
            late.send(.subscribe(Subscribe(packetID: 1, requests: [.init(filter: "exp/#", qos: .atMostOnce)])))
            let packets = await late.socket.readPackets(window: 1)
            #expect(packets.first == [0x90, 0x04, 0x00, 0x01, 0x00, 0x00])
            #expect(packets.dropFirst().count == 1, "only the unexpired one: \(packets)")
            guard
                case .publish(let p)? = try? packets.dropFirst().first.map({ bytes -> MQTTPacket? in
                    var parser = MQTTParser(version: .v5, maximumPacketSize: .max)
                    var buffer = ByteBuffer(bytes: bytes)
                    return try parser.next(&buffer)
                }) ?? nil
            else {
                Issue.record("no retained PUBLISH")
                return
            }
            #expect(p.topic == "exp/long" && p.retain)
            #expect((p.properties.messageExpiryInterval ?? 0) <= 598, "sent with the time left")
        }
    }

    /// The server sends at most the client's Receive Maximum of unacknowledged QoS 1 messages
    /// (§4.9); each PUBACK lets the next one go.
    @Test func flowControlHonoursTheClientsReceiveMaximum() async throws {
        try await Self.withGateway { _, port in
            let slow = try Peer(port: port)
            await slow.connect("slow", properties: [.receiveMaximum(2)])
            await slow.subscribe("flow/#", qos: .atLeastOnce)
            let sender = try Peer(port: port)
            await sender.connect("flow-sender")
            for i in 1...5 {
                sender.send(
                    .publish(Publish(topic: "flow/x", payload: [UInt8(i)], qos: .atLeastOnce, packetID: UInt16(i))))
            }
            let first = await slow.socket.readPackets(window: 1)
            #expect(first.count == 2, "two in flight: \(first)")
            slow.send(.puback(Ack(packetID: 1)))
            let next = await slow.socket.readPackets(window: 1)
            #expect(next.count == 1 && next.first?.last == 3, "the third after one PUBACK: \(next)")
        }
    }

    /// The server assigns topic aliases up to the client's Topic Alias Maximum (§3.3.2.3.4): the
    /// first message of a topic carries name and alias, later ones the alias and an empty name.
    @Test func theServerAssignsTopicAliases() async throws {
        try await Self.withGateway { _, port in
            let client = try Peer(port: port)
            await client.connect("aliased", properties: [.topicAliasMaximum(1)])
            await client.subscribe("al/#")
            let sender = try Peer(port: port)
            await sender.connect("al-sender")
            for topic in ["al/a", "al/a", "al/b"] { sender.send(.publish(Publish(topic: topic, payload: [0x78]))) }
            await #expect(
                client.read() == [0x30, 0x0B, 0x00, 0x04] + Array("al/a".utf8) + [0x03, 0x23, 0x00, 0x01, 0x78])
            await #expect(client.read() == [0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01, 0x78])
            await #expect(
                client.read() == [0x30, 0x08, 0x00, 0x04] + Array("al/b".utf8) + [0x00, 0x78], "no alias left: the name"
            )
        }
    }

    /// The development listener's ACL: a denied filter is refused at SUBSCRIBE (0x80 in 3.1.1,
    /// 0x87 in 5.0), and what is published there reaches no wildcard subscriber.
    @Test func aDeniedTopicIsRefused() async throws {
        try await Self.withGateway({ $0.developmentDenied = ["test/nosubscribe"] }) { gateway, port in
            let old = try Peer(port: port, .v3_1_1)
            await old.connect("acl311")
            await #expect(old.subscribe("test/nosubscribe", qos: .atLeastOnce) == [0x90, 0x03, 0x00, 0x01, 0x80])
            let new = try Peer(port: port)
            await new.connect("acl5")
            await #expect(new.subscribe("test/nosubscribe") == [0x90, 0x04, 0x00, 0x01, 0x00, 0x87])
            await #expect(new.subscribe("test/#", id: 2) == [0x90, 0x04, 0x00, 0x02, 0x00, 0x00])
            new.send(.publish(Publish(topic: "test/nosubscribe", payload: [1], qos: .atLeastOnce, packetID: 3)))
            await #expect(new.read() == [0x40, 0x03, 0x00, 0x03, 0x87], "PUBACK 0x87")
            new.send(.publish(Publish(topic: "test/open", payload: [2])))
            await #expect(new.read()?.prefix(2) == [0x30, 0x0D], "an allowed topic still flows")
            #expect(gateway.counters.accessRefused >= 2)
        }
    }

    /// Shared subscriptions take turns (§4.8.2), and request/response properties reach the
    /// responder unchanged (§4.10).
    @Test func sharedSubscriptionsAndRequestResponse() async throws {
        try await Self.withGateway { _, port in
            let a = try Peer(port: port)
            await a.connect("worker-a")
            await a.subscribe("$share/g/jobs/#")
            let b = try Peer(port: port)
            await b.connect("worker-b")
            await b.subscribe("$share/g/jobs/#")
            let sender = try Peer(port: port)
            await sender.connect("requester")
            for i in 0..<4 {
                sender.send(
                    .publish(
                        Publish(
                            topic: "jobs/x", payload: [UInt8(i)],
                            properties: [.responseTopic("replies/requester"), .correlationData([0xC0, UInt8(i)])])))
            }
            let (got, other) = (await a.socket.readPackets(window: 1), await b.socket.readPackets(window: 1))
            #expect(got.count == 2 && other.count == 2, "\(got.count) and \(other.count)")
            guard case .publish(let p)? = a.readDecodedFrom(got.first) else {
                Issue.record("no PUBLISH")
                return
            }
            #expect(p.properties.all.contains(.responseTopic("replies/requester")))
            #expect(
                p.properties.all.contains { if case .correlationData(let d) = $0 { d.first == 0xC0 } else { false } })
        }
    }
}

extension PacketConformanceTests.Peer {
    func readDecodedFrom(_ bytes: [UInt8]?) -> MQTTPacket? {
        guard let bytes else { return nil }
        var parser = MQTTParser(version: version, maximumPacketSize: .max)
        var buffer = ByteBuffer(bytes: bytes)
        return try? parser.next(&buffer)
    }
}

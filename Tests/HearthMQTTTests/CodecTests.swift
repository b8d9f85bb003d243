import HearthMQTT
import NIOCore
import Testing

/// Encodes and decodes one packet through a parser in the given state.
func roundTrip(_ packet: MQTTPacket, _ version: MQTTVersion) throws -> MQTTPacket? {
    var buffer = ByteBuffer()
    packet.write(version: version, to: &buffer)
    var parser = MQTTParser(version: { if case .connect = packet { nil } else { version } }())
    let decoded = try parser.next(&buffer)
    #expect(buffer.readableBytes == 0)
    return decoded
}

/// Parses raw bytes with a parser that has seen CONNECT for `version` (or none, for nil).
func parse(_ bytes: [UInt8], version: MQTTVersion? = .v5, max: Int = 1024) throws(MQTTProtocolError) -> MQTTPacket? {
    var parser = MQTTParser(version: version, maximumPacketSize: max)
    var buffer = ByteBuffer(bytes: bytes)
    return try parser.next(&buffer)
}

func reason(_ bytes: [UInt8], version: MQTTVersion? = .v5, max: Int = 1024) -> ReasonCode? {
    do {
        _ = try parse(bytes, version: version, max: max)
        return nil
    } catch { return error.reason }
}

let samplePackets: [MQTTPacket] = [
    .connect(
        Connect(
            version: .v5, clientID: "dev-1", cleanStart: false, keepAlive: 30,
            will: .init(
                topic: "d/1/status", payload: Array("gone".utf8), qos: .atLeastOnce, retain: true,
                properties: [.willDelayInterval(5), .contentType("text/plain")]),
            username: "u", password: [1, 2, 3],
            properties: [
                .sessionExpiryInterval(3600), .receiveMaximum(20), .maximumPacketSize(65536), .topicAliasMaximum(8),
                .userProperty("k", "v"),
            ])),
    .connect(Connect(version: .v3_1_1, clientID: "", cleanStart: true, keepAlive: 0)),
    .connack(
        ConnAck(
            sessionPresent: true, reason: .success,
            properties: [
                .assignedClientIdentifier("auto-1"), .serverKeepAlive(45), .maximumQoS(1), .retainAvailable(1),
            ])),
    .publish(
        Publish(
            topic: "a/b", payload: Array("{\"t\":21.5}".utf8), qos: .atLeastOnce, retain: true, dup: true, packetID: 7,
            properties: [
                .payloadFormatIndicator(1), .messageExpiryInterval(60), .responseTopic("r/1"),
                .correlationData([9, 9]), .userProperty("a", "b"), .userProperty("a", "c"),
            ])),
    .publish(Publish(topic: "x", payload: [], qos: .atMostOnce)),
    .publish(Publish(topic: "q2", payload: [0, 255], qos: .exactlyOnce, packetID: 65535)),
    .puback(Ack(packetID: 7)),
    .puback(Ack(packetID: 8, reason: .payloadFormatInvalid, properties: [.reasonString("bad payload")])),
    .pubrec(Ack(packetID: 9)),
    .pubrel(Ack(packetID: 9)),
    .pubcomp(Ack(packetID: 9)),
    .subscribe(
        Subscribe(
            packetID: 3,
            requests: [
                .init(filter: "a/+/c", qos: .exactlyOnce, noLocal: true, retainAsPublished: true, retainHandling: 2),
                .init(filter: "$share/g/x/#", qos: .atMostOnce),
            ], properties: [.subscriptionIdentifier(12)])),
    .suback(SubAck(packetID: 3, reasons: [.grantedQoS2, .notAuthorized])),
    .unsubscribe(Unsubscribe(packetID: 4, filters: ["a/+/c", "#"])),
    .unsuback(SubAck(packetID: 4, reasons: [.success, .noSubscriptionExisted])),
    .pingreq,
    .pingresp,
    .disconnect(
        ReasonPacket(reason: .serverBusy, properties: [.reasonString("try later"), .userProperty("retry-after", "30")])),
    .disconnect(ReasonPacket()),
    .auth(
        ReasonPacket(
            reason: .continueAuthentication, properties: [.authenticationMethod("SCRAM"), .authenticationData([1])])),
]

@Suite struct CodecRoundTripTests {
    /// Every sample packet, written and read back in MQTT 5.0, but a 3.1.1 CONNECT in its own
    /// version (which the CONNECT itself names).
    @Test(arguments: samplePackets)
    func everyPacketRoundTrips(_ packet: MQTTPacket) throws {
        let version: MQTTVersion = if case .connect(let c) = packet { c.version } else { .v5 }
        #expect(try roundTrip(packet, version) == packet)
    }

    @Test func packetsRoundTripInMQTT311WithoutV5Fields() throws {
        let publish = Publish(topic: "a/b", payload: [1, 2], qos: .atLeastOnce, packetID: 5)
        #expect(try roundTrip(.publish(publish), .v3_1_1) == .publish(publish))
        #expect(
            try roundTrip(.connect(Connect(version: .v3_1_1, clientID: "c", username: "u", password: [1])), .v3_1_1)
                == .connect(Connect(version: .v3_1_1, clientID: "c", username: "u", password: [1])))
        #expect(
            try roundTrip(.suback(SubAck(packetID: 1, reasons: [.grantedQoS1, .unspecifiedError])), .v3_1_1)
                == .suback(SubAck(packetID: 1, reasons: [.grantedQoS1, .unspecifiedError])))
        #expect(
            try roundTrip(.unsuback(SubAck(packetID: 1, reasons: [])), .v3_1_1)
                == .unsuback(SubAck(packetID: 1, reasons: [])))
        #expect(try roundTrip(.disconnect(ReasonPacket()), .v3_1_1) == .disconnect(ReasonPacket()))
        // Properties are not written for 3.1.1.
        var b = ByteBuffer()
        MQTTPacket.puback(Ack(packetID: 1, reason: .notAuthorized, properties: [.reasonString("x")])).write(
            version: .v3_1_1, to: &b)
        #expect(Array(b.readableBytesView) == [0x40, 0x02, 0x00, 0x01])
    }

    @Test func aStreamYieldsPacketsOneByOneAndWaitsForMore() throws {
        var stream = ByteBuffer()
        MQTTPacket.connect(Connect(version: .v5, clientID: "c")).write(version: .v5, to: &stream)
        MQTTPacket.publish(Publish(topic: "t", payload: Array(repeating: 7, count: 300))).write(
            version: .v5, to: &stream)
        MQTTPacket.pingreq.write(version: .v5, to: &stream)
        let bytes = Array(stream.readableBytesView)
        var parser = MQTTParser()
        var decoded: [MQTTPacket] = []
        var buffer = ByteBuffer()
        for byte in bytes {  // one byte at a time: the worst fragmentation
            buffer.writeInteger(byte)
            while let p = try parser.next(&buffer) { decoded.append(p) }
        }
        #expect(decoded.count == 3)
        #expect(parser.version == .v5)
        #expect(decoded.last == .pingreq)
    }
}

@Suite struct MalformedPacketTests {
    @Test func theRemainingLengthIsBoundedBeforeAnyBodyArrives() throws {
        // 5-byte variable byte integer.
        #expect(reason([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]) == .malformedPacket)
        // 268 MB claimed, only the header present: refused at once, nothing waited for or allocated.
        #expect(reason([0x30, 0xFF, 0xFF, 0xFF, 0x7F]) == .packetTooLarge)
        #expect(reason([0x30, 0x80, 0x08], max: 1024) == .packetTooLarge)
        // Under the limit but incomplete: wait.
        #expect(try parse([0x30, 0x0A, 0x00]) == nil)
    }

    @Test(arguments: [
        ("string longer than the packet", [0x30, 0x04, 0x00, 0x10, 0x61, 0x62] as [UInt8], ReasonCode.malformedPacket),
        ("invalid UTF-8 topic", [0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, 0x00], .malformedPacket),
        ("U+0000 in a topic", [0x30, 0x05, 0x00, 0x02, 0x61, 0x00, 0x00], .malformedPacket),
        ("wildcard in a topic name", [0x30, 0x05, 0x00, 0x02, 0x61, 0x23, 0x00], .topicNameInvalid),
        ("empty topic without alias", [0x30, 0x03, 0x00, 0x00, 0x00], .protocolError),
        ("PUBLISH QoS 3", [0x36, 0x06, 0x00, 0x01, 0x61, 0x00, 0x01, 0x00], .malformedPacket),
        ("DUP on QoS 0", [0x38, 0x04, 0x00, 0x01, 0x61, 0x00], .malformedPacket),
        ("packet id 0", [0x32, 0x06, 0x00, 0x01, 0x61, 0x00, 0x00, 0x00], .malformedPacket),
        ("SUBSCRIBE reserved flags", [0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x00], .malformedPacket),
        ("PINGREQ reserved flags", [0xC1, 0x00], .malformedPacket),
        ("PINGREQ with a body", [0xC0, 0x01, 0x00], .malformedPacket),
        ("packet type 0", [0x00, 0x00], .malformedPacket),
        ("unknown property id", [0x30, 0x06, 0x00, 0x01, 0x61, 0x02, 0x7F, 0x00], .malformedPacket),
        ("duplicate property", [0x30, 0x08, 0x00, 0x01, 0x61, 0x04, 0x01, 0x00, 0x01, 0x01], .protocolError),
        (
            "property in the wrong packet", [0x30, 0x09, 0x00, 0x01, 0x61, 0x05, 0x11, 0x00, 0x00, 0x00, 0x01],
            .protocolError
        ),
        ("property value out of range", [0x30, 0x06, 0x00, 0x01, 0x61, 0x02, 0x01, 0x02], .protocolError),
        ("topic alias 0", [0x30, 0x07, 0x00, 0x01, 0x61, 0x03, 0x23, 0x00, 0x00], .protocolError),
        ("property list longer than the packet", [0x30, 0x05, 0x00, 0x01, 0x61, 0x09, 0x01], .malformedPacket),
        ("SUBSCRIBE without filters", [0x82, 0x03, 0x00, 0x01, 0x00], .protocolError),
        ("SUBSCRIBE bad filter", [0x82, 0x08, 0x00, 0x01, 0x00, 0x00, 0x02, 0x61, 0x23, 0x00], .malformedPacket),
        ("SUBSCRIBE QoS 3", [0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 0x61, 0x03], .malformedPacket),
        ("SUBSCRIBE reserved option bits", [0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 0x61, 0xC0], .malformedPacket),
        ("retain handling 3", [0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 0x61, 0x30], .malformedPacket),
        ("trailing bytes", [0xE0, 0x03, 0x00, 0x00, 0x99], .malformedPacket),
        ("second CONNECT", [0x10, 0x0A, 0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, 0x05, 0x02, 0x00, 0x3C], .protocolError),
    ])
    func malformedPacketsGetTheSpecsReasonCode(_ name: String, _ bytes: [UInt8], _ expected: ReasonCode) {
        #expect(reason(bytes) == expected, "\(name)")
    }

    @Test func theFirstPacketMustBeAValidCONNECT() {
        #expect(reason([0xC0, 0x00], version: nil) == .protocolError, "PINGREQ before CONNECT")
        #expect(reason([0x30, 0x03, 0x00, 0x01, 0x61], version: nil) == .protocolError, "PUBLISH before CONNECT")
        let connect: (UInt8, UInt8) -> [UInt8] = { level, flags in
            [0x10, 0x0D, 0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, level, flags, 0x00, 0x3C, 0x00, 0x00, 0x00]
        }
        #expect(reason(connect(3, 0x02), version: nil) == .unsupportedProtocolVersion)
        #expect(reason(connect(5, 0x03), version: nil) == .malformedPacket, "reserved connect flag")
        #expect(reason(connect(5, 0x18), version: nil) == .malformedPacket, "will QoS without a will")
        #expect(reason(connect(5, 0x1C), version: nil) == .malformedPacket, "will QoS 3")
        #expect(
            reason(
                [0x10, 0x0F, 0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, 0x04, 0x42, 0x00, 0x3C, 0x00, 0x00, 0x00, 0x01, 0x78],
                version: nil) == .malformedPacket, "3.1.1 password without user name")
        #expect(
            reason([0x10, 0x0A, 0x00, 0x04, 0x4D, 0x51, 0x49, 0x73, 0x04, 0x02, 0x00, 0x3C], version: nil)
                == .unsupportedProtocolVersion)
    }

    @Test func authIsNotAnMQTT311Packet() {
        #expect(reason([0xF0, 0x00], version: .v3_1_1) == .malformedPacket)
        #expect(reason([0xF0, 0x00], version: .v5) == nil)
    }
}

@Suite struct TopicTests {
    @Test func filterRules() {
        for good in ["#", "+", "a/b", "a/+/c", "a/#", "+/+", "/", "$SYS/#", "$share/g/a/+", "a//b"] {
            #expect(Topic.isValidFilter(good), "\(good)")
        }
        for bad in ["", "a#", "a/#/b", "a+/b", "a/b+", "#/a", "$share/g", "$share//a", "$share/g+/a", "$share/g/"] {
            #expect(!Topic.isValidFilter(bad), "\(bad)")
        }
        #expect(Topic.isValidName("a/b"))
        #expect(!Topic.isValidName("a/+"))
        #expect(!Topic.isValidName(""))
    }
}

/// The one framing loop: however the bytes are split across reads, the same packets come out in
/// the same order, and only an incomplete tail is kept.
@Test(arguments: [1, 2, 3, 7, 64, 100_000])
func theFramerYieldsTheSamePacketsHoweverTheBytesAreSplit(_ chunk: Int) throws {
    let packets: [MQTTPacket] = (1...20).map {
        .publish(
            Publish(
                topic: "a/\($0)", payload: Array(repeating: UInt8($0), count: $0 * 13), qos: .atLeastOnce,
                packetID: UInt16($0)))
    }
    var all = ByteBuffer()
    for packet in packets { packet.write(version: .v5, to: &all) }
    let bytes = Array(all.readableBytesView)
    var framer = MQTTFramer(MQTTParser(version: .v5))
    var decoded: [MQTTPacket] = []
    for start in stride(from: 0, to: bytes.count, by: chunk) {
        var read = ByteBuffer(bytes: bytes[start..<min(start + chunk, bytes.count)])
        try framer.decode(&read) { packet in
            decoded.append(packet)
            return true
        }
        #expect(read.readableBytes == 0, "the read is consumed")
    }
    #expect(decoded == packets)
    #expect(framer.bufferedBytes == 0)
}

import NIOCore

/// Decodes MQTT packets from a byte stream, one connection's worth of state: the protocol version
/// (learned from CONNECT, or given for a client) and the maximum packet size.
///
/// The remaining length is checked against the maximum before a single byte of the body is waited
/// for or allocated; the variable-length integer is at most four bytes; every inner length is
/// checked against the bytes that remain. A malformed packet throws with the reason code MQTT 5.0
/// prescribes; the connection is then closed (after a DISCONNECT for 5.0).
public struct MQTTParser: Sendable {
    public private(set) var version: MQTTVersion?
    /// The largest whole packet accepted, fixed header included.
    public var maximumPacketSize: Int

    /// - Parameters:
    ///   - version: nil on the server side: the first packet must then be CONNECT.
    ///   - maximumPacketSize: 128 KiB of payload plus headers by default (AWS IoT's message size).
    public init(version: MQTTVersion? = nil, maximumPacketSize: Int = 128 * 1024 + 1024) {
        self.version = version
        self.maximumPacketSize = maximumPacketSize
    }

    /// The next complete packet, consuming its bytes; nil if `buffer` does not hold one yet.
    public mutating func next(_ buffer: inout ByteBuffer) throws(MQTTProtocolError) -> MQTTPacket? {
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
        var remaining = 0
        var lengthBytes = 0
        while true {
            guard lengthBytes < 4 else { throw .malformed("the remaining length is longer than 4 bytes") }
            guard let b = buffer.getInteger(at: buffer.readerIndex + 1 + lengthBytes, as: UInt8.self) else {
                return nil
            }
            remaining |= Int(b & 0x7F) << (7 * lengthBytes)
            lengthBytes += 1
            if b & 0x80 == 0 { break }
        }
        let total = 1 + lengthBytes + remaining
        guard total <= maximumPacketSize else {
            throw MQTTProtocolError(
                .packetTooLarge, "a \(total)-byte packet exceeds the maximum of \(maximumPacketSize)")
        }
        guard buffer.readableBytes >= total else { return nil }
        buffer.moveReaderIndex(forwardBy: 1 + lengthBytes)
        let body = buffer.readSlice(length: remaining)!
        let packet = try decode(type: first >> 4, flags: first & 0x0F, body: PacketReader(buffer: body))
        if case .connect(let c) = packet { version = c.version }
        return packet
    }

    func decode(type: UInt8, flags: UInt8, body: PacketReader) throws(MQTTProtocolError) -> MQTTPacket {
        var r = body
        if type == 1 {
            guard version == nil else { throw .protocolError("a second CONNECT") }
            try Self.requireFlags(flags, 0, "CONNECT")
            return .connect(try Self.connect(&r))
        }
        guard let version else { throw .protocolError("the first packet must be CONNECT") }
        let v5 = version == .v5
        let packet: MQTTPacket
        switch type {
        case 2:
            try Self.requireFlags(flags, 0, "CONNACK")
            let ackFlags = try r.byte("CONNACK flags")
            guard ackFlags & 0xFE == 0 else { throw .malformed("reserved CONNACK flags are set") }
            let reason = ReasonCode(rawValue: try r.byte("CONNACK reason code"))
            packet = .connack(
                ConnAck(
                    sessionPresent: ackFlags & 1 == 1, reason: reason,
                    properties: v5 ? try Properties.read(from: &r, context: .connack) : []))
        case 3:
            packet = .publish(try Self.publish(&r, flags: flags, v5: v5))
        case 4, 5, 6, 7:
            try Self.requireFlags(flags, type == 6 ? 2 : 0, "acknowledgement")
            let context: PropertyContext = [4: .puback, 5: .pubrec, 6: .pubrel, 7: .pubcomp][type]!
            let ack = try Self.ack(&r, v5: v5, context: context)
            packet = [4: MQTTPacket.puback(ack), 5: .pubrec(ack), 6: .pubrel(ack), 7: .pubcomp(ack)][type]!
        case 8:
            try Self.requireFlags(flags, 2, "SUBSCRIBE")
            packet = .subscribe(try Self.subscribe(&r, v5: v5))
        case 9, 11:
            try Self.requireFlags(flags, 0, "SUBACK")
            let id = try Self.packetID(&r)
            let properties = v5 ? try Properties.read(from: &r, context: type == 9 ? .suback : .unsuback) : []
            let reasons = r.rest().map(ReasonCode.init(rawValue:))
            if type == 9 || v5 { guard !reasons.isEmpty else { throw .protocolError("no reason codes") } }
            packet =
                type == 9
                ? .suback(SubAck(packetID: id, reasons: reasons, properties: properties))
                : .unsuback(SubAck(packetID: id, reasons: reasons, properties: properties))
        case 10:
            try Self.requireFlags(flags, 2, "UNSUBSCRIBE")
            let id = try Self.packetID(&r)
            let properties = v5 ? try Properties.read(from: &r, context: .unsubscribe) : []
            var filters: [String] = []
            while !r.isEmpty {
                let filter = try r.string("topic filter")
                guard Topic.isValidFilter(filter) else {
                    throw .malformed("'\(filter.prefix(64))' is not a valid topic filter")
                }
                filters.append(filter)
            }
            guard !filters.isEmpty else { throw .protocolError("UNSUBSCRIBE with no topic filter") }
            packet = .unsubscribe(Unsubscribe(packetID: id, filters: filters, properties: properties))
        case 12, 13:
            try Self.requireFlags(flags, 0, "PING")
            packet = type == 12 ? .pingreq : .pingresp
        case 14, 15:
            try Self.requireFlags(flags, 0, "DISCONNECT/AUTH")
            guard v5 || type == 14 else { throw .malformed("AUTH is not an MQTT 3.1.1 packet") }
            var p = ReasonPacket()
            if v5, !r.isEmpty {
                p.reason = ReasonCode(rawValue: try r.byte("reason code"))
                if !r.isEmpty {
                    p.properties = try Properties.read(from: &r, context: type == 14 ? .disconnect : .auth)
                }
            }
            packet = type == 14 ? .disconnect(p) : .auth(p)
        default:
            throw .malformed("packet type 0 is reserved")
        }
        guard r.isEmpty else { throw .malformed("\(r.remaining) unexpected bytes at the end of the packet") }
        return packet
    }

    static func requireFlags(_ flags: UInt8, _ expected: UInt8, _ what: String) throws(MQTTProtocolError) {
        guard flags == expected else { throw .malformed("reserved fixed-header flags of \(what) are wrong") }
    }

    static func packetID(_ r: inout PacketReader) throws(MQTTProtocolError) -> UInt16 {
        let id = try r.uint16("packet identifier")
        guard id != 0 else { throw .malformed("packet identifier 0") }
        return id
    }

    static func connect(_ r: inout PacketReader) throws(MQTTProtocolError) -> Connect {
        let name = try r.string("protocol name")
        let level = try r.byte("protocol level")
        guard name == "MQTT", let version = MQTTVersion(rawValue: level) else {
            throw MQTTProtocolError(
                .unsupportedProtocolVersion, "protocol \(name.prefix(16)) level \(level) is not MQTT 3.1.1 or 5.0")
        }
        let flags = try r.byte("connect flags")
        guard flags & 0x01 == 0 else { throw .malformed("the reserved connect flag is set") }
        let hasWill = flags & 0x04 != 0
        let willQoSBits = (flags >> 3) & 0x03
        let willRetain = flags & 0x20 != 0
        let hasPassword = flags & 0x40 != 0
        let hasUsername = flags & 0x80 != 0
        guard let willQoS = QoS(rawValue: willQoSBits) else { throw .malformed("will QoS 3") }
        if !hasWill {
            guard willQoSBits == 0, !willRetain else { throw .malformed("will QoS or retain without a will") }
        }
        if version == .v3_1_1 {
            guard hasUsername || !hasPassword else { throw .malformed("a password without a user name") }
        }
        let keepAlive = try r.uint16("keep alive")
        let properties = version == .v5 ? try Properties.read(from: &r, context: .connect) : []
        let clientID = try r.string("client identifier")
        var will: Connect.Will?
        if hasWill {
            let willProperties = version == .v5 ? try Properties.read(from: &r, context: .will) : []
            let topic = try r.string("will topic")
            guard Topic.isValidName(topic) else { throw .malformed("the will topic is not a valid topic name") }
            will = Connect.Will(
                topic: topic, payload: try r.binary("will payload"), qos: willQoS, retain: willRetain,
                properties: willProperties)
        }
        let username = hasUsername ? try r.string("user name") : nil
        let password = hasPassword ? try r.binary("password") : nil
        return Connect(
            version: version, clientID: clientID, cleanStart: flags & 0x02 != 0, keepAlive: keepAlive, will: will,
            username: username, password: password, properties: properties)
    }

    static func publish(_ r: inout PacketReader, flags: UInt8, v5: Bool) throws(MQTTProtocolError) -> Publish {
        guard let qos = QoS(rawValue: (flags >> 1) & 0x03) else { throw .malformed("PUBLISH with QoS 3") }
        let dup = flags & 0x08 != 0
        guard qos != .atMostOnce || !dup else { throw .malformed("DUP set on a QoS 0 PUBLISH") }
        let topic = try r.string("topic name")
        let id = qos == .atMostOnce ? nil : try packetID(&r)
        let properties = v5 ? try Properties.read(from: &r, context: .publish) : []
        if topic.isEmpty {
            guard v5, properties.topicAlias != nil else {
                throw .protocolError("an empty topic name without a topic alias")
            }
        } else if !Topic.isValidName(topic) {
            throw MQTTProtocolError(v5 ? .topicNameInvalid : .malformedPacket, "a topic name cannot contain wildcards")
        }
        return Publish(
            topic: topic, payload: r.rest(), qos: qos, retain: flags & 0x01 != 0, dup: dup, packetID: id,
            properties: properties)
    }

    static func ack(_ r: inout PacketReader, v5: Bool, context: PropertyContext) throws(MQTTProtocolError) -> Ack {
        var ack = Ack(packetID: try packetID(&r))
        if v5, !r.isEmpty {
            ack.reason = ReasonCode(rawValue: try r.byte("reason code"))
            if !r.isEmpty { ack.properties = try Properties.read(from: &r, context: context) }
        }
        return ack
    }

    static func subscribe(_ r: inout PacketReader, v5: Bool) throws(MQTTProtocolError) -> Subscribe {
        let id = try packetID(&r)
        let properties = v5 ? try Properties.read(from: &r, context: .subscribe) : []
        var requests: [Subscribe.Request] = []
        while !r.isEmpty {
            let filter = try r.string("topic filter")
            guard Topic.isValidFilter(filter) else {
                throw .malformed("'\(filter.prefix(64))' is not a valid topic filter")
            }
            let options = try r.byte("subscription options")
            guard options & (v5 ? 0xC0 : 0xFC) == 0 else {
                throw .malformed("reserved subscription option bits are set")
            }
            guard let qos = QoS(rawValue: options & 0x03) else { throw .malformed("subscription QoS 3") }
            let retainHandling = (options >> 4) & 0x03
            guard retainHandling != 3 else { throw .malformed("retain handling 3") }
            let noLocal = options & 0x04 != 0
            if noLocal, filter.hasPrefix("$share/") { throw .protocolError("No Local on a shared subscription") }
            requests.append(
                .init(
                    filter: filter, qos: qos, noLocal: noLocal, retainAsPublished: options & 0x08 != 0,
                    retainHandling: retainHandling))
        }
        guard !requests.isEmpty else { throw .protocolError("SUBSCRIBE with no topic filter") }
        return Subscribe(packetID: id, requests: requests, properties: properties)
    }
}

/// The one framing loop every MQTT endpoint here uses (the gateway, the device SDK, the bench
/// client): packets are decoded straight from each read's buffer, and only an incomplete tail is
/// kept for the next read.
public struct MQTTFramer: Sendable {
    public private(set) var parser: MQTTParser
    private var pending: ByteBuffer?

    public init(_ parser: MQTTParser) { self.parser = parser }

    /// The version learned from CONNECT (server side) or given (client side).
    public var version: MQTTVersion? { parser.version }
    /// Bytes kept from earlier reads, waiting for the rest of their packet.
    public var bufferedBytes: Int { pending?.readableBytes ?? 0 }

    /// Hands every complete packet of what was kept plus `incoming` to `handle`, in order, until
    /// it returns false; keeps an incomplete tail. Throws what the parser refuses (the connection
    /// is then closed).
    public mutating func decode(
        _ incoming: inout ByteBuffer, _ handle: (MQTTPacket) -> Bool
    ) throws(MQTTProtocolError) {
        var buffer: ByteBuffer
        if var kept = pending {
            kept.writeBuffer(&incoming)
            buffer = kept
        } else {
            buffer = incoming
            incoming.moveReaderIndex(to: incoming.writerIndex)
        }
        pending = nil
        defer {
            if buffer.readableBytes > 0 {
                if buffer.readerIndex > 4096 { buffer.discardReadBytes() }
                pending = buffer
            }
        }
        while let packet = try parser.next(&buffer) {
            guard handle(packet) else { return }
        }
    }
}

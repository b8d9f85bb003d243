import NIOCore

extension MQTTPacket {
    /// Writes this packet for a peer speaking `version`. Fields the version lacks (properties and
    /// reason codes in 3.1.1) are left out.
    public func write(version: MQTTVersion, to buffer: inout ByteBuffer) {
        let v5 = version == .v5
        var body = ByteBuffer()
        var flags: UInt8 = 0
        switch self {
        case .connect(let c):
            body.writeMQTTString("MQTT")
            body.writeInteger(c.version.rawValue)
            var f: UInt8 = c.cleanStart ? 0x02 : 0
            if let will = c.will { f |= 0x04 | will.qos.rawValue << 3 | (will.retain ? 0x20 : 0) }
            if c.password != nil { f |= 0x40 }
            if c.username != nil { f |= 0x80 }
            body.writeInteger(f)
            body.writeInteger(c.keepAlive, endianness: .big)
            if c.version == .v5 { c.properties.write(to: &body) }
            body.writeMQTTString(c.clientID)
            if let will = c.will {
                if c.version == .v5 { will.properties.write(to: &body) }
                body.writeMQTTString(will.topic)
                body.writeMQTTBinary(will.payload)
            }
            if let username = c.username { body.writeMQTTString(username) }
            if let password = c.password { body.writeMQTTBinary(password) }
        case .connack(let a):
            body.writeInteger(UInt8(a.sessionPresent ? 1 : 0))
            body.writeInteger(v5 ? a.reason.rawValue : a.reason.connectReturnCode311)
            if v5 { a.properties.write(to: &body) }
        case .publish(let p):
            flags = (p.dup ? 0x08 : 0) | p.qos.rawValue << 1 | (p.retain ? 0x01 : 0)
            body.writeMQTTString(p.topic)
            if p.qos != .atMostOnce { body.writeInteger(p.packetID ?? 0, endianness: .big) }
            if v5 { p.properties.write(to: &body) }
            body.writeBytes(p.payload)
        case .puback(let a), .pubrec(let a), .pubrel(let a), .pubcomp(let a):
            if case .pubrel = self { flags = 0x02 }
            body.writeInteger(a.packetID, endianness: .big)
            if v5, a.reason != .success || !a.properties.isEmpty {
                body.writeInteger(a.reason.rawValue)
                if !a.properties.isEmpty { a.properties.write(to: &body) }
            }
        case .subscribe(let s):
            flags = 0x02
            body.writeInteger(s.packetID, endianness: .big)
            if v5 { s.properties.write(to: &body) }
            for r in s.requests {
                body.writeMQTTString(r.filter)
                var o = r.qos.rawValue
                if v5 { o |= (r.noLocal ? 0x04 : 0) | (r.retainAsPublished ? 0x08 : 0) | r.retainHandling << 4 }
                body.writeInteger(o)
            }
        case .suback(let a), .unsuback(let a):
            body.writeInteger(a.packetID, endianness: .big)
            if v5 { a.properties.write(to: &body) }
            if case .suback = self {
                for reason in a.reasons { body.writeInteger(v5 || reason.rawValue <= 2 ? reason.rawValue : 0x80) }
            } else if v5 {
                for reason in a.reasons { body.writeInteger(reason.rawValue) }
            }
        case .unsubscribe(let u):
            flags = 0x02
            body.writeInteger(u.packetID, endianness: .big)
            if v5 { u.properties.write(to: &body) }
            for filter in u.filters { body.writeMQTTString(filter) }
        case .pingreq, .pingresp:
            break
        case .disconnect(let p), .auth(let p):
            if v5, p.reason != .success || !p.properties.isEmpty {
                body.writeInteger(p.reason.rawValue)
                if !p.properties.isEmpty { p.properties.write(to: &body) }
            }
        }
        buffer.writeInteger(typeCode << 4 | flags)
        buffer.writeVarint(body.readableBytes)
        buffer.writeBuffer(&body)
    }
}

extension ReasonCode {
    /// The MQTT 3.1.1 CONNACK return code for a 5.0 reason code (3.1.1 §3.2.2.3): 1 unacceptable
    /// protocol version, 2 identifier rejected, 3 server unavailable, 4 bad user name or password,
    /// 5 not authorized. Values 0…5 pass through.
    public var connectReturnCode311: UInt8 {
        switch self {
        case .success: 0
        case .unsupportedProtocolVersion: 1
        case .clientIdentifierNotValid: 2
        case .serverUnavailable, .serverBusy, .serverShuttingDown, .useAnotherServer, .serverMoved,
            .connectionRateExceeded, .quotaExceeded:
            3
        case .badUserNameOrPassword: 4
        case .notAuthorized, .banned: 5
        default: rawValue <= 5 ? rawValue : 3
        }
    }

    /// The 5.0 reason code a client reads into a 3.1.1 CONNACK return code (1…5).
    public init(connectReturnCode311 code: UInt8) {
        switch code {
        case 0: self = .success
        case 1: self = .unsupportedProtocolVersion
        case 2: self = .clientIdentifierNotValid
        case 3: self = .serverUnavailable
        case 4: self = .badUserNameOrPassword
        case 5: self = .notAuthorized
        default: self = .unspecifiedError
        }
    }
}

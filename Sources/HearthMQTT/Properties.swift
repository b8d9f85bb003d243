import NIOCore

/// One MQTT 5.0 property (§2.2.2.2).
public enum Property: Equatable, Sendable {
    case payloadFormatIndicator(UInt8)
    case messageExpiryInterval(UInt32)
    case contentType(String)
    case responseTopic(String)
    case correlationData([UInt8])
    case subscriptionIdentifier(Int)
    case sessionExpiryInterval(UInt32)
    case assignedClientIdentifier(String)
    case serverKeepAlive(UInt16)
    case authenticationMethod(String)
    case authenticationData([UInt8])
    case requestProblemInformation(UInt8)
    case willDelayInterval(UInt32)
    case requestResponseInformation(UInt8)
    case responseInformation(String)
    case serverReference(String)
    case reasonString(String)
    case receiveMaximum(UInt16)
    case topicAliasMaximum(UInt16)
    case topicAlias(UInt16)
    case maximumQoS(UInt8)
    case retainAvailable(UInt8)
    case userProperty(String, String)
    case maximumPacketSize(UInt32)
    case wildcardSubscriptionAvailable(UInt8)
    case subscriptionIdentifierAvailable(UInt8)
    case sharedSubscriptionAvailable(UInt8)

    public var identifier: UInt8 {
        switch self {
        case .payloadFormatIndicator: 0x01
        case .messageExpiryInterval: 0x02
        case .contentType: 0x03
        case .responseTopic: 0x08
        case .correlationData: 0x09
        case .subscriptionIdentifier: 0x0B
        case .sessionExpiryInterval: 0x11
        case .assignedClientIdentifier: 0x12
        case .serverKeepAlive: 0x13
        case .authenticationMethod: 0x15
        case .authenticationData: 0x16
        case .requestProblemInformation: 0x17
        case .willDelayInterval: 0x18
        case .requestResponseInformation: 0x19
        case .responseInformation: 0x1A
        case .serverReference: 0x1C
        case .reasonString: 0x1F
        case .receiveMaximum: 0x21
        case .topicAliasMaximum: 0x22
        case .topicAlias: 0x23
        case .maximumQoS: 0x24
        case .retainAvailable: 0x25
        case .userProperty: 0x26
        case .maximumPacketSize: 0x27
        case .wildcardSubscriptionAvailable: 0x28
        case .subscriptionIdentifierAvailable: 0x29
        case .sharedSubscriptionAvailable: 0x2A
        }
    }
}

/// Where a property may appear; a property elsewhere is a protocol error.
public enum PropertyContext: Sendable {
    case connect, connack, publish, will, puback, pubrec, pubrel, pubcomp, subscribe, suback, unsubscribe, unsuback,
        disconnect, auth

    var allowed: Set<UInt8> {
        let acks: Set<UInt8> = [0x1F, 0x26]
        switch self {
        case .connect: return [0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27]
        case .connack:
            return [
                0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A,
            ]
        case .publish: return [0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26]
        case .will: return [0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26]
        case .puback, .pubrec, .pubrel, .pubcomp, .suback, .unsuback: return acks
        case .subscribe: return [0x0B, 0x26]
        case .unsubscribe: return [0x26]
        case .disconnect: return [0x11, 0x1C, 0x1F, 0x26]
        case .auth: return [0x15, 0x16, 0x1F, 0x26]
        }
    }
}

/// A packet's property list, in order.
public struct Properties: Equatable, Sendable, ExpressibleByArrayLiteral {
    public var all: [Property]

    public init(_ all: [Property] = []) { self.all = all }
    public init(arrayLiteral elements: Property...) { all = elements }

    public var isEmpty: Bool { all.isEmpty }

    public var userProperties: [(String, String)] {
        all.compactMap { if case .userProperty(let k, let v) = $0 { (k, v) } else { nil } }
    }
    public var sessionExpiryInterval: UInt32? {
        first { if case .sessionExpiryInterval(let v) = $0 { v } else { nil } }
    }
    public var serverKeepAlive: UInt16? { first { if case .serverKeepAlive(let v) = $0 { v } else { nil } } }
    public var receiveMaximum: UInt16? { first { if case .receiveMaximum(let v) = $0 { v } else { nil } } }
    public var maximumPacketSize: UInt32? { first { if case .maximumPacketSize(let v) = $0 { v } else { nil } } }
    public var topicAliasMaximum: UInt16? { first { if case .topicAliasMaximum(let v) = $0 { v } else { nil } } }
    public var topicAlias: UInt16? { first { if case .topicAlias(let v) = $0 { v } else { nil } } }
    public var messageExpiryInterval: UInt32? {
        first { if case .messageExpiryInterval(let v) = $0 { v } else { nil } }
    }
    public var payloadFormatIndicator: UInt8? {
        first { if case .payloadFormatIndicator(let v) = $0 { v } else { nil } }
    }
    public var responseTopic: String? { first { if case .responseTopic(let v) = $0 { v } else { nil } } }
    public var correlationData: [UInt8]? { first { if case .correlationData(let v) = $0 { v } else { nil } } }
    public var willDelayInterval: UInt32? { first { if case .willDelayInterval(let v) = $0 { v } else { nil } } }
    public var reasonString: String? { first { if case .reasonString(let v) = $0 { v } else { nil } } }
    public var subscriptionIdentifiers: [Int] {
        all.compactMap { if case .subscriptionIdentifier(let v) = $0 { v } else { nil } }
    }

    private func first<T>(_ pick: (Property) -> T?) -> T? {
        for p in all { if let v = pick(p) { return v } }
        return nil
    }

    /// Reads a property length and list, checking ids, types, values, duplicates and placement.
    static func read(from reader: inout PacketReader, context: PropertyContext) throws(MQTTProtocolError) -> Properties
    {
        let length = try reader.varint("property length")
        var r = try reader.slice(length, "property list")
        var list: [Property] = []
        var seen = Set<UInt8>()
        while !r.isEmpty {
            let id = UInt8(try r.varint("property identifier") & 0xFF)
            let property: Property
            switch id {
            case 0x01: property = .payloadFormatIndicator(try r.flag("payload format indicator"))
            case 0x02: property = .messageExpiryInterval(try r.uint32("message expiry interval"))
            case 0x03: property = .contentType(try r.string("content type"))
            case 0x08:
                let topic = try r.string("response topic")
                guard !topic.isEmpty, !topic.contains(where: { $0 == "+" || $0 == "#" }) else {
                    throw .protocolError("the response topic is not a valid topic name")
                }
                property = .responseTopic(topic)
            case 0x09: property = .correlationData(try r.binary("correlation data"))
            case 0x0B:
                let v = try r.varint("subscription identifier")
                guard v > 0 else { throw .protocolError("a subscription identifier of 0") }
                property = .subscriptionIdentifier(v)
            case 0x11: property = .sessionExpiryInterval(try r.uint32("session expiry interval"))
            case 0x12: property = .assignedClientIdentifier(try r.string("assigned client identifier"))
            case 0x13: property = .serverKeepAlive(try r.uint16("server keep alive"))
            case 0x15: property = .authenticationMethod(try r.string("authentication method"))
            case 0x16: property = .authenticationData(try r.binary("authentication data"))
            case 0x17: property = .requestProblemInformation(try r.flag("request problem information"))
            case 0x18: property = .willDelayInterval(try r.uint32("will delay interval"))
            case 0x19: property = .requestResponseInformation(try r.flag("request response information"))
            case 0x1A: property = .responseInformation(try r.string("response information"))
            case 0x1C: property = .serverReference(try r.string("server reference"))
            case 0x1F: property = .reasonString(try r.string("reason string"))
            case 0x21:
                let v = try r.uint16("receive maximum")
                guard v > 0 else { throw .protocolError("a receive maximum of 0") }
                property = .receiveMaximum(v)
            case 0x22: property = .topicAliasMaximum(try r.uint16("topic alias maximum"))
            case 0x23:
                let v = try r.uint16("topic alias")
                guard v > 0 else { throw .protocolError("a topic alias of 0") }
                property = .topicAlias(v)
            case 0x24: property = .maximumQoS(try r.flag("maximum QoS"))
            case 0x25: property = .retainAvailable(try r.flag("retain available"))
            case 0x26: property = .userProperty(try r.string("user property name"), try r.string("user property value"))
            case 0x27:
                let v = try r.uint32("maximum packet size")
                guard v > 0 else { throw .protocolError("a maximum packet size of 0") }
                property = .maximumPacketSize(v)
            case 0x28: property = .wildcardSubscriptionAvailable(try r.flag("wildcard subscription available"))
            case 0x29: property = .subscriptionIdentifierAvailable(try r.flag("subscription identifier available"))
            case 0x2A: property = .sharedSubscriptionAvailable(try r.flag("shared subscription available"))
            default: throw .malformed("unknown property identifier 0x\(String(id, radix: 16))")
            }
            guard context.allowed.contains(id) else {
                throw .protocolError("property 0x\(String(id, radix: 16)) is not allowed in \(context)")
            }
            let repeatable = id == 0x26 || (id == 0x0B && context == .publish)
            guard repeatable || seen.insert(id).inserted else {
                throw .protocolError("property 0x\(String(id, radix: 16)) appears twice")
            }
            list.append(property)
        }
        return Properties(list)
    }

    func write(to buffer: inout ByteBuffer) {
        var body = ByteBuffer()
        for p in all {
            body.writeVarint(Int(p.identifier))
            switch p {
            case .payloadFormatIndicator(let v), .requestProblemInformation(let v), .requestResponseInformation(let v),
                .maximumQoS(let v), .retainAvailable(let v), .wildcardSubscriptionAvailable(let v),
                .subscriptionIdentifierAvailable(let v), .sharedSubscriptionAvailable(let v):
                body.writeInteger(v)
            case .messageExpiryInterval(let v), .sessionExpiryInterval(let v), .willDelayInterval(let v),
                .maximumPacketSize(let v):
                body.writeInteger(v, endianness: .big)
            case .serverKeepAlive(let v), .receiveMaximum(let v), .topicAliasMaximum(let v), .topicAlias(let v):
                body.writeInteger(v, endianness: .big)
            case .contentType(let s), .responseTopic(let s), .assignedClientIdentifier(let s),
                .authenticationMethod(let s),
                .responseInformation(let s), .serverReference(let s), .reasonString(let s):
                body.writeMQTTString(s)
            case .correlationData(let b), .authenticationData(let b):
                body.writeMQTTBinary(b)
            case .subscriptionIdentifier(let v):
                body.writeVarint(v)
            case .userProperty(let k, let v):
                body.writeMQTTString(k)
                body.writeMQTTString(v)
            }
        }
        buffer.writeVarint(body.readableBytes)
        buffer.writeBuffer(&body)
    }
}

extension PacketReader {
    /// A byte property whose only values are 0 and 1.
    mutating func flag(_ what: String) throws(MQTTProtocolError) -> UInt8 {
        let v = try byte(what)
        guard v <= 1 else { throw .protocolError("\(what) must be 0 or 1") }
        return v
    }
}

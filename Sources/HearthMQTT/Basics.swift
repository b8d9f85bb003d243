import NIOCore

/// The protocol level a connection speaks.
public enum MQTTVersion: UInt8, Sendable, Equatable {
    // swift-format-ignore: AlwaysUseLowerCamelCase
    // The protocol's own name for the level.
    case v3_1_1 = 4
    case v5 = 5
}

/// MQTT 5.0 reason codes (MQTT 5.0 §2.4). 3.1.1 CONNACK return codes map onto the first six.
public struct ReasonCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let success = ReasonCode(rawValue: 0x00)
    public static let grantedQoS1 = ReasonCode(rawValue: 0x01)
    public static let grantedQoS2 = ReasonCode(rawValue: 0x02)
    public static let disconnectWithWill = ReasonCode(rawValue: 0x04)
    public static let noMatchingSubscribers = ReasonCode(rawValue: 0x10)
    public static let noSubscriptionExisted = ReasonCode(rawValue: 0x11)
    public static let continueAuthentication = ReasonCode(rawValue: 0x18)
    public static let unspecifiedError = ReasonCode(rawValue: 0x80)
    public static let malformedPacket = ReasonCode(rawValue: 0x81)
    public static let protocolError = ReasonCode(rawValue: 0x82)
    public static let implementationSpecificError = ReasonCode(rawValue: 0x83)
    public static let unsupportedProtocolVersion = ReasonCode(rawValue: 0x84)
    public static let clientIdentifierNotValid = ReasonCode(rawValue: 0x85)
    public static let badUserNameOrPassword = ReasonCode(rawValue: 0x86)
    public static let notAuthorized = ReasonCode(rawValue: 0x87)
    public static let serverUnavailable = ReasonCode(rawValue: 0x88)
    public static let serverBusy = ReasonCode(rawValue: 0x89)
    public static let banned = ReasonCode(rawValue: 0x8A)
    public static let serverShuttingDown = ReasonCode(rawValue: 0x8B)
    public static let badAuthenticationMethod = ReasonCode(rawValue: 0x8C)
    public static let keepAliveTimeout = ReasonCode(rawValue: 0x8D)
    public static let sessionTakenOver = ReasonCode(rawValue: 0x8E)
    public static let topicFilterInvalid = ReasonCode(rawValue: 0x8F)
    public static let topicNameInvalid = ReasonCode(rawValue: 0x90)
    public static let packetIdentifierInUse = ReasonCode(rawValue: 0x91)
    public static let packetIdentifierNotFound = ReasonCode(rawValue: 0x92)
    public static let receiveMaximumExceeded = ReasonCode(rawValue: 0x93)
    public static let topicAliasInvalid = ReasonCode(rawValue: 0x94)
    public static let packetTooLarge = ReasonCode(rawValue: 0x95)
    public static let messageRateTooHigh = ReasonCode(rawValue: 0x96)
    public static let quotaExceeded = ReasonCode(rawValue: 0x97)
    public static let administrativeAction = ReasonCode(rawValue: 0x98)
    public static let payloadFormatInvalid = ReasonCode(rawValue: 0x99)
    public static let retainNotSupported = ReasonCode(rawValue: 0x9A)
    public static let qosNotSupported = ReasonCode(rawValue: 0x9B)
    public static let useAnotherServer = ReasonCode(rawValue: 0x9C)
    public static let serverMoved = ReasonCode(rawValue: 0x9D)
    public static let sharedSubscriptionsNotSupported = ReasonCode(rawValue: 0x9E)
    public static let connectionRateExceeded = ReasonCode(rawValue: 0x9F)
    public static let maximumConnectTime = ReasonCode(rawValue: 0xA0)
    public static let subscriptionIdentifiersNotSupported = ReasonCode(rawValue: 0xA1)
    public static let wildcardSubscriptionsNotSupported = ReasonCode(rawValue: 0xA2)

    public var isError: Bool { rawValue >= 0x80 }
    public var description: String { "0x" + String(rawValue, radix: 16, uppercase: true) }
}

/// Why a packet could not be decoded. `reason` is what an MQTT 5 peer is told in its DISCONNECT
/// (or CONNACK); a 3.1.1 peer's connection is simply closed (MQTT 3.1.1 §4.8, 5.0 §4.13).
public struct MQTTProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    public let reason: ReasonCode
    public let message: String

    public init(_ reason: ReasonCode, _ message: String) {
        self.reason = reason
        self.message = message
    }

    static func malformed(_ message: String) -> MQTTProtocolError { .init(.malformedPacket, message) }
    static func protocolError(_ message: String) -> MQTTProtocolError { .init(.protocolError, message) }

    public var description: String { "\(reason) \(message)" }
}

public enum QoS: UInt8, Sendable, Comparable, Codable {
    case atMostOnce = 0
    case atLeastOnce = 1
    case exactlyOnce = 2
    public static func < (a: QoS, b: QoS) -> Bool { a.rawValue < b.rawValue }
}

/// Bounded readers over a packet's bytes. Every length is checked against what remains before
/// anything is allocated.
struct PacketReader {
    var buffer: ByteBuffer

    var isEmpty: Bool { buffer.readableBytes == 0 }
    var remaining: Int { buffer.readableBytes }

    mutating func byte(_ what: String) throws(MQTTProtocolError) -> UInt8 {
        guard let b = buffer.readInteger(as: UInt8.self) else { throw .malformed("truncated \(what)") }
        return b
    }

    mutating func uint16(_ what: String) throws(MQTTProtocolError) -> UInt16 {
        guard let v = buffer.readInteger(endianness: .big, as: UInt16.self) else {
            throw .malformed("truncated \(what)")
        }
        return v
    }

    mutating func uint32(_ what: String) throws(MQTTProtocolError) -> UInt32 {
        guard let v = buffer.readInteger(endianness: .big, as: UInt32.self) else {
            throw .malformed("truncated \(what)")
        }
        return v
    }

    /// A Variable Byte Integer: at most 4 bytes (MQTT 5.0 §1.5.5).
    mutating func varint(_ what: String) throws(MQTTProtocolError) -> Int {
        var value = 0
        for i in 0..<4 {
            let b = try byte(what)
            value |= Int(b & 0x7F) << (7 * i)
            if b & 0x80 == 0 { return value }
        }
        throw .malformed("\(what) is longer than 4 bytes")
    }

    mutating func binary(_ what: String) throws(MQTTProtocolError) -> [UInt8] {
        let length = Int(try uint16("\(what) length"))
        guard let bytes = buffer.readBytes(length: length) else {
            throw .malformed("\(what) is longer than the packet")
        }
        return bytes
    }

    /// A UTF-8 Encoded String: well-formed UTF-8 without U+0000 (MQTT 5.0 §1.5.4).
    mutating func string(_ what: String) throws(MQTTProtocolError) -> String {
        let bytes = try binary(what)
        guard let s = String(validating: bytes, as: UTF8.self) else { throw .malformed("\(what) is not valid UTF-8") }
        guard !bytes.contains(0) else { throw .malformed("\(what) contains U+0000") }
        return s
    }

    mutating func rest() -> [UInt8] {
        buffer.readBytes(length: buffer.readableBytes) ?? []
    }

    mutating func slice(_ length: Int, _ what: String) throws(MQTTProtocolError) -> PacketReader {
        guard let s = buffer.readSlice(length: length) else { throw .malformed("\(what) is longer than the packet") }
        return PacketReader(buffer: s)
    }
}

extension ByteBuffer {
    mutating func writeVarint(_ value: Int) {
        precondition(value >= 0 && value <= 268_435_455, "variable byte integer out of range")
        var v = value
        repeat {
            var b = UInt8(v & 0x7F)
            v >>= 7
            if v > 0 { b |= 0x80 }
            writeInteger(b)
        } while v > 0
    }

    mutating func writeMQTTBinary(_ bytes: [UInt8]) {
        writeInteger(UInt16(bytes.count), endianness: .big)
        writeBytes(bytes)
    }

    mutating func writeMQTTString(_ s: String) {
        writeMQTTBinary(Array(s.utf8))
    }
}

func varintSize(_ value: Int) -> Int {
    value < 128 ? 1 : value < 16_384 ? 2 : value < 2_097_152 ? 3 : 4
}

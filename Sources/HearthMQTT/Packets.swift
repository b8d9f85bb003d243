import NIOCore

/// CONNECT (MQTT 5.0 §3.1; 3.1.1 §3.1).
public struct Connect: Equatable, Sendable {
    public struct Will: Equatable, Sendable {
        public var topic: String
        public var payload: [UInt8]
        public var qos: QoS
        public var retain: Bool
        public var properties: Properties

        public init(
            topic: String, payload: [UInt8], qos: QoS = .atMostOnce, retain: Bool = false, properties: Properties = []
        ) {
            self.topic = topic
            self.payload = payload
            self.qos = qos
            self.retain = retain
            self.properties = properties
        }
    }

    public var version: MQTTVersion
    public var clientID: String
    /// Clean Session (3.1.1) or Clean Start (5.0).
    public var cleanStart: Bool
    public var keepAlive: UInt16
    public var will: Will?
    public var username: String?
    public var password: [UInt8]?
    public var properties: Properties

    public init(
        version: MQTTVersion, clientID: String, cleanStart: Bool = true, keepAlive: UInt16 = 60, will: Will? = nil,
        username: String? = nil, password: [UInt8]? = nil, properties: Properties = []
    ) {
        self.version = version
        self.clientID = clientID
        self.cleanStart = cleanStart
        self.keepAlive = keepAlive
        self.will = will
        self.username = username
        self.password = password
        self.properties = properties
    }
}

public struct ConnAck: Equatable, Sendable {
    public var sessionPresent: Bool
    /// 5.0 reason code; for 3.1.1 the return code (0…5).
    public var reason: ReasonCode
    public var properties: Properties

    public init(sessionPresent: Bool = false, reason: ReasonCode = .success, properties: Properties = []) {
        self.sessionPresent = sessionPresent
        self.reason = reason
        self.properties = properties
    }
}

public struct Publish: Equatable, Sendable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: QoS
    public var retain: Bool
    public var dup: Bool
    /// Present exactly when `qos` > 0.
    public var packetID: UInt16?
    public var properties: Properties

    public init(
        topic: String, payload: [UInt8], qos: QoS = .atMostOnce, retain: Bool = false, dup: Bool = false,
        packetID: UInt16? = nil, properties: Properties = []
    ) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packetID = packetID
        self.properties = properties
    }
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape.
public struct Ack: Equatable, Sendable {
    public var packetID: UInt16
    public var reason: ReasonCode
    public var properties: Properties

    public init(packetID: UInt16, reason: ReasonCode = .success, properties: Properties = []) {
        self.packetID = packetID
        self.reason = reason
        self.properties = properties
    }
}

public struct Subscribe: Equatable, Sendable {
    public struct Request: Equatable, Sendable {
        public var filter: String
        public var qos: QoS
        public var noLocal: Bool
        public var retainAsPublished: Bool
        /// 0 send retained on subscribe, 1 only if new, 2 never.
        public var retainHandling: UInt8

        public init(
            filter: String, qos: QoS, noLocal: Bool = false, retainAsPublished: Bool = false, retainHandling: UInt8 = 0
        ) {
            self.filter = filter
            self.qos = qos
            self.noLocal = noLocal
            self.retainAsPublished = retainAsPublished
            self.retainHandling = retainHandling
        }
    }

    public var packetID: UInt16
    public var requests: [Request]
    public var properties: Properties

    public init(packetID: UInt16, requests: [Request], properties: Properties = []) {
        self.packetID = packetID
        self.requests = requests
        self.properties = properties
    }
}

/// SUBACK and UNSUBACK: a packet id and one reason code per request (3.1.1 UNSUBACK has none).
public struct SubAck: Equatable, Sendable {
    public var packetID: UInt16
    public var reasons: [ReasonCode]
    public var properties: Properties

    public init(packetID: UInt16, reasons: [ReasonCode], properties: Properties = []) {
        self.packetID = packetID
        self.reasons = reasons
        self.properties = properties
    }
}

public struct Unsubscribe: Equatable, Sendable {
    public var packetID: UInt16
    public var filters: [String]
    public var properties: Properties

    public init(packetID: UInt16, filters: [String], properties: Properties = []) {
        self.packetID = packetID
        self.filters = filters
        self.properties = properties
    }
}

/// DISCONNECT and AUTH: a reason code and properties (3.1.1 DISCONNECT is empty).
public struct ReasonPacket: Equatable, Sendable {
    public var reason: ReasonCode
    public var properties: Properties

    public init(reason: ReasonCode = .success, properties: Properties = []) {
        self.reason = reason
        self.properties = properties
    }
}

/// Every MQTT control packet.
public enum MQTTPacket: Equatable, Sendable {
    case connect(Connect)
    case connack(ConnAck)
    case publish(Publish)
    case puback(Ack)
    case pubrec(Ack)
    case pubrel(Ack)
    case pubcomp(Ack)
    case subscribe(Subscribe)
    case suback(SubAck)
    case unsubscribe(Unsubscribe)
    case unsuback(SubAck)
    case pingreq
    case pingresp
    case disconnect(ReasonPacket)
    case auth(ReasonPacket)

    var typeCode: UInt8 {
        switch self {
        case .connect: 1
        case .connack: 2
        case .publish: 3
        case .puback: 4
        case .pubrec: 5
        case .pubrel: 6
        case .pubcomp: 7
        case .subscribe: 8
        case .suback: 9
        case .unsubscribe: 10
        case .unsuback: 11
        case .pingreq: 12
        case .pingresp: 13
        case .disconnect: 14
        case .auth: 15
        }
    }
}

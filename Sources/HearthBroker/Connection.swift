import Foundation
import HearthMQTT

/// Limits the gateway announces and enforces per connection.
public struct ConnectionLimits: Sendable, Equatable {
    /// Longest keep-alive accepted; a larger (or, in 5.0, zero) request is lowered with Server Keep Alive.
    public var maximumKeepAlive: UInt16 = 300
    /// How long a new connection may take to send CONNECT.
    public var connectTimeout: TimeInterval = 10
    /// QoS 1/2 messages the client may have unacknowledged towards the server.
    public var receiveMaximum: UInt16 = 100
    public var maximumPacketSize: UInt32 = 128 * 1024 + 1024
    public var topicAliasMaximum: UInt16 = 16
    public var maximumClientIDLength = 128
    /// Subscriptions one client may hold.
    public var maximumSubscriptions = 50
    /// Publishes per second a client may send (token bucket; AWS IoT's per-connection default).
    public var publishesPerSecond: Double = 100
    /// Payload bytes per second a client may send (AWS IoT: 512 KiB/s per connection).
    public var bytesPerSecond: Double = 512 * 1024
    /// Longest a session outlives its connection (5.0 Session Expiry is lowered to it; a 3.1.1
    /// persistent session gets it).
    public var maximumSessionExpiry: UInt32 = 7 * 86_400
    /// Messages kept for a disconnected session; beyond it the oldest are dropped (and counted).
    public var maximumQueuedPerSession = 1000

    public init() {}
}

/// Who the transport says the peer is, before MQTT says anything.
public enum PeerIdentity: Sendable, Equatable {
    /// Authenticated by a certificate from the device CA; `serial` is the certificate's CN.
    case device(serial: String)
    /// An anonymous client of the loopback development listener.
    case development

    /// The session key of a device: its sessions belong to the certificate's serial, so one device
    /// can never take over another's session by choosing its client id.
    public static func deviceSessionKey(_ serial: String) -> String { devicePrefix + serial }
    /// The serial a session key belongs to; nil for a development client's.
    public static func deviceSerial(ofSessionKey key: String) -> String? {
        key.hasPrefix(devicePrefix) ? String(key.dropFirst(devicePrefix.count)) : nil
    }
    static let devicePrefix = "device:"
    /// The session key of a development client.
    static func developmentSessionKey(_ clientID: String) -> String { "dev:" + clientID }
}

/// One connection's protocol state as a value (MQTT 5.0 §3.1–§3.2, §3.1.2.10, §3.3.2.3.4, §4.13):
/// CONNECT validation and the CONNACK, keep-alive and connect timeouts with an injected time,
/// inbound topic aliases, and protocol errors turned into the right DISCONNECT. The gateway feeds
/// it packets and ticks and performs the actions it returns.
public struct ConnectionStateMachine: Sendable {
    public enum Action: Equatable, Sendable {
        case send(MQTTPacket)
        /// The CONNECT is accepted: start (or resume) the session under `sessionKey`, then send
        /// `connack` with Session Present set as the session store found it.
        case accept(sessionKey: String, connect: Connect, connack: ConnAck)
        /// Hand a PUBLISH (topic alias resolved) to the broker.
        case deliver(Publish)
        /// Hand any other packet of a connected client to the broker (SUBSCRIBE, acks, …).
        case forward(MQTTPacket)
        /// The client's DISCONNECT changed how long its session outlives the connection (5.0).
        case setSessionExpiry(UInt32)
        /// Close the connection; `sendWill` says whether the will message is published.
        case close(sendWill: Bool)
    }

    enum State: Sendable {
        case awaitingConnect(since: Date)
        case connected(Connected)
        case closed
    }

    struct Connected: Sendable {
        var version: MQTTVersion
        var keepAlive: UInt16
        var lastHeard: Date
        var sessionExpiry: UInt32
        var aliases: [UInt16: String] = [:]
    }

    public let identity: PeerIdentity
    public let limits: ConnectionLimits
    private var state: State

    /// Set when the gateway is over a limit as this connection arrives (0x89 server busy, 0x9F
    /// connection rate exceeded): its CONNECT is answered with that reason.
    let refusal: (reason: ReasonCode, retryAfter: Int)?

    public init(
        identity: PeerIdentity, limits: ConnectionLimits = ConnectionLimits(), now: Date,
        refusal: (reason: ReasonCode, retryAfter: Int)? = nil
    ) {
        self.identity = identity
        self.limits = limits
        self.refusal = refusal
        state = .awaitingConnect(since: now)
    }

    public var isConnected: Bool { if case .connected = state { true } else { false } }

    /// When ``tick(now:)`` next has something to do (the connect timeout, or 1.5 × the keep-alive
    /// after the last packet); nil when nothing is due. A timer set for it may fire early: the
    /// deadline only ever moves later.
    public var deadline: Date? {
        switch state {
        case .awaitingConnect(let since): since.addingTimeInterval(limits.connectTimeout)
        case .connected(let c) where c.keepAlive > 0: c.lastHeard.addingTimeInterval(1.5 * Double(c.keepAlive))
        default: nil
        }
    }

    /// A decoded packet arrived.
    public mutating func received(_ packet: MQTTPacket, now: Date) -> [Action] {
        switch state {
        case .closed:
            return []
        case .awaitingConnect:
            guard case .connect(let connect) = packet else {
                state = .closed
                return [.close(sendWill: false)]
            }
            return accept(connect, now: now)
        case .connected(var c):
            c.lastHeard = now
            defer { if case .connected = state { state = .connected(c) } }
            switch packet {
            case .connect:
                return fail(.protocolError, "a second CONNECT", version: c.version)
            case .pingreq:
                return [.send(.pingresp)]
            case .disconnect(let d):
                var actions: [Action] = []
                if let expiry = d.properties.sessionExpiryInterval {
                    // §3.14.2.2.2: a session that was to end with the connection cannot be kept now.
                    guard c.sessionExpiry > 0 || expiry == 0 else {
                        return fail(
                            .protocolError, "session expiry set on DISCONNECT after 0 on CONNECT", version: c.version)
                    }
                    actions.append(.setSessionExpiry(min(expiry, limits.maximumSessionExpiry)))
                }
                state = .closed
                // 5.0: "Disconnect with Will Message" (0x04) asks for the will; otherwise none.
                return actions + [.close(sendWill: c.version == .v5 && d.reason == .disconnectWithWill)]
            case .publish(var publish):
                if let alias = publish.properties.topicAlias {
                    guard alias <= limits.topicAliasMaximum else {
                        return fail(
                            .topicAliasInvalid, "topic alias \(alias) is above the maximum \(limits.topicAliasMaximum)",
                            version: c.version)
                    }
                    if publish.topic.isEmpty {
                        guard let topic = c.aliases[alias] else {
                            return fail(.protocolError, "topic alias \(alias) was never set", version: c.version)
                        }
                        publish.topic = topic
                    } else {
                        c.aliases[alias] = publish.topic
                    }
                    publish.properties.all.removeAll { if case .topicAlias = $0 { true } else { false } }
                }
                return [.deliver(publish)]
            case .connack, .suback, .unsuback, .pingresp:
                return fail(.protocolError, "a server-to-client packet from a client", version: c.version)
            default:
                return [.forward(packet)]
            }
        }
    }

    /// Time passed: enforce the connect timeout and keep-alive (1.5 × the keep-alive, §3.1.2.10).
    public mutating func tick(now: Date) -> [Action] {
        switch state {
        case .awaitingConnect(let since) where now.timeIntervalSince(since) >= limits.connectTimeout:
            state = .closed
            return [.close(sendWill: false)]
        case .connected(let c) where c.keepAlive > 0 && now.timeIntervalSince(c.lastHeard) >= 1.5 * Double(c.keepAlive):
            return fail(.keepAliveTimeout, "no packet within 1.5 × the keep-alive", version: c.version, sendWill: true)
        default:
            return []
        }
    }

    /// The parser refused a packet.
    public mutating func decodeFailed(_ error: MQTTProtocolError) -> [Action] {
        switch state {
        case .connected(let c): return fail(error.reason, error.message, version: c.version)
        case .awaitingConnect where error.reason == .unsupportedProtocolVersion:
            // §3.1.2.2: answer with CONNACK 0x84 before closing; the serialiser writes return code 1
            // when the gateway encodes it for a 3.1.1 peer.
            state = .closed
            return [.send(.connack(ConnAck(reason: error.reason))), .close(sendWill: false)]
        default:
            state = .closed
            return [.close(sendWill: false)]
        }
    }

    /// The server ends the connection (overload, shutdown, quarantine): a 5.0 client is told why.
    /// Ends the connection with `reason`; `retryAfter` (seconds) tells the client when to come
    /// back (a `retry-after` user property, as on a refused CONNACK).
    public mutating func disconnect(_ reason: ReasonCode, _ message: String, retryAfter: Int? = nil) -> [Action] {
        guard case .connected(let c) = state else { return [] }
        return fail(
            reason, message, version: c.version, sendWill: true,
            extra: retryAfter.map { [.userProperty("retry-after", String($0))] } ?? [])
    }

    private mutating func accept(_ connect: Connect, now: Date) -> [Action] {
        let v5 = connect.version == .v5
        // 5.0 reason codes throughout; the serialiser writes 3.1.1 return codes for 3.1.1 peers.
        func refuse(_ reason: ReasonCode, properties: Properties = []) -> [Action] {
            state = .closed
            return [
                .send(.connack(ConnAck(reason: reason, properties: v5 ? properties : []))), .close(sendWill: false),
            ]
        }
        if let refusal {
            // A hint for the client's backoff (the device SDK honours it).
            return refuse(refusal.reason, properties: [.userProperty("retry-after", String(refusal.retryAfter))])
        }
        var clientID = connect.clientID
        var properties: Properties = [
            .receiveMaximum(limits.receiveMaximum), .maximumPacketSize(limits.maximumPacketSize),
            .topicAliasMaximum(limits.topicAliasMaximum),
        ]
        if clientID.isEmpty {
            // 3.1.1 allows an empty id only with a clean session (§3.1.3-7); 5.0 gets one assigned.
            guard v5 || connect.cleanStart else { return refuse(.clientIdentifierNotValid) }
            clientID = "auto-" + UUID().uuidString.lowercased()
            if v5 { properties.all.append(.assignedClientIdentifier(clientID)) }
        }
        // Any UTF-8 id up to the limit, spaces included (as other brokers accept); control
        // characters are refused so that an id can never forge a log line.
        guard clientID.utf8.count <= limits.maximumClientIDLength,
            clientID.unicodeScalars.allSatisfy({ $0.value >= 0x20 && !(0x7F...0x9F).contains($0.value) })
        else { return refuse(.clientIdentifierNotValid) }
        // A device may not log in with credentials: its certificate is its identity.
        if case .device = identity, connect.username != nil || connect.password != nil {
            return refuse(.badUserNameOrPassword)
        }
        if v5, let requested = connect.properties.sessionExpiryInterval, requested > limits.maximumSessionExpiry {
            properties.all.append(.sessionExpiryInterval(limits.maximumSessionExpiry))
        }
        var keepAlive = connect.keepAlive
        if keepAlive > limits.maximumKeepAlive || (keepAlive == 0 && v5) {
            keepAlive = limits.maximumKeepAlive
            if v5 { properties.all.append(.serverKeepAlive(keepAlive)) }
        }
        let sessionKey: String
        switch identity {
        case .device(let serial): sessionKey = PeerIdentity.deviceSessionKey(serial)
        case .development: sessionKey = PeerIdentity.developmentSessionKey(clientID)
        }
        state = .connected(
            Connected(
                version: connect.version, keepAlive: keepAlive, lastHeard: now,
                sessionExpiry: sessionExpiry(for: connect)))
        return [
            .accept(
                sessionKey: sessionKey, connect: connect,
                connack: ConnAck(sessionPresent: false, reason: .success, properties: v5 ? properties : []))
        ]
    }

    /// How long the session of `connect` outlives its connection (MQTT 5.0 §3.1.2.11.2): 5.0 asks
    /// with Session Expiry Interval; a 3.1.1 clean session ends with the connection and a
    /// persistent one lasts the maximum.
    public func sessionExpiry(for connect: Connect) -> UInt32 {
        let requested =
            connect.version == .v5
            ? (connect.properties.sessionExpiryInterval ?? 0) : (connect.cleanStart ? 0 : limits.maximumSessionExpiry)
        return min(requested, limits.maximumSessionExpiry)
    }

    private mutating func fail(
        _ reason: ReasonCode, _ message: String, version: MQTTVersion, sendWill: Bool = true, extra: [Property] = []
    ) -> [Action] {
        state = .closed
        if version == .v5 {
            return [
                .send(
                    .disconnect(ReasonPacket(reason: reason, properties: Properties([.reasonString(message)] + extra)))),
                .close(sendWill: sendWill),
            ]
        }
        return [.close(sendWill: sendWill)]
    }
}

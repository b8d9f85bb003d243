import Foundation
import HearthMQTT

/// Routing without I/O: who is subscribed to what, the retained messages, and the access policy of
/// every session. `publish` answers with the deliveries to make; sessions and connections
/// (elsewhere) queue and send them.
public struct Broker: Sendable {
    public struct Subscription: Sendable, Equatable, Codable {
        public var qos: QoS
        public var noLocal: Bool
        public var retainAsPublished: Bool
        public var identifier: Int?

        public init(qos: QoS, noLocal: Bool = false, retainAsPublished: Bool = false, identifier: Int? = nil) {
            self.qos = qos
            self.noLocal = noLocal
            self.retainAsPublished = retainAsPublished
            self.identifier = identifier
        }
    }

    public struct Delivery: Sendable, Equatable {
        public let sessionKey: String
        public let publish: Publish
    }

    public enum PublishResult: Sendable, Equatable {
        case routed([Delivery])
        /// Refused by the access policy (5.0 PUBACK/PUBREC 0x87); nothing was stored or sent.
        case refused(ReasonCode)

        public var deliveries: [Delivery] {
            if case .routed(let d) = self { d } else { [] }
        }
    }

    var tree = SubscriptionTree<String, Subscription>()
    var filtersBySession: [String: [String: Subscription]] = [:]
    var policies: [String: AccessPolicy] = [:]
    public private(set) var retained: [String: Publish] = [:]
    /// When each retained message was stored, for its Message Expiry Interval.
    public private(set) var retainedAt: [String: Date] = [:]
    /// The retained topics by level, for the ones a new subscription matches.
    var retainedTopics = TopicIndex()
    var nextInGroup: [String: Int] = [:]
    /// Refused publishes and subscriptions per session: input for security monitoring.
    public private(set) var refusals: [String: Int] = [:]
    /// Filters one session may hold; more are refused with 0x97 (quota exceeded).
    public var maximumSubscriptionsPerSession: Int
    /// Topic filters development clients may not publish to, subscribe to or receive from.
    public var developmentDenied: [String] = []

    public init(maximumSubscriptionsPerSession: Int = 50) {
        self.maximumSubscriptionsPerSession = maximumSubscriptionsPerSession
    }

    public mutating func register(_ sessionKey: String, policy: AccessPolicy) {
        policies[sessionKey] = policy
    }

    /// Forgets a session and all its subscriptions (clean start, or session expiry).
    public mutating func remove(_ sessionKey: String) {
        for filter in (filtersBySession.removeValue(forKey: sessionKey) ?? [:]).keys {
            tree.remove(filter, subscriber: sessionKey)
        }
        policies[sessionKey] = nil
    }

    /// A session's subscriptions, by filter (for persisting it).
    public func subscriptions(of sessionKey: String) -> [String: Subscription] {
        filtersBySession[sessionKey] ?? [:]
    }

    /// Puts back a persisted subscription (after a restart), without retained-message delivery.
    public mutating func restore(_ sessionKey: String, filter: String, _ subscription: Subscription) {
        _ = tree.insert(filter, subscriber: sessionKey, options: subscription)
        filtersBySession[sessionKey, default: [:]][filter] = subscription
    }

    /// Puts back a persisted retained message.
    public mutating func restoreRetained(_ message: Publish, at: Date = Date()) {
        retained[message.topic] = message
        retainedAt[message.topic] = at
        retainedTopics.insert(message.topic)
    }

    /// Subscribes; returns a reason code per request and the retained messages to send now.
    public mutating func subscribe(_ sessionKey: String, _ subscribe: Subscribe) -> (
        reasons: [ReasonCode], retained: [Publish]
    ) {
        let policy = policies[sessionKey] ?? .development
        let identifier = subscribe.properties.subscriptionIdentifiers.first
        var reasons: [ReasonCode] = []
        var toSend: [Publish] = []
        for request in subscribe.requests {
            guard policy.canSubscribe(request.filter), !denied(policy, request.filter) else {
                refusals[sessionKey, default: 0] += 1
                reasons.append(.notAuthorized)
                continue
            }
            let held = filtersBySession[sessionKey] ?? [:]
            guard held.count < maximumSubscriptionsPerSession || held[request.filter] != nil else {
                reasons.append(.quotaExceeded)
                continue
            }
            let subscription = Subscription(
                qos: request.qos, noLocal: request.noLocal, retainAsPublished: request.retainAsPublished,
                identifier: identifier)
            let isNew = tree.insert(request.filter, subscriber: sessionKey, options: subscription)
            filtersBySession[sessionKey, default: [:]][request.filter] = subscription
            reasons.append(ReasonCode(rawValue: request.qos.rawValue))
            let shared = Topic.sharedParts(request.filter) != nil
            if !shared, request.retainHandling == 0 || (request.retainHandling == 1 && isNew) {
                for topic in retainedTopics.matching(request.filter)
                where policy.canReceive(topic) && !denied(policy, topic) {
                    guard let message = retained[topic] else { continue }
                    toSend.append(Self.copy(message, for: subscription, retain: true))
                }
            }
        }
        return (reasons, toSend)
    }

    public mutating func unsubscribe(_ sessionKey: String, _ filters: [String]) -> [ReasonCode] {
        filters.map { filter in
            guard tree.remove(filter, subscriber: sessionKey) else { return .noSubscriptionExisted }
            filtersBySession[sessionKey]?[filter] = nil
            return .success
        }
    }

    /// Routes a PUBLISH from `sessionKey` (nil: from the server itself, e.g. a command).
    public mutating func publish(from sessionKey: String?, _ message: Publish, now: Date = Date()) -> PublishResult {
        if let sessionKey {
            let policy = policies[sessionKey] ?? .development
            guard policy.canPublish(message.topic), !denied(policy, message.topic) else {
                refusals[sessionKey, default: 0] += 1
                return .refused(.notAuthorized)
            }
        }
        if message.retain {
            // An empty retained payload deletes the retained message (§3.3.1.3).
            if message.payload.isEmpty {
                retained[message.topic] = nil
                retainedAt[message.topic] = nil
                retainedTopics.remove(message.topic)
            } else {
                retained[message.topic] = message
                retainedAt[message.topic] = now
                retainedTopics.insert(message.topic)
            }
        }
        let matches = tree.match(message.topic)
        var deliveries: [Delivery] = []
        for (subscriber, subscriptions) in matches.subscribers.sorted(by: { $0.key < $1.key }) {
            // Overlapping subscriptions of one client: one copy at the highest QoS of those that
            // apply, carrying every subscription identifier (MQTT 5.0 §3.3.4).
            let applying = subscriptions.filter { !($0.noLocal && subscriber == sessionKey) }
            guard let first = applying.first, receives(subscriber, message.topic) else { continue }
            var publish = Self.copy(
                message, for: first, retain: applying.contains { $0.retainAsPublished } && message.retain)
            publish.qos = min(message.qos, applying.map(\.qos).max() ?? first.qos)
            let identifiers = applying.compactMap(\.identifier)
            publish.properties.all.removeAll { if case .subscriptionIdentifier = $0 { true } else { false } }
            publish.properties.all += identifiers.map { .subscriptionIdentifier($0) }
            deliveries.append(Delivery(sessionKey: subscriber, publish: publish))
        }
        for (group, members) in matches.groups.sorted(by: { $0.key < $1.key }) {
            let eligible = members.keys.sorted().filter { receives($0, message.topic) }
            guard !eligible.isEmpty else { continue }
            let turn = nextInGroup[group, default: 0] % eligible.count
            nextInGroup[group] = turn + 1
            let member = eligible[turn]
            deliveries.append(
                Delivery(sessionKey: member, publish: Self.copy(message, for: members[member]!, retain: false)))
        }
        return .routed(deliveries)
    }

    /// True if `policy` is a development client's and a denied filter covers `topic` (a topic name,
    /// or a requested filter taken literally).
    func denied(_ policy: AccessPolicy, _ topic: String) -> Bool {
        policy == .development && developmentDenied.contains { Topic.matches(filter: $0, topic: topic) }
    }

    func receives(_ subscriber: String, _ topic: String) -> Bool {
        guard let policy = policies[subscriber] else { return false }
        return policy.canReceive(topic) && !denied(policy, topic)
    }

    /// The message as one subscriber gets it: QoS lowered to the subscription's, no packet id yet,
    /// its subscription identifier attached.
    static func copy(_ message: Publish, for subscription: Subscription, retain: Bool) -> Publish {
        var p = message
        p.qos = min(message.qos, subscription.qos)
        p.packetID = nil
        p.dup = false
        p.retain = retain
        p.properties.all.removeAll { if case .subscriptionIdentifier = $0 { true } else { false } }
        if let id = subscription.identifier { p.properties.all.append(.subscriptionIdentifier(id)) }
        return p
    }
}

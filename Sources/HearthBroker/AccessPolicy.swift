import HearthCore
import HearthMQTT

/// Who may publish and subscribe where. Devices live in their own namespace and nothing lets one
/// device see or affect another (Code of Practice guideline 6; EN 303 645 5.6-x).
///
/// The topic layout is ``DeviceTopics`` (HearthCore).
public enum AccessPolicy: Sendable, Equatable {
    /// A device authenticated by its certificate: only its own namespace.
    case device(serial: String)
    /// An anonymous client of the loopback development listener: anything outside `devices/`,
    /// and never `$SYS`-style topics.
    case development

    public static let namespace = DeviceTopics.namespace

    public func canPublish(_ topic: String) -> Bool {
        switch self {
        case .device(let serial):
            let levels = topic.split(separator: "/", omittingEmptySubsequences: false)
            guard levels.count >= 3, levels[0] == Self.namespace, levels[1] == serial else { return false }
            if DeviceTopics.published.contains(String(levels[2])) { return levels.count == 3 }
            return levels[2] == "commands" && levels.count == 5 && levels[4] == "result" && !levels[3].isEmpty
        case .development:
            return !Self.isReserved(topic)
        }
    }

    /// A device may subscribe only to filters that cannot match outside its command topics, its
    /// update offers and its policy.
    /// Shared subscriptions are refused for devices.
    public func canSubscribe(_ filter: String) -> Bool {
        switch self {
        case .device(let serial):
            guard !filter.hasPrefix("$") else { return false }
            let levels = filter.split(separator: "/", omittingEmptySubsequences: false)
            guard levels.count >= 3, levels[0] == Self.namespace, levels[1] == serial else { return false }
            if levels.count == 3 { return DeviceTopics.received.contains(String(levels[2])) }
            return levels[2] == "commands" || (levels[2] == "update" && levels.count == 4 && levels[3] == "offer")
        case .development:
            if let shared = Topic.sharedParts(filter), let (_, inner) = shared { return canSubscribe(inner) }
            return !filter.hasPrefix("$")
        }
    }

    /// The last check, at delivery: a development client's `#` still never receives device traffic.
    public func canReceive(_ topic: String) -> Bool {
        switch self {
        case .device(let serial):
            // Commands, update offers and its policy only, never the results the device itself sends.
            let levels = topic.split(separator: "/", omittingEmptySubsequences: false)
            guard levels.count >= 3, levels[0] == Self.namespace, levels[1] == serial else { return false }
            if levels.count == 3 { return DeviceTopics.received.contains(String(levels[2])) }
            guard levels.count == 4 else { return false }
            return (levels[2] == "commands" && !levels[3].isEmpty) || (levels[2] == "update" && levels[3] == "offer")
        case .development:
            return !Self.isReserved(topic)
        }
    }

    static func isReserved(_ topic: String) -> Bool {
        topic.hasPrefix("$") || topic == Self.namespace || topic.hasPrefix("\(Self.namespace)/")
    }
}

import HearthMQTT

/// Subscriptions indexed by topic level, for matching a published topic name against every filter
/// at once (MQTT 5.0 §4.7). No I/O: the broker engine owns one and the gateway drives it.
///
/// - `+` matches exactly one level, `#` the parent level and everything below it;
/// - topics starting with `$` are not matched by a filter whose first level is a wildcard;
/// - `$share/NAME/FILTER` subscriptions form groups: a match reports each group once, and the
///   caller picks one member to deliver to.
public struct SubscriptionTree<Subscriber: Hashable & Sendable, Options: Sendable>: Sendable {
    struct Node: Sendable {
        var children: [Substring: Node] = [:]
        var subscribers: [Subscriber: Options] = [:]
        var shared: [String: [Subscriber: Options]] = [:]

        var isEmpty: Bool { children.isEmpty && subscribers.isEmpty && shared.isEmpty }
    }

    public struct Matches: Sendable {
        /// Ordinary subscribers, each once, with the options of every filter of theirs that
        /// matches (overlapping subscriptions, MQTT 5.0 §3.3.4).
        public var subscribers: [Subscriber: [Options]] = [:]
        /// Shared groups by `NAME/FILTER`, each with all its members.
        public var groups: [String: [Subscriber: Options]] = [:]
    }

    var root = Node()
    public private(set) var count = 0

    public init() {}

    /// Adds or replaces `subscriber`'s subscription to `filter` (already validated by the codec).
    /// Returns true if it is new.
    @discardableResult
    public mutating func insert(_ filter: String, subscriber: Subscriber, options: Options) -> Bool {
        let (group, inner) = Self.split(filter)
        let added = Self.insert(
            into: &root, levels: inner.split(separator: "/", omittingEmptySubsequences: false)[...], group: group,
            subscriber: subscriber, options: options)
        if added { count += 1 }
        return added
    }

    /// Removes `subscriber`'s subscription to `filter`; returns true if there was one.
    @discardableResult
    public mutating func remove(_ filter: String, subscriber: Subscriber) -> Bool {
        let (group, inner) = Self.split(filter)
        let removed = Self.remove(
            from: &root, levels: inner.split(separator: "/", omittingEmptySubsequences: false)[...], group: group,
            subscriber: subscriber)
        if removed { count -= 1 }
        return removed
    }

    /// Every subscription whose filter matches `topic`.
    public func match(_ topic: String) -> Matches {
        var matches = Matches()
        let levels = topic.split(separator: "/", omittingEmptySubsequences: false)
        Self.collect(root, levels: levels[...], isFirst: true, dollar: topic.hasPrefix("$"), path: "", into: &matches)
        return matches
    }

    static func split(_ filter: String) -> (group: String?, filter: String) {
        if let parts = Topic.sharedParts(filter), let (name, inner) = parts { return (name, inner) }
        return (nil, filter)
    }

    static func insert(
        into node: inout Node, levels: ArraySlice<Substring>, group: String?, subscriber: Subscriber, options: Options
    ) -> Bool {
        guard let level = levels.first else {
            if let group {
                return node.shared[group, default: [:]].updateValue(options, forKey: subscriber) == nil
            }
            return node.subscribers.updateValue(options, forKey: subscriber) == nil
        }
        return insert(
            into: &node.children[level, default: Node()], levels: levels.dropFirst(), group: group,
            subscriber: subscriber, options: options)
    }

    static func remove(from node: inout Node, levels: ArraySlice<Substring>, group: String?, subscriber: Subscriber)
        -> Bool
    {
        guard let level = levels.first else {
            if let group {
                let removed = node.shared[group]?.removeValue(forKey: subscriber) != nil
                if node.shared[group]?.isEmpty == true { node.shared[group] = nil }
                return removed
            }
            return node.subscribers.removeValue(forKey: subscriber) != nil
        }
        guard var child = node.children[level] else { return false }
        let removed = remove(from: &child, levels: levels.dropFirst(), group: group, subscriber: subscriber)
        node.children[level] = child.isEmpty ? nil : child
        return removed
    }

    static func collect(
        _ node: Node, levels: ArraySlice<Substring>, isFirst: Bool, dollar: Bool, path: String,
        into matches: inout Matches
    ) {
        // `#` matches this level and all below, including none ("a/#" matches "a").
        if let hash = node.children["#"], !(isFirst && dollar) {
            add(hash, path: path + "#", into: &matches)
        }
        guard let level = levels.first else {
            add(node, path: path, into: &matches)
            return
        }
        let rest = levels.dropFirst()
        if let exact = node.children[level] {
            collect(exact, levels: rest, isFirst: false, dollar: dollar, path: path + level + "/", into: &matches)
        }
        if level != "+", let plus = node.children["+"], !(isFirst && dollar) {
            collect(plus, levels: rest, isFirst: false, dollar: dollar, path: path + "+/", into: &matches)
        }
    }

    static func add(_ node: Node, path: String, into matches: inout Matches) {
        for (s, o) in node.subscribers { matches.subscribers[s, default: []].append(o) }
        let filter = path.hasSuffix("/") ? String(path.dropLast()) : path
        for (name, members) in node.shared {
            matches.groups["\(name)/\(filter)", default: [:]].merge(members) { a, _ in a }
        }
    }
}

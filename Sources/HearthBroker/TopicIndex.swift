import HearthMQTT

/// Topic names indexed by level, so a new subscription finds the retained messages its filter
/// matches by walking only the levels the filter names, instead of testing (and sorting) every
/// retained topic: with one retained policy per device, a reconnect storm of N devices otherwise
/// costs N² matches. The matching rules are those of ``Topic/matches(filter:topic:)`` (MQTT 5.0
/// §4.7): `+` is one level, `#` the parent level and everything below, and a filter starting with a
/// wildcard does not match topics starting with `$`.
struct TopicIndex: Sendable {
    struct Node: Sendable {
        var children: [String: Node] = [:]
        var isTopic = false
    }

    private var root = Node()

    mutating func insert(_ topic: String) {
        Self.insert(&root, Self.levels(topic)[...])
    }

    mutating func remove(_ topic: String) {
        Self.remove(&root, Self.levels(topic)[...])
    }

    /// The indexed topics `filter` (without a `$share/` prefix) matches, sorted.
    func matching(_ filter: String) -> [String] {
        var out: [String] = []
        var path: [String] = []
        Self.collect(root, filter: Self.levels(filter)[...], isFirst: true, path: &path, into: &out)
        return out.sorted()
    }

    private static func levels(_ name: String) -> [String] {
        name.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
    }

    private static func insert(_ node: inout Node, _ levels: ArraySlice<String>) {
        guard let first = levels.first else {
            node.isTopic = true
            return
        }
        insert(&node.children[first, default: Node()], levels.dropFirst())
    }

    private static func remove(_ node: inout Node, _ levels: ArraySlice<String>) {
        guard let first = levels.first else {
            node.isTopic = false
            return
        }
        guard var child = node.children[first] else { return }
        remove(&child, levels.dropFirst())
        node.children[first] = child.isTopic || !child.children.isEmpty ? child : nil
    }

    private static func collect(
        _ node: Node, filter: ArraySlice<String>, isFirst: Bool, path: inout [String], into out: inout [String]
    ) {
        guard let level = filter.first else {
            if node.isTopic { out.append(path.joined(separator: "/")) }
            return
        }
        switch level {
        case "#":
            // The parent level too: "a/#" matches "a" (not at the root: "#" has no parent level).
            if !isFirst, node.isTopic { out.append(path.joined(separator: "/")) }
            for (name, child) in node.children where !(isFirst && name.hasPrefix("$")) {
                path.append(name)
                everything(child, path: &path, into: &out)
                path.removeLast()
            }
        case "+":
            for (name, child) in node.children where !(isFirst && name.hasPrefix("$")) {
                path.append(name)
                collect(child, filter: filter.dropFirst(), isFirst: false, path: &path, into: &out)
                path.removeLast()
            }
        default:
            guard let child = node.children[level] else { return }
            path.append(level)
            collect(child, filter: filter.dropFirst(), isFirst: false, path: &path, into: &out)
            path.removeLast()
        }
    }

    private static func everything(_ node: Node, path: inout [String], into out: inout [String]) {
        if node.isTopic { out.append(path.joined(separator: "/")) }
        for (name, child) in node.children {
            path.append(name)
            everything(child, path: &path, into: &out)
            path.removeLast()
        }
    }
}

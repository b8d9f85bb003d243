/// Topic rules (MQTT 5.0 §4.7; 3.1.1 §4.7).
public enum Topic {
    /// The most levels a topic name or filter may have. The specification sets none, but the
    /// broker's topic trees walk one level per step: a PUBLISH of 65,535 `/` would otherwise run
    /// them tens of thousands of levels deep (a stack overflow ends the process). Hearth's own
    /// topics have at most five.
    public static let maximumLevels = 128

    /// A topic name for PUBLISH: at least one character (5.0 allows empty only with a topic alias,
    /// which the caller checks), no `+` or `#`, at most ``maximumLevels`` levels.
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && !name.utf8.contains(where: { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") })
            && hasFewLevels(name)
    }

    static func hasFewLevels(_ topic: String) -> Bool {
        var separators = 0
        for byte in topic.utf8 where byte == UInt8(ascii: "/") {
            separators += 1
            if separators >= maximumLevels { return false }
        }
        return true
    }

    /// A topic filter for SUBSCRIBE/UNSUBSCRIBE: `+` fills a whole level, `#` fills the last level,
    /// and a shared subscription `$share/NAME/FILTER` has a non-empty name without wildcards.
    public static func isValidFilter(_ filter: String) -> Bool {
        guard !filter.isEmpty else { return false }
        if let shared = sharedParts(filter) {
            return shared != nil
        }
        return levelsAreValid(filter)
    }

    /// For `$share/NAME/FILTER`: `(NAME, FILTER)`; `.some(nil)` if shaped as shared but invalid;
    /// nil if not a shared subscription.
    public static func sharedParts(_ filter: String) -> (name: String, filter: String)?? {
        guard filter.hasPrefix("$share/") else { return nil }
        let rest = filter.dropFirst("$share/".count)
        guard let slash = rest.firstIndex(of: "/") else { return .some(nil) }
        let name = String(rest[..<slash])
        let inner = String(rest[rest.index(after: slash)...])
        guard !name.isEmpty, !name.contains("+"), !name.contains("#"), !inner.isEmpty, levelsAreValid(inner) else {
            return .some(nil)
        }
        return .some((name, inner))
    }

    static func levelsAreValid(_ filter: String) -> Bool {
        guard hasFewLevels(filter) else { return false }
        let levels = filter.split(separator: "/", omittingEmptySubsequences: false)
        for (i, level) in levels.enumerated() {
            if level.contains("#") && (level != "#" || i != levels.count - 1) { return false }
            if level.contains("+") && level != "+" { return false }
        }
        return true
    }
}

extension Topic {
    /// Does `filter` (not a shared subscription) match `topic`? Level by level, with the `$` rule.
    /// For many filters at once use the broker's subscription tree.
    public static func matches(filter: String, topic: String) -> Bool {
        let f = filter.split(separator: "/", omittingEmptySubsequences: false)
        let t = topic.split(separator: "/", omittingEmptySubsequences: false)
        if topic.hasPrefix("$"), f.first == "+" || f.first == "#" { return false }
        for (i, level) in f.enumerated() {
            if level == "#" { return true }
            guard i < t.count, level == "+" || level == t[i] else { return false }
        }
        return f.count == t.count
    }
}

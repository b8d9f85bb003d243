import HearthBroker
import HearthMQTT
import Testing

/// The specification's matching rule, written the slow and obvious way, to check the tree against.
func specMatches(filter: String, topic: String) -> Bool {
    let f = filter.split(separator: "/", omittingEmptySubsequences: false)
    let t = topic.split(separator: "/", omittingEmptySubsequences: false)
    if topic.hasPrefix("$"), f[0] == "+" || f[0] == "#" { return false }
    for (i, level) in f.enumerated() {
        if level == "#" { return true }
        guard i < t.count else { return false }
        if level != "+", level != t[i] { return false }
    }
    return f.count == t.count
}

@Suite struct SubscriptionTreeTests {
    @Test func wildcardsFollowTheSpecification() {
        var tree = SubscriptionTree<String, Int>()
        let filters = [
            "sport/tennis/player1/#", "sport/#", "#", "+/tennis/#", "sport/+", "+", "/+", "+/+", "$SYS/#", "$SYS/+",
            "sport/tennis/+",
        ]
        for f in filters { tree.insert(f, subscriber: f, options: 0) }
        let cases: [(String, Set<String>)] = [
            ("sport/tennis/player1", ["sport/tennis/player1/#", "sport/#", "#", "+/tennis/#", "sport/tennis/+"]),
            ("sport/tennis/player1/ranking", ["sport/tennis/player1/#", "sport/#", "#", "+/tennis/#"]),
            ("sport", ["sport/#", "#", "+"]),
            ("sport/", ["sport/#", "#", "sport/+", "+/+"]),
            ("/finance", ["#", "/+", "+/+"]),
            ("$SYS/broker/load", ["$SYS/#"]),
            ("$SYS/uptime", ["$SYS/#", "$SYS/+"]),
        ]
        for (topic, expected) in cases {
            #expect(Set(tree.match(topic).subscribers.keys) == expected, "\(topic)")
        }
    }

    @Test func sharedSubscriptionsAreReportedAsGroups() {
        var tree = SubscriptionTree<String, Int>()
        tree.insert("$share/workers/jobs/+", subscriber: "w1", options: 1)
        tree.insert("$share/workers/jobs/+", subscriber: "w2", options: 2)
        tree.insert("$share/audit/jobs/#", subscriber: "a1", options: 0)
        tree.insert("jobs/+", subscriber: "plain", options: 0)
        let m = tree.match("jobs/42")
        #expect(Set(m.subscribers.keys) == ["plain"])
        #expect(Set(m.groups.keys) == ["workers/jobs/+", "audit/jobs/#"])
        #expect(Set(m.groups["workers/jobs/+"]!.keys) == ["w1", "w2"])
        let removed = tree.remove("$share/workers/jobs/+", subscriber: "w1")
        #expect(removed)
        #expect(Set(tree.match("jobs/42").groups["workers/jobs/+"]!.keys) == ["w2"])
    }

    @Test func insertReplacesAndRemoveCleansUp() {
        var tree = SubscriptionTree<String, Int>()
        let results = [
            tree.insert("a/b", subscriber: "s", options: 1),
            !tree.insert("a/b", subscriber: "s", options: 2),
        ]
        #expect(results == [true, true])
        #expect(tree.match("a/b").subscribers["s"] == [2])
        #expect(tree.count == 1)
        let removals = [
            tree.remove("a/c", subscriber: "s"), tree.remove("a/b", subscriber: "s"),
            tree.remove("a/b", subscriber: "s"),
        ]
        #expect(removals == [false, true, false])
        #expect(tree.count == 0)
        #expect(tree.match("a/b").subscribers.isEmpty)
    }

    /// Random filters and topics over a small alphabet: the tree agrees with the specification's
    /// rule in every case.
    @Test(arguments: [UInt64(7), 8, 9])
    func theTreeAgreesWithTheSpecificationOnRandomInput(seed: UInt64) {
        var rng = Xorshift(state: seed)
        let words = ["a", "b", "", "$x"]
        func level(wild: Bool) -> String {
            let r = Int(rng.next() % 10)
            if wild, r == 0 { return "+" }
            return words[Int(rng.next() % UInt64(words.count))]
        }
        var tree = SubscriptionTree<String, Int>()
        var filters: [String] = []
        for _ in 0..<300 {
            var levels = (0..<Int(1 + rng.next() % 4)).map { _ in level(wild: true) }
            if rng.next() % 4 == 0 { levels.append("#") }
            let filter = levels.joined(separator: "/")
            guard Topic.isValidFilter(filter) else { continue }
            filters.append(filter)
            tree.insert(filter, subscriber: filter, options: 0)
        }
        for _ in 0..<2000 {
            let topic = (0..<Int(1 + rng.next() % 4)).map { _ in level(wild: false) }.joined(separator: "/")
            let expected = Set(filters.filter { specMatches(filter: $0, topic: topic) })
            #expect(Set(tree.match(topic).subscribers.keys) == expected, "topic '\(topic)'")
        }
    }
}

struct Xorshift: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}

import HearthCore
import HearthMQTT
import Testing

@testable import HearthBroker

@Suite struct BrokerTests {
    func broker(_ sessions: [String: AccessPolicy]) -> Broker {
        var b = Broker()
        for (key, policy) in sessions { b.register(key, policy: policy) }
        return b
    }

    func deliveries(_ r: Broker.PublishResult) -> [Broker.Delivery] {
        if case .routed(let d) = r { return d }
        return []
    }

    @Test func messagesReachMatchingSubscribersAtTheLowerQoS() {
        var b = broker(["s1": .development, "s2": .development, "p": .development])
        _ = b.subscribe("s1", Subscribe(packetID: 1, requests: [.init(filter: "home/+/temp", qos: .atMostOnce)]))
        _ = b.subscribe(
            "s2",
            Subscribe(
                packetID: 1, requests: [.init(filter: "home/#", qos: .exactlyOnce)],
                properties: [.subscriptionIdentifier(7)]))
        let d = deliveries(
            b.publish(from: "p", Publish(topic: "home/kitchen/temp", payload: [1], qos: .atLeastOnce, packetID: 9)))
        #expect(d.map(\.sessionKey) == ["s1", "s2"])
        #expect(d[0].publish.qos == .atMostOnce)
        #expect(d[1].publish.qos == .atLeastOnce)
        #expect(d.allSatisfy { $0.publish.packetID == nil }, "the subscriber's flow assigns ids")
        #expect(d[1].publish.properties.subscriptionIdentifiers == [7])
        #expect(deliveries(b.publish(from: "p", Publish(topic: "office/temp", payload: [1]))).isEmpty)
    }

    @Test func subscriptionsBeyondTheQuotaAreRefusedWithQuotaExceeded() {
        var b = Broker(maximumSubscriptionsPerSession: 3)
        b.register("s", policy: .development)
        let first = b.subscribe(
            "s", Subscribe(packetID: 1, requests: (1...5).map { .init(filter: "t/\($0)", qos: .atLeastOnce) })
        ).reasons
        #expect(first == [.grantedQoS1, .grantedQoS1, .grantedQoS1, .quotaExceeded, .quotaExceeded])
        // Re-subscribing to a held filter is not a new subscription; after an unsubscribe there is room.
        #expect(
            b.subscribe("s", Subscribe(packetID: 2, requests: [.init(filter: "t/1", qos: .exactlyOnce)])).reasons == [
                .grantedQoS2
            ])
        _ = b.unsubscribe("s", ["t/2"])
        #expect(
            b.subscribe("s", Subscribe(packetID: 3, requests: [.init(filter: "t/9", qos: .atMostOnce)])).reasons == [
                .success
            ])
        #expect(Set(b.subscriptions(of: "s").keys) == ["t/1", "t/3", "t/9"])
    }

    @Test func noLocalAndRetainAsPublished() {
        var b = broker(["a": .development])
        _ = b.subscribe("a", Subscribe(packetID: 1, requests: [.init(filter: "t", qos: .atLeastOnce, noLocal: true)]))
        #expect(deliveries(b.publish(from: "a", Publish(topic: "t", payload: [1]))).isEmpty)
        var c = broker(["a": .development, "b": .development])
        _ = c.subscribe(
            "a", Subscribe(packetID: 1, requests: [.init(filter: "t", qos: .atLeastOnce, retainAsPublished: true)]))
        _ = c.subscribe("b", Subscribe(packetID: 1, requests: [.init(filter: "t", qos: .atLeastOnce)]))
        let d = deliveries(c.publish(from: nil, Publish(topic: "t", payload: [1], retain: true)))
        #expect(d.first { $0.sessionKey == "a" }?.publish.retain == true)
        #expect(d.first { $0.sessionKey == "b" }?.publish.retain == false)
    }

    @Test func retainedMessagesFollowRetainHandlingAndCanBeDeleted() {
        var b = broker(["s": .development])
        _ = b.publish(from: nil, Publish(topic: "r/1", payload: Array("one".utf8), qos: .atLeastOnce, retain: true))
        _ = b.publish(from: nil, Publish(topic: "r/2", payload: Array("two".utf8), retain: true))
        let first = b.subscribe(
            "s", Subscribe(packetID: 1, requests: [.init(filter: "r/#", qos: .atMostOnce, retainHandling: 1)]))
        #expect(first.retained.map(\.topic) == ["r/1", "r/2"])
        #expect(first.retained.allSatisfy { $0.retain && $0.qos == .atMostOnce })
        let again = b.subscribe(
            "s", Subscribe(packetID: 2, requests: [.init(filter: "r/#", qos: .atMostOnce, retainHandling: 1)]))
        #expect(again.retained.isEmpty, "handling 1: only for a new subscription")
        let never = b.subscribe(
            "s", Subscribe(packetID: 3, requests: [.init(filter: "r/+", qos: .atMostOnce, retainHandling: 2)]))
        #expect(never.retained.isEmpty)
        _ = b.publish(from: nil, Publish(topic: "r/1", payload: [], retain: true))
        #expect(b.retained.keys.sorted() == ["r/2"])
        let shared = b.subscribe(
            "s", Subscribe(packetID: 4, requests: [.init(filter: "$share/g/r/#", qos: .atMostOnce)]))
        #expect(shared.retained.isEmpty, "no retained messages on shared subscriptions")
    }

    @Test func sharedGroupsTakeTurns() {
        var b = broker(["w1": .development, "w2": .development])
        for w in ["w1", "w2"] {
            _ = b.subscribe(
                w, Subscribe(packetID: 1, requests: [.init(filter: "$share/workers/jobs/#", qos: .atLeastOnce)]))
        }
        let receivers = (0..<4).flatMap { i in
            deliveries(b.publish(from: nil, Publish(topic: "jobs/\(i)", payload: [1]))).map(\.sessionKey)
        }
        #expect(receivers == ["w1", "w2", "w1", "w2"])
    }

    @Test func devicesAreIsolatedAndRefusalsCounted() {
        var b = broker([
            "device:A": .device(serial: "AAAAAAAAAAAA"), "device:B": .device(serial: "BBBBBBBBBBBB"),
            "dev:x": .development,
        ])
        let subA = b.subscribe(
            "device:A",
            Subscribe(
                packetID: 1,
                requests: [
                    .init(filter: "devices/AAAAAAAAAAAA/commands/#", qos: .atLeastOnce),
                    .init(filter: "#", qos: .atLeastOnce),
                    .init(filter: "devices/+/commands/#", qos: .atLeastOnce),
                    .init(filter: "$share/g/devices/BBBBBBBBBBBB/commands/#", qos: .atLeastOnce),
                ]))
        #expect(subA.reasons == [.grantedQoS1, .notAuthorized, .notAuthorized, .notAuthorized])
        _ = b.subscribe("dev:x", Subscribe(packetID: 1, requests: [.init(filter: "#", qos: .atLeastOnce)]))
        // A command for B reaches nobody else; one for A reaches A only, never the dev client's '#'.
        #expect(
            deliveries(b.publish(from: nil, Publish(topic: "devices/BBBBBBBBBBBB/commands/lock", payload: [1]))).isEmpty
        )
        #expect(
            deliveries(b.publish(from: nil, Publish(topic: "devices/AAAAAAAAAAAA/commands/lock", payload: [1]))).map(
                \.sessionKey) == ["device:A"])
        // B cannot publish into A's namespace, nor a command to itself.
        #expect(
            b.publish(from: "device:B", Publish(topic: "devices/AAAAAAAAAAAA/telemetry", payload: [1]))
                == .refused(.notAuthorized))
        #expect(
            b.publish(from: "device:B", Publish(topic: "devices/BBBBBBBBBBBB/commands/unlock", payload: [1]))
                == .refused(.notAuthorized))
        #expect(b.refusals["device:A"] == 3)
        #expect(b.refusals["device:B"] == 2)
        // A retained message in a device namespace is not leaked to a dev client's '#'.
        _ = b.publish(from: nil, Publish(topic: "devices/AAAAAAAAAAAA/commands/x", payload: [1], retain: true))
        #expect(
            b.subscribe("dev:x", Subscribe(packetID: 2, requests: [.init(filter: "#", qos: .atMostOnce)])).retained
                .isEmpty)
    }

    @Test func unsubscribeAndRemove() {
        var b = broker(["s": .development])
        _ = b.subscribe(
            "s",
            Subscribe(
                packetID: 1, requests: [.init(filter: "a", qos: .atMostOnce), .init(filter: "b", qos: .atMostOnce)]))
        #expect(b.unsubscribe("s", ["a", "zzz"]) == [.success, .noSubscriptionExisted])
        #expect(deliveries(b.publish(from: nil, Publish(topic: "a", payload: [1]))).isEmpty)
        b.remove("s")
        #expect(deliveries(b.publish(from: nil, Publish(topic: "b", payload: [1]))).isEmpty)
    }
}

/// The retained messages a new subscription gets are exactly those whose topic its filter matches
/// by ``Topic/matches(filter:topic:)``, in topic order, for random topics and filters (with `+`,
/// `#`, empty levels and `$` topics) while retained messages come and go.
@Test func retainedMessagesForASubscriptionAreExactlyTheMatchingOnes() {
    var random = SplitMix64(state: 0x4845_4152_5448)
    let names = ["a", "b", "", "$sys", "c"]
    func topic() -> String {
        (0..<Int.random(in: 1...4, using: &random)).map { _ in names.randomElement(using: &random)! }
            .joined(separator: "/")
    }
    func filter() -> String {
        var levels = (0..<Int.random(in: 1...4, using: &random)).map { _ in
            (names + ["+", "+"]).randomElement(using: &random)!
        }
        if Bool.random(using: &random) { levels[levels.count - 1] = "#" }
        return levels.joined(separator: "/")
    }
    var b = Broker()
    b.register("s", policy: .development)
    var held: Set<String> = []
    var granted = 0
    for round in 0..<400 {
        let t = topic()
        let delete = held.contains(t) && Bool.random(using: &random)
        _ = b.publish(from: nil, Publish(topic: t, payload: delete ? [] : [1], retain: true))
        if delete { held.remove(t) } else { held.insert(t) }
        let f = filter()
        let got = b.subscribe("s", Subscribe(packetID: 1, requests: [.init(filter: f, qos: .atMostOnce)]))
        guard got.reasons == [.success] else { continue }  // development clients may not subscribe to $ topics
        granted += 1
        let expected = held.filter { Topic.matches(filter: f, topic: $0) && !$0.hasPrefix("$") }.sorted()
        #expect(got.retained.map(\.topic) == expected, "round \(round): filter \(f)")
        _ = b.unsubscribe("s", [f])
    }
    #expect(granted > 250)
}

/// The index on its own (the broker's policy hides `$` topics from development clients): the same
/// agreement with ``Topic/matches(filter:topic:)``, `$` topics included.
@Test func theRetainedTopicIndexAgreesWithTheSpecification() {
    var random = SplitMix64(state: 0x5449_4458)
    let names = ["a", "b", "", "$sys", "c"]
    func name(wildcards: Bool) -> String {
        var levels = (0..<Int.random(in: 1...4, using: &random)).map { _ in
            (wildcards ? names + ["+", "+"] : names).randomElement(using: &random)!
        }
        if wildcards, Bool.random(using: &random) { levels[levels.count - 1] = "#" }
        return levels.joined(separator: "/")
    }
    var index = TopicIndex()
    var held: Set<String> = []
    for round in 0..<2000 {
        let t = name(wildcards: false)
        if held.contains(t), Bool.random(using: &random) {
            index.remove(t)
            held.remove(t)
        } else {
            index.insert(t)
            held.insert(t)
        }
        let f = name(wildcards: true)
        #expect(
            index.matching(f) == held.filter { Topic.matches(filter: f, topic: $0) }.sorted(), "round \(round): \(f)")
    }
}

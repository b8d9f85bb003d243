import Foundation
import HearthCore
import Testing

@Suite struct ThrottleTests {
    let policy = ThrottlePolicy(freeFailures: 3, baseDelay: 10, maxDelay: 60, forgetAfter: 3600)
    let t0 = Date(timeIntervalSince1970: 1_000_000)

    @Test func freeFailuresThenDoublingDelaysCappedAtMax() {
        var state = ThrottleState()
        for i in 0..<2 {
            state.recordFailure(now: t0.addingTimeInterval(Double(i)), policy: policy)
            #expect(state.decide(now: t0.addingTimeInterval(Double(i))) == .allowed)
        }
        var now = t0.addingTimeInterval(2)
        var expected = [10, 20, 40, 60, 60]
        for delay in expected {
            state.recordFailure(now: now, policy: policy)
            #expect(state.decide(now: now) == .wait(seconds: delay))
            #expect(state.decide(now: now.addingTimeInterval(Double(delay) - 0.5)) != .allowed)
            now = now.addingTimeInterval(Double(delay))
            #expect(state.decide(now: now) == .allowed)
        }
        expected.removeAll()
    }

    @Test func idleKeysAreForgotten() {
        var state = ThrottleState()
        for i in 0..<5 { state.recordFailure(now: t0.addingTimeInterval(Double(i)), policy: policy) }
        let later = t0.addingTimeInterval(7200)
        #expect(state.isIdle(now: later, policy: policy))
        state.recordFailure(now: later, policy: policy)
        #expect(state.failures == 1)
        #expect(state.decide(now: later) == .allowed)
    }

    @Test func bookSeparatesKeysResetsOnSuccessAndStaysBounded() {
        var book = ThrottleBook(policy: policy, capacity: 100)
        for _ in 0..<3 { book.recordFailure("a", now: t0) }
        #expect(book.decide("a", now: t0) != .allowed)
        #expect(book.decide("b", now: t0) == .allowed)
        book.recordSuccess("a")
        #expect(book.decide("a", now: t0) == .allowed)
        for i in 0..<1000 { book.recordFailure("k\(i)", now: t0) }
        #expect(book.count <= 100)
    }
}

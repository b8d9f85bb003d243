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
        var book = ThrottleBook(
            policy: ThrottlePolicy(
                freeFailures: 3, baseDelay: 10, maxDelay: 60, forgetAfter: 3600, resetOnSuccess: true), capacity: 100)
        for _ in 0..<3 {
            #expect(book.reserve("a", now: t0) == .allowed)
            book.settle("a", failed: true, now: t0)
        }
        #expect(book.admits("a", now: t0) != .allowed)
        #expect(book.admits("b", now: t0) == .allowed)
        let later = t0.addingTimeInterval(10)
        #expect(book.reserve("a", now: later) == .allowed)
        book.settle("a", failed: false, now: later)
        #expect(book.admits("a", now: later) == .allowed)
        #expect(book.count == 0, "a success forgets the key")
        for i in 0..<1000 { book.settle("k\(i)", failed: true, now: t0) }
        #expect(book.count <= 100)
    }
}

/// Throttles as one atomic step: an attempt is reserved before its work and settled after it.
@Suite struct ThrottleReservationTests {
    let policy = ThrottlePolicy(freeFailures: 5, baseDelay: 2, maxDelay: 900, forgetAfter: 86_400, resetOnSuccess: true)
    let t0 = Date(timeIntervalSince1970: 1_000_000)

    @Test func parallelAttemptsReserveExactlyTheFreeOnes() {
        var book = ThrottleBook(policy: policy)
        // 30 attempts arrive before any finishes: 5 are let through, 25 wait.
        let decisions = (0..<30).map { _ in book.reserve("k", now: t0) }
        #expect(decisions.filter { $0 == .allowed }.count == 5)
        for _ in 0..<5 { book.settle("k", failed: true, now: t0) }
        #expect(book.admits("k", now: t0) == .wait(seconds: 2))
        // After the wait, one attempt at a time.
        let later = t0.addingTimeInterval(2)
        #expect(book.reserve("k", now: later) == .allowed)
        #expect(book.reserve("k", now: later) != .allowed)
        book.settle("k", failed: true, now: later)
        #expect(book.admits("k", now: later) == .wait(seconds: 4))
    }

    @Test func aSuccessReleasesItsReservationAndMayForgetTheFailures() {
        var book = ThrottleBook(policy: policy)
        for _ in 0..<4 {
            #expect(book.reserve("k", now: t0) == .allowed)
            book.settle("k", failed: true, now: t0)
        }
        #expect(book.reserve("k", now: t0) == .allowed)
        book.settle("k", failed: false, now: t0)
        #expect(book.count == 0, "a success under a reset-on-success policy forgets the key")
        var keep = ThrottleBook(
            policy: ThrottlePolicy(freeFailures: 2, baseDelay: 2, maxDelay: 900, forgetAfter: 86_400))
        #expect(keep.reserve("k", now: t0) == .allowed)
        keep.settle("k", failed: true, now: t0)
        #expect(keep.reserve("k", now: t0) == .allowed)
        keep.settle("k", failed: false, now: t0)
        #expect(keep.reserve("k", now: t0) == .allowed, "a success frees its slot")
        keep.settle("k", failed: true, now: t0)
        #expect(keep.admits("k", now: t0) != .allowed, "without reset, failures stay")
    }

    @Test func keysWithAttemptsInFlightAreNeverPruned() {
        var book = ThrottleBook(policy: policy, capacity: 10)
        #expect(book.reserve("busy", now: t0) == .allowed)
        for i in 0..<100 { book.settle("k\(i)", failed: true, now: t0) }
        #expect(book.count <= 10)
        book.settle("busy", failed: true, now: t0)
        #expect(book.admits("busy", now: t0) == .allowed)
    }
}

import Foundation
import HearthCore
import Testing

@testable import HearthMonitor

/// Each detector on its own, with an injected clock: the misbehaviour is found within the stated
/// time with the right severity and evidence, and a well-behaved device is never flagged.
@Suite struct DeviceWatchTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    /// A thermostat: a reading every 30 s, a connection a day, all readings valid.
    func wellBehaved(_ watch: inout DeviceWatch, seconds: Int, from start: Date) -> [Detection] {
        var found: [Detection] = []
        found += watch.observe(.connected(source: "203.0.113.7"), at: start)
        for s in stride(from: 0, to: seconds, by: 30) {
            found += watch.observe(.published(bytes: 80), at: start + Double(s))
        }
        return found
    }

    @Test func aWellBehavedDeviceIsNeverFlaggedOverADay() {
        var watch = DeviceWatch(now: t0)
        #expect(wellBehaved(&watch, seconds: 86_400, from: t0).isEmpty)
        // It moves network once, reconnects, and a command fails now and then.
        #expect(watch.observe(.connected(source: "198.51.100.20"), at: t0 + 86_400).isEmpty)
        for i in 0..<20 {
            #expect(watch.observe(i % 3 == 0 ? .commandFailed : .commandSucceeded, at: t0 + 86_400 + Double(i)).isEmpty)
        }
        #expect(watch.observe(.firmware(version: "1.2.0", released: true), at: t0 + 86_401).isEmpty)
    }

    @Test func aFloodIsFoundWithinAWindowOfItsBaseline() throws {
        var watch = DeviceWatch(now: t0)
        _ = wellBehaved(&watch, seconds: 3_600, from: t0)
        let start = t0 + 3_600
        var found: [Detection] = []
        var at = start
        while found.isEmpty, at < start + 60 {
            found = watch.observe(.published(bytes: 80), at: at)
            at += 0.05  // 20 a second, against a baseline of 2 a minute
        }
        let flood = try #require(found.first)
        #expect(flood.kind == .flood && flood.severity == .medium)
        #expect(at.timeIntervalSince(start) < 10, "found within 10 s: \(at.timeIntervalSince(start))")
        #expect(flood.evidence["baselineMessages"] == .number(2))
        // One alert per incident: the flood going on does not raise another within the cooldown.
        for i in 0..<1_000 { #expect(watch.observe(.published(bytes: 80), at: at + Double(i) * 0.05).isEmpty) }
    }

    @Test func bytesFloodAsWellAsMessages() {
        var watch = DeviceWatch(now: t0)
        _ = wellBehaved(&watch, seconds: 3_600, from: t0)
        var found: [Detection] = []
        for i in 0..<20 { found += watch.observe(.published(bytes: 200_000), at: t0 + 3_600 + Double(i)) }
        #expect(found.map(\.kind) == [.flood])
    }

    @Test func garbageProbesAndFirmwareAreFound() {
        var watch = DeviceWatch(now: t0)
        var found: [Detection] = []
        for i in 0..<10 { found += watch.observe(.refusedPayload, at: t0 + Double(i)) }
        #expect(found.map(\.kind) == [.garbage] && found.first?.severity == .medium)
        found = []
        for (i, topic) in ["devices/OTHER/telemetry", "#", "$SYS/broker"].enumerated() {
            found += watch.observe(.refusedTopic(topic), at: t0 + Double(i))
        }
        #expect(found.map(\.kind) == [.probe] && found.first?.severity == .high)
        #expect(found.first?.evidence["lastTopic"] == .string("$SYS/broker"))
        #expect(
            watch.observe(.firmware(version: "9.9.9-evil", released: false), at: t0).map(\.kind) == [.unknownFirmware])
        #expect(watch.observe(.integrityAlert("slot A hash mismatch"), at: t0).map(\.severity) == [.high])
        var failing: [Detection] = []
        for i in 0..<5 { failing += watch.observe(.commandFailed, at: t0 + Double(i)) }
        #expect(failing.map(\.kind) == [.failingCommands])
    }

    @Test func aCloneIsTwoPlacesTakingTurnsNotOneMove() {
        var watch = DeviceWatch(now: t0)
        #expect(watch.observe(.connected(source: "203.0.113.7"), at: t0).isEmpty)
        #expect(watch.observe(.connected(source: "198.51.100.20"), at: t0 + 60).isEmpty, "moving once is normal")
        #expect(watch.observe(.connected(source: "203.0.113.7"), at: t0 + 62).isEmpty)
        let found = watch.observe(.connected(source: "198.51.100.20"), at: t0 + 64)
        #expect(found.map(\.kind) == [.clone] && found.first?.severity == .high)
        #expect(found.first?.evidence["addresses"] == .array(["203.0.113.7", "198.51.100.20"]))
    }

    @Test func churnAndFailedHandshakes() {
        var watch = DeviceWatch(now: t0)
        var found: [Detection] = []
        for i in 0..<20 { found += watch.observe(.connected(source: "203.0.113.7"), at: t0 + Double(i) * 10) }
        #expect(found.map(\.kind) == [.churn] && found.first?.severity == .low)
        found = []
        for i in 0..<5 { found += watch.observe(.handshakeFailed(source: "192.0.2.9"), at: t0 + Double(i)) }
        #expect(found.map(\.kind) == [.failedHandshakes])
    }

    /// The window estimate: exact within a window, fading over the next, empty after a gap; a clock
    /// that jumps far ahead or back does not trap.
    @Test func windowCountsSlideAndSurviveClockJumps() {
        var count = WindowCount(length: 60, now: t0)
        for i in 0..<30 { _ = count.add(at: t0 + Double(i)) }
        #expect(count.estimate(at: t0 + 59) == 30)
        #expect(count.estimate(at: t0 + 90) == 15, "half the previous window still overlaps")
        count.advance(to: t0 + 600)
        #expect(count.estimate(at: t0 + 600) == 0)
        _ = count.add(at: Date.distantFuture)
        _ = count.add(at: t0)
        #expect(count.estimate(at: Date.distantFuture) >= 0)
    }
}

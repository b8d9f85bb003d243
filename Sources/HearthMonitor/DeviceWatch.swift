import Foundation
import HearthCore

/// A count over a sliding window, estimated from two fixed windows (the current one, and the
/// previous one weighted by how much of it still overlaps): constant memory, no timestamps kept.
struct WindowCount: Sendable, Equatable {
    let length: TimeInterval
    var start: Date
    var current: Double = 0
    var previous: Double = 0

    init(length: TimeInterval, now: Date) {
        self.length = length
        start = now
    }

    /// Moves the windows up to `now`; returns the totals of the windows that closed (oldest first).
    @discardableResult
    mutating func advance(to now: Date) -> [Double] {
        var closed: [Double] = []
        guard now.timeIntervalSince(start) >= length else { return closed }
        // Clamped: a clock that jumps years ahead must not overflow the conversion.
        let elapsed = Int(min((now.timeIntervalSince(start) / length).rounded(.down), 1e9))
        if elapsed == 1 {
            closed.append(current)
            previous = current
        } else {
            // A gap of more than a window: the current one closed, then empty ones.
            closed.append(current)
            closed += [Double](repeating: 0, count: min(elapsed - 1, 16))
            previous = 0
        }
        current = 0
        start = start.addingTimeInterval(Double(elapsed) * length)
        return closed
    }

    mutating func add(_ n: Double = 1, at now: Date) -> [Double] {
        let closed = advance(to: now)
        current += n
        return closed
    }

    /// The estimated count over the last `length` seconds (windows that closed since the last
    /// change are accounted for without moving them).
    func estimate(at now: Date) -> Double {
        let into = max(0, now.timeIntervalSince(start) / length)
        if into < 1 { return current + previous * (1 - into) }
        if into < 2 { return current * (2 - into) }
        return 0
    }
}

/// The detectors of one device: pure state, no I/O, time passed in. The gateway keeps one per
/// device it has seen and feeds it ``Observation``s; what it returns is raised as alerts.
/// About 300 bytes a device.
public struct DeviceWatch: Sendable {
    public let thresholds: Thresholds
    var messages: WindowCount
    var bytes: WindowCount
    /// Mean messages and bytes per window, once `warmUpWindows` windows have closed.
    var baseline: (messages: Double, bytes: Double, windows: Int) = (0, 0, 0)
    var refusedPayloads: WindowCount
    var refusedTopics: WindowCount
    var connects: WindowCount
    var switches: WindowCount
    var handshakes: WindowCount
    var lastSource: String?
    var failedCommandsInARow = 0
    var reported: [Detection.Kind: Date] = [:]

    public init(thresholds: Thresholds = Thresholds(), now: Date) {
        self.thresholds = thresholds
        messages = WindowCount(length: thresholds.window, now: now)
        bytes = WindowCount(length: thresholds.window, now: now)
        refusedPayloads = WindowCount(length: thresholds.window, now: now)
        refusedTopics = WindowCount(length: thresholds.window, now: now)
        connects = WindowCount(length: thresholds.churnWindow, now: now)
        switches = WindowCount(length: thresholds.churnWindow, now: now)
        handshakes = WindowCount(length: thresholds.churnWindow, now: now)
    }

    /// Takes one observation; returns what it makes the detectors conclude (usually nothing).
    public mutating func observe(_ observation: Observation, at now: Date) -> [Detection] {
        let t = thresholds
        var found: [Detection] = []
        func report(_ kind: Detection.Kind, _ severity: Severity, _ evidence: [String: JSONValue]) {
            if let last = reported[kind], now.timeIntervalSince(last) < t.cooldown { return }
            reported[kind] = now
            found.append(Detection(kind: kind, severity: severity, evidence: evidence, at: now))
        }
        switch observation {
        case .published(let size):
            let closed = messages.add(at: now)
            let closedBytes = bytes.add(Double(max(0, size)), at: now)
            for (m, b) in zip(closed, closedBytes) { learn(messages: m, bytes: b) }
            let rate = messages.estimate(at: now)
            let volume = bytes.estimate(at: now)
            let ready = baseline.windows >= t.warmUpWindows
            let limit = max(t.floodFloor, ready ? t.floodFactor * baseline.messages : t.floodFloor)
            let byteLimit = max(t.floodBytesFloor, ready ? t.floodFactor * baseline.bytes : t.floodBytesFloor)
            if rate > limit || volume > byteLimit {
                report(
                    .flood, .medium,
                    [
                        "messages": .number(rate.rounded()), "bytes": .number(volume.rounded()),
                        "baselineMessages": .number(ready ? baseline.messages.rounded() : 0),
                        "windowSeconds": .number(t.window),
                    ])
            }
        case .refusedPayload:
            if let n = tally(\.refusedPayloads, at: now, reaching: t.refusedPayloads) {
                report(.garbage, .medium, ["refused": .number(n), "windowSeconds": .number(t.window)])
            }
        case .refusedTopic(let topic):
            if let n = tally(\.refusedTopics, at: now, reaching: t.refusedTopics) {
                report(
                    .probe, .high,
                    [
                        "refused": .number(n), "windowSeconds": .number(t.window),
                        "lastTopic": .string(String(topic.prefix(64))),
                    ])
            }
        case .connected(let source):
            if let last = lastSource, last != source,
                let n = tally(\.switches, at: now, reaching: t.sourceSwitches)
            {
                report(
                    .clone, .high,
                    [
                        "addressChanges": .number(n), "windowSeconds": .number(t.churnWindow),
                        "addresses": .array([.string(last), .string(source)]),
                    ])
            }
            lastSource = source
            if let n = tally(\.connects, at: now, reaching: t.connects) {
                report(.churn, .low, ["connects": .number(n), "windowSeconds": .number(t.churnWindow)])
            }
        case .handshakeFailed(let source):
            if let n = tally(\.handshakes, at: now, reaching: t.failedHandshakes) {
                report(
                    .failedHandshakes, .medium,
                    ["failed": .number(n), "windowSeconds": .number(t.churnWindow), "lastAddress": .string(source)])
            }
        case .firmware(let version, let released):
            if !released { report(.unknownFirmware, .high, ["version": .string(String(version.prefix(64)))]) }
        case .integrityAlert(let what):
            report(.integrity, .high, ["alert": .string(String(what.prefix(128)))])
        case .commandFailed:
            failedCommandsInARow += 1
            if failedCommandsInARow >= t.failingCommands {
                report(.failingCommands, .low, ["inARow": .number(Double(failedCommandsInARow))])
            }
        case .commandSucceeded:
            failedCommandsInARow = 0
        }
        return found
    }

    /// Counts one more in `counter`; the window's count (rounded) once it reaches `limit`.
    mutating func tally(_ counter: WritableKeyPath<DeviceWatch, WindowCount>, at now: Date, reaching limit: Double)
        -> Double?
    {
        _ = self[keyPath: counter].add(at: now)
        let n = self[keyPath: counter].estimate(at: now)
        return n >= limit ? n.rounded() : nil
    }

    /// A window closed: its totals join the baseline (a running mean, then an exponential one, so
    /// the baseline follows slow changes but not a burst, which is ignored when already flagged).
    mutating func learn(messages m: Double, bytes b: Double) {
        let t = thresholds
        if baseline.windows >= t.warmUpWindows, m > t.floodFactor * max(baseline.messages, 1) { return }
        let n = Double(min(baseline.windows, 19))
        baseline.messages = (baseline.messages * n + m) / (n + 1)
        baseline.bytes = (baseline.bytes * n + b) / (n + 1)
        baseline.windows = min(baseline.windows + 1, Int.max - 1)
    }
}

import Foundation
import HearthCore
import HearthStorage

/// The behaviour every `TelemetryStore` and `BrokerStateStore` driver must show, framework-free
/// like ``StoreContract``.
public enum TelemetryContract {
    public typealias Case = (description: String, run: @Sendable (any TelemetryStore) async throws -> Void)

    static func require(_ condition: Bool, _ message: String, line: Int = #line) throws {
        if !condition { throw StoreContract.Failure(description: "TelemetryContract line \(line): \(message)") }
    }

    public static let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    /// Two devices (random serials: valid by construction, no force-try).
    public static let a = randomSerial()
    public static let b = randomSerial()

    static func randomSerial() -> DeviceSerial {
        var rng = SystemRandomNumberGenerator()
        return DeviceSerial.random(using: &rng)
    }

    public static func reading(_ serial: DeviceSerial, _ seq: Int64, at offset: TimeInterval = 0) -> TelemetryReading {
        TelemetryReading(
            serial: serial, sequence: seq, deviceTime: seq % 2 == 0 ? t0 : nil,
            receivedAt: t0.addingTimeInterval(offset), values: ["temperature": .number(Double(seq)), "label": "x\"y"])
    }

    public static let cases: [Case] = [
        (
            "readings are deleted by time range, and fields expire each at its own cutoff",
            { store in
                try await store.append(
                    (1...6).map {
                        TelemetryReading(
                            serial: a, sequence: $0, deviceTime: nil, receivedAt: t0.addingTimeInterval(Double($0)),
                            values: $0 == 2 ? ["humidity": 50] : ["temperature": .number(Double($0)), "humidity": 40])
                    } + [reading(b, 1, at: 1)], refusals: [])
                _ = try await store.series(
                    a, fields: ["temperature"], from: t0, to: t0 + 10, slice: 1, settledBefore: t0 + 10)
                // humidity goes before t0+4, temperature before t0+2: #1 keeps nothing, #2 nothing,
                // #3 its temperature.
                let changed = try await store.expire(a, cutoffs: ["humidity": t0 + 4, "temperature": t0 + 2])
                let left = try await store.readings(a, from: .distantPast, to: .distantFuture, after: nil, limit: 10)
                    .map(\.reading)
                try require(changed == 3, "1, 2 and 3 lose fields: \(changed)")
                try require(left.map(\.sequence) == [3, 4, 5, 6], "emptied readings deleted: \(left.map(\.sequence))")
                try require(left[0].values == ["temperature": 3], "only what is still in its period: \(left[0].values)")
                try require(left[1].values == ["temperature": 4, "humidity": 40], "untouched")
                let series = try await store.series(
                    a, fields: ["temperature"], from: t0, to: t0 + 10, slice: 1, settledBefore: t0 + 10)
                try require(
                    series["temperature"]?.map(\.mean) == [3, 4, 5, 6], "summaries forget what went: \(series)")
                let deleted = try await store.deleteReadings(a, from: t0 + 4, to: t0 + 6)
                try require(deleted == 2, "from inclusive, to exclusive: \(deleted)")
                try require(
                    try await store.readings(a, from: .distantPast, to: .distantFuture, after: nil, limit: 10)
                        .map(\.reading.sequence) == [3, 6], "the range went")
                try require(try await store.latest(b) != nil, "another device untouched")
            }
        ),
        (
            "readings come back as stored, in order, per device",
            { store in
                let added = try await store.append(
                    [reading(a, 1, at: 1), reading(b, 1, at: 1), reading(a, 2, at: 2)], refusals: [])
                try require(added == 3, "three new readings")
                let back = try await store.readings(a, from: .distantPast, to: .distantFuture, after: nil, limit: 10)
                    .map(\.reading)
                try require(back == [reading(a, 1, at: 1), reading(a, 2, at: 2)], "A's readings exactly: \(back)")
                try require(try await store.latest(b)?.reading == reading(b, 1, at: 1), "B's latest")
                try require(try await store.latest(randomSerial()) == nil, "nothing for an unknown device")
            }
        ),
        (
            "a reading sent again is stored once",
            { store in
                try await store.append([reading(a, 1)], refusals: [])
                let added = try await store.append([reading(a, 1), reading(a, 2), reading(a, 2)], refusals: [])
                try require(added == 1, "only seq 2 is new: \(added)")
                try require(try await store.readingCount() == 2, "two rows")
            }
        ),
        (
            "pages and time ranges",
            { store in
                try await store.append((1...25).map { reading(a, $0, at: Double($0)) }, refusals: [])
                let first = try await store.readings(a, from: .distantPast, to: .distantFuture, after: nil, limit: 10)
                let second = try await store.readings(
                    a, from: .distantPast, to: .distantFuture, after: first.last!.position, limit: 10)
                let third = try await store.readings(
                    a, from: .distantPast, to: .distantFuture, after: second.last!.position, limit: 10)
                try require(
                    (first + second + third).map(\.reading.sequence) == Array(1...25), "pages cover everything once")
                let window = try await store.readings(
                    a, from: t0.addingTimeInterval(5), to: t0.addingTimeInterval(8), after: nil, limit: 10)
                try require(
                    window.map(\.reading.sequence) == [5, 6, 7],
                    "from inclusive, to exclusive: \(window.map(\.reading.sequence))")
            }
        ),
        (
            "pages follow the time received, then the order stored; a deleted cursor still pages on",
            { store in
                // 1…8 received at the same instant, 9 stored after them but received earlier (a
                // clock stepped back), 10 later.
                try await store.append(
                    (1...8).map { reading(a, $0, at: 5) } + [reading(a, 9, at: 1), reading(a, 10, at: 9)], refusals: [])
                var pages: [[Int64]] = []
                var after: Int64?
                repeat {
                    let page = try await store.readings(
                        a, from: .distantPast, to: .distantFuture, after: after, limit: 3)
                    pages.append(page.map(\.reading.sequence))
                    after = page.last?.position
                } while after != nil && pages.count < 10
                try require(
                    pages == [[9, 1, 2], [3, 4, 5], [6, 7, 8], [10], []], "in time, ties in stored order: \(pages)")
                try require(try await store.latest(a)?.reading.sequence == 10, "the latest is the last received")
                let first = try await store.readings(a, from: t0 + 5, to: .distantFuture, after: nil, limit: 2)
                try require(first.map(\.reading.sequence) == [1, 2], "from a time")
                // The cursor's reading goes; the next page starts after where it was.
                try require(try await store.deleteReadings(a, from: t0 + 5, to: t0 + 6) == 8, "eight went")
                try await store.append([reading(a, 11, at: 7)], refusals: [])
                let rest = try await store.readings(
                    a, from: t0 + 5, to: .distantFuture, after: first.last!.position, limit: 10)
                try require(
                    rest.map(\.reading.sequence) == [11, 10], "after a deleted cursor: \(rest.map(\.reading.sequence))")
            }
        ),
        (
            "a field's history comes back in slices with count, range and mean; settled slices are kept",
            { store in
                let values: [(Int64, JSONValue)] = [(1, 10), (2, 20), (3, "text"), (4, 40), (5, 50), (6, .bool(true))]
                try await store.append(
                    values.map {
                        TelemetryReading(
                            serial: a, sequence: $0.0, deviceTime: nil,
                            receivedAt: t0.addingTimeInterval(Double($0.0) * 10),
                            values: ["temperature": $0.1, "humidity": 5])
                    }, refusals: [])
                try await store.append(
                    [
                        TelemetryReading(
                            serial: b, sequence: 1, deviceTime: nil, receivedAt: t0.addingTimeInterval(10),
                            values: ["temperature": 99])
                    ], refusals: [])
                // t0 is a multiple of 20 s: slices [t0, +20) {10}, [+20, +40) {20; 30 s is text}, [+40, +60) {40, 50}; the boolean at +60 is not a number.
                func series(_ fields: [String], settled: TimeInterval = 0) async throws -> [String: [TelemetryBucket]] {
                    try await store.series(
                        a, fields: fields, from: t0, to: t0.addingTimeInterval(80), slice: 20,
                        settledBefore: t0.addingTimeInterval(settled))
                }
                let live = try await series(["temperature", "humidity"])
                let slices = live["temperature"] ?? []
                try require(slices.map(\.count) == [1, 1, 2], "counts \(slices)")
                try require(
                    slices[2].min == 40 && slices[2].max == 50 && slices[2].mean == 45
                        && slices[2].start == t0.addingTimeInterval(40), "slice three \(slices[2])")
                try require(
                    live["humidity"]?.map(\.count) == [1, 2, 2, 1], "every field in one call: \(live["humidity"] ?? [])"
                )
                // Settled: the same answer, computed once and kept.
                let settled = try await series(["temperature", "humidity"], settled: 80)
                try require(
                    settled["temperature"] == slices && settled["humidity"] == live["humidity"],
                    "the kept slices are the computed ones")
                try require(
                    try await series(["temperature", "humidity"], settled: 80)["temperature"] == slices, "and again")
                // A reading stored later into a settled slice breaks the caller's promise: it shows
                // only in slices still open, which is how one can tell the settled ones are kept.
                try await store.append(
                    [
                        TelemetryReading(
                            serial: a, sequence: 9, deviceTime: nil, receivedAt: t0.addingTimeInterval(15),
                            values: ["temperature": 1000])
                    ], refusals: [])
                try require(
                    try await series(["temperature", "humidity"], settled: 80)["temperature"] == slices,
                    "settled slices are kept")
                try require(
                    try await series(["temperature", "humidity"], settled: 0)["temperature"]?.first?.max == 1000,
                    "open slices are read afresh")
                try require(
                    try await store.series(
                        a, fields: ["nothing"], from: t0, to: t0.addingTimeInterval(60), slice: 20, settledBefore: t0
                    ).isEmpty, "no such field")
                try require(
                    try await store.series(a, fields: ["temperature"], from: t0, to: t0, slice: 20, settledBefore: t0)
                        .isEmpty, "an empty window")
                for bad in [0, -5, .nan, .infinity] as [TimeInterval] {
                    try require(
                        try await store.series(
                            a, fields: ["temperature"], from: t0, to: t0.addingTimeInterval(60), slice: bad,
                            settledBefore: t0
                        ).isEmpty, "no slices of \(bad) s")
                }
                try require(
                    try await store.series(
                        a, fields: ["x\"') OR 1=1 --"], from: .distantPast, to: .distantFuture, slice: 60,
                        settledBefore: .distantPast
                    ).isEmpty, "a hostile field name is only a name")
                let wide = try await store.series(
                    a, fields: ["temperature"], from: .distantPast, to: .distantFuture, slice: 1,
                    settledBefore: t0.addingTimeInterval(30))
                try require(
                    wide["temperature"]?.reduce(0) { $0 + $1.count } == 5, "extreme windows and 1 s slices: \(wide)")
            }
        ),
        (
            "refusals are counted per device and kind",
            { store in
                try await store.append(
                    [],
                    refusals: [
                        .init(serial: a, kind: .outOfRange, at: t0),
                        .init(serial: a, kind: .outOfRange, at: t0.addingTimeInterval(5)),
                        .init(serial: a, kind: .malformed, at: t0), .init(serial: b, kind: .oversize, at: t0),
                    ])
                let counts = try await store.refusals(a)
                try require(
                    counts == [
                        RefusalCount(kind: .malformed, count: 1, lastAt: t0),
                        RefusalCount(kind: .outOfRange, count: 2, lastAt: t0.addingTimeInterval(5)),
                    ], "\(counts)")
                try require(try await store.readingCount() == 0, "a refusal stores no reading")
            }
        ),
        (
            "offline drops a device reports are kept with the reading and summed",
            { store in
                let carrier = TelemetryReading(
                    serial: a, sequence: 7, deviceTime: t0, receivedAt: t0, values: ["temperature": 20],
                    droppedBefore: 5)
                try await store.append([reading(a, 6), carrier, reading(b, 1)], refusals: [])
                try await store.append(
                    [
                        TelemetryReading(
                            serial: a, sequence: 9, deviceTime: nil, receivedAt: t0, values: [:], droppedBefore: 2)
                    ], refusals: [])
                try require(
                    try await store.latest(a)?.reading.droppedBefore == 2, "the count comes back with its reading")
                try require(try await store.droppedTotal(a) == 7, "5 + 2 for A: \(try await store.droppedTotal(a))")
                try require(try await store.droppedTotal(b) == 0, "none for B")
            }
        ),
    ]

    public typealias BrokerCase = (description: String, run: @Sendable (any BrokerStateStore) async throws -> Void)

    public static let brokerCases: [BrokerCase] = [
        (
            "changes add up; nil removes",
            { store in
                try await store.apply(
                    BrokerStateChange(
                        sessions: ["s1": "{\"a\":1}", "s2": "{}"], retained: ["t/1": [1, 2, 3], "t/2": [4]]))
                let removeS1: String? = nil
                let removeT2: [UInt8]? = nil
                try await store.apply(
                    BrokerStateChange(
                        sessions: ["s1": removeS1, "s2": "{\"b\":2}"], retained: ["t/2": removeT2, "t/3": [5]]))
                let (sessions, retained) = try await store.load()
                try require(sessions == ["s2": "{\"b\":2}"], "\(sessions)")
                try require(retained == ["t/1": [1, 2, 3], "t/3": [5]], "\(retained)")
                try require(try await store.session("s2") == "{\"b\":2}", "one session")
                try require(try await store.session("s1") == nil, "a removed session is gone")
                try require(try await store.session("nobody") == nil, "never stored")
            }
        )
    ]
}

import Foundation
import HearthCore
import HearthFixtures
import HearthGateway
import HearthStorage
import HearthTestSupport
import Synchronization
import Testing

/// A readings store that fails while `failing` is set, as a database does while it restarts: its
/// commits, or (`whilePreparing`) already the sealing, whose keys come from the database too.
final class OutageStore: TelemetryStore {
    let inner: any TelemetryStore
    let failing = Mutex(false)
    let whilePreparing: Bool
    init(_ inner: any TelemetryStore, whilePreparing: Bool = false) {
        self.inner = inner
        self.whilePreparing = whilePreparing
    }

    struct Down: Error {}
    func check() throws { if failing.withLock({ $0 }) { throw Down() } }

    func prepare(_ readings: [TelemetryReading]) async throws -> PreparedReadings {
        if whilePreparing { try check() }
        return try await inner.prepare(readings)
    }
    func append(_ readings: PreparedReadings, refusals: [TelemetryRefusal]) async throws -> Int {
        try check()
        return try await inner.append(readings, refusals: refusals)
    }
    func latest(_ serial: DeviceSerial) async throws -> TelemetryRecord? { try await inner.latest(serial) }
    func readings(_ serial: DeviceSerial, from: Date, to: Date, after: Int64?, limit: Int) async throws
        -> [TelemetryRecord]
    {
        try await inner.readings(serial, from: from, to: to, after: after, limit: limit)
    }
    func series(
        _ serial: DeviceSerial, fields: [String], from: Date, to: Date, slice: TimeInterval, settledBefore: Date
    ) async throws -> [String: [TelemetryBucket]] {
        try await inner.series(serial, fields: fields, from: from, to: to, slice: slice, settledBefore: settledBefore)
    }
    func refusals(_ serial: DeviceSerial) async throws -> [RefusalCount] { try await inner.refusals(serial) }
    func droppedTotal(_ serial: DeviceSerial) async throws -> Int { try await inner.droppedTotal(serial) }
    func readingCount() async throws -> Int { try await inner.readingCount() }
    func deleteReadings(_ serial: DeviceSerial, from: Date, to: Date) async throws -> Int {
        try await inner.deleteReadings(serial, from: from, to: to)
    }
    func expire(_ serial: DeviceSerial, cutoffs: [String: Date]) async throws -> Int {
        try await inner.expire(serial, cutoffs: cutoffs)
    }
}

extension DeviceListenerTests {
    /// `device`'s readings sent with paho-mqtt (QoS 1, MQTT `version`): what paho printed, a JSON
    /// object a line (the CONNACK, each reading's acknowledgement, a DISCONNECT).
    static func pahoPublish(
        _ readings: [String], from device: DeviceFixture.Device, of fixture: DeviceFixture, port: Int,
        version: Int = 5
    ) async throws -> [[String: JSONValue]] {
        let python = try requiredPython(module: "paho.mqtt", package: "paho-mqtt")
        let run = try await ChildProcess.run(
            python,
            [pahoScript, "publish", "--version", "\(version)"] + fixture.pahoArguments(device, port: port) + [
                "--topic", "devices/\(device.serial)/telemetry", "--timeout", "5",
            ] + readings.flatMap { ["--payload", $0] })
        return jsonLines(run.output)
    }

    /// MQTT 3.1.1 has no refusal PUBACK (ARCHITECTURE 20): a refused reading is acknowledged,
    /// dropped and counted, so the device does not resend it for ever; a storage failure closes the
    /// connection with no acknowledgement, so the device does resend (paho-mqtt, 3.1.1).
    @Test func mqtt311RefusalsAreAcknowledgedAndDroppedAndAStoreFailureIsNot() async throws {
        let fixture = try await DeviceFixture()
        let device = fixture.thermostats[0]
        let store = OutageStore(fixture.telemetry)
        try await fixture.withGateway(telemetry: store) { _, port, _ in
            func publish(_ readings: [String]) async throws -> [[String: JSONValue]] {
                try await Self.pahoPublish(readings, from: device, of: fixture, port: port, version: 3)
            }
            let valid: [String: JSONValue] = ["temperature": 20, "heating": false, "target": 21]
            let sent = try await publish([
                reading(1, valid), reading(2, ["temperature": 900, "heating": false, "target": 21]), reading(3, valid),
            ])
            let codes = sent.compactMap { line in line["index"] != nil ? line["rc"] : nil }
            #expect(codes == [0, 0, 0], "each acknowledged, the refused one too: \(sent)")
            #expect(
                try await fixture.telemetry.readings(
                    device.serial, from: .distantPast, to: .distantFuture, after: nil, limit: 10
                ).map(\.reading.sequence) == [1, 3], "the refused reading dropped")
            var refused: [TelemetryRejection: Int] = [:]
            for _ in 0..<200 where refused[.outOfRange] != 1 {
                let counts = try await fixture.telemetry.refusals(device.serial)
                refused = Dictionary(uniqueKeysWithValues: counts.map { ($0.kind, $0.count) })
                if refused[.outOfRange] != 1 { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(refused == [.outOfRange: 1], "and counted")

            store.failing.withLock { $0 = true }
            let during = try await publish([reading(4, valid)])
            #expect(during.contains { $0["connack"] == 0 }, "\(during)")
            #expect(
                during.contains { $0["index"] == 0 && $0["rc"] == .null }, "no acknowledgement: \(during)")
            #expect(during.contains { $0["disconnect"] != nil && $0["disconnect"] != 0 }, "closed: \(during)")
            #expect(try await fixture.telemetry.readingCount() == 2)
        }
    }

    /// The database fails (restarts) under a device's stream (paho-mqtt, MQTT 5.0): nothing it sent
    /// is acknowledged, it is told to back off (DISCONNECT 0x89 server busy with retry-after), a
    /// reconnect meanwhile gets CONNACK 0x89 with retry-after, and once the store works and the
    /// back-off is over the device is taken again and everything it re-sends is stored once.
    @Test(arguments: [false, true])
    func aFailingStoreTellsDevicesToBackOffAndResumesByItself(whilePreparing: Bool) async throws {
        let fixture = try await DeviceFixture()
        let device = fixture.thermostats[0]
        let store = OutageStore(fixture.telemetry, whilePreparing: whilePreparing)
        try await fixture.withGateway(telemetry: store) { _, port, _ in
            let readings = (1...3).map { reading($0, ["temperature": 20, "heating": false, "target": 21]) }
            func publish() async throws -> [[String: JSONValue]] {
                try await Self.pahoPublish(readings, from: device, of: fixture, port: port)
            }
            store.failing.withLock { $0 = true }
            let during = try await publish()
            #expect(during.contains { $0["connack"] == 0 }, "\(during)")
            let told = try #require(during.first { $0["disconnect"] != nil }, "\(during)")
            #expect(told["disconnect"] == 0x89, "\(told)")
            guard case .number(let wait)? = told["retryAfter"] else {
                Issue.record("no retry-after: \(told)")
                return
            }
            #expect((1...10).contains(wait))
            #expect(!during.contains { $0["rc"] == 0 }, "nothing acknowledged while the store fails: \(during)")
            #expect(try await fixture.telemetry.readingCount() == 0)

            // Back at once: refused with the same hint, before any TLS work is wasted on storage.
            let again = try await publish()
            #expect(connackCode(again) == 0x89, "\(again)")

            // The store recovers; within the back-off the device is taken again, by itself.
            store.failing.withLock { $0 = false }
            var accepted: [[String: JSONValue]] = []
            let started = Date()
            while Date().timeIntervalSince(started) < 15 {
                accepted = try await publish()
                if connackCode(accepted) == 0 { break }
                try await Task.sleep(for: .milliseconds(500))
            }
            #expect(accepted.filter { $0["rc"] == 0 }.count == 3, "\(accepted)")
            #expect(
                try await fixture.telemetry.readings(
                    device.serial, from: .distantPast, to: .distantFuture, after: nil, limit: 10
                ).map(\.reading.sequence) == [1, 2, 3])
        }
    }
}

import Foundation
import HearthCore
import HearthDevice
import Testing

/// A fresh folder per test.
func temporaryFolder(_ name: String = "hearth-device") throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(
        at: url, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    return url
}

@Suite("Offline queue (write-ahead log)")
struct OfflineQueueTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    func values(_ n: Int) -> [String: JSONValue] { ["temperature": .number(Double(n))] }

    @Test func survivesReopenInOrderWithAcknowledgedOnesGone() throws {
        let path = try temporaryFolder().appendingPathComponent("queue.log").path
        do {
            let q = try OfflineQueue(path: path)
            for i in 1...5 { try q.append(values: values(i), at: t0.addingTimeInterval(Double(i))) }
            try q.acknowledge(1)
            try q.acknowledge(3)
        }
        let q = try OfflineQueue(path: path)
        #expect(q.readings.map(\.sequence) == [2, 4, 5])
        #expect(q.readings.map(\.values) == [values(2), values(4), values(5)])
        #expect(q.readings.first?.at == Int64(t0.addingTimeInterval(2).timeIntervalSince1970 * 1000))
        // Sequence numbers never repeat, even after everything is acknowledged and compacted.
        for s in [2, 4, 5] { try q.acknowledge(Int64(s)) }
        #expect(try q.append(values: values(6), at: t0).sequence == 6)
        #expect(try OfflineQueue(path: path).append(values: values(7), at: t0).sequence == 7)
    }

    @Test func fileIsPrivate() throws {
        let path = try temporaryFolder().appendingPathComponent("queue.log").path
        let q = try OfflineQueue(path: path)
        try q.append(values: values(1), at: t0)
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }

    @Test func dropsTheOldestAtTheBoundAndRemembersTheCount() throws {
        let path = try temporaryFolder().appendingPathComponent("queue.log").path
        do {
            let q = try OfflineQueue(path: path, policy: QueuePolicy(capacity: 10))
            for i in 1...25 { try q.append(values: values(i), at: t0) }
            #expect(q.count == 10)
            #expect(q.readings.map(\.sequence) == Array(16...25))
            #expect(q.unreportedDrops == 15)
        }
        let q = try OfflineQueue(path: path, policy: QueuePolicy(capacity: 10))
        #expect(q.readings.map(\.sequence) == Array(16...25), "the drops survive a restart")
        #expect(q.unreportedDrops == 15)
        // The server acknowledged the reading that carried the count: reported once.
        try q.acknowledge(16, reportedDrops: 15)
        #expect(q.unreportedDrops == 0)
        #expect(try OfflineQueue(path: path, policy: QueuePolicy(capacity: 10)).unreportedDrops == 0)
        // A later count goes out in the first queued reading's envelope, beside its own fields.
        let next = try #require(q.readings.first)
        #expect(next.sequence == 17)
        let envelope = try JSONValue.parse(next.envelope(dropped: 3))
        guard case .object(let sent) = envelope else {
            Issue.record("not an object: \(envelope)")
            return
        }
        #expect(sent["seq"] == 17 && sent["dropped"] == 3 && sent["values"] != nil, "\(envelope)")
    }

    @Test func aTornTailFromAPowerCutIsCutOffNotMisread() throws {
        let path = try temporaryFolder().appendingPathComponent("queue.log").path
        do {
            let q = try OfflineQueue(path: path)
            for i in 1...3 { try q.append(values: values(i), at: t0) }
        }
        let whole = try Data(contentsOf: URL(fileURLWithPath: path))
        // Cut in the middle of the last record, and separately flip a byte in it.
        for damaged in [
            whole.dropLast(5),
            {
                var d = whole
                d[d.count - 3] ^= 0xFF
                return d
            }(),
        ] {
            try Data(damaged).write(to: URL(fileURLWithPath: path))
            let q = try OfflineQueue(path: path)
            #expect(q.readings.map(\.sequence) == [1, 2])
            #expect(try q.append(values: values(9), at: t0).sequence == 3)
            #expect(
                try OfflineQueue(path: path).readings.map(\.sequence) == [1, 2, 3], "the log is usable after the repair"
            )
            try Data(whole).write(to: URL(fileURLWithPath: path))
        }
    }

    @Test func compactionKeepsWhatIsPending() throws {
        let path = try temporaryFolder().appendingPathComponent("queue.log").path
        let q = try OfflineQueue(path: path, policy: QueuePolicy(capacity: 100_000))
        for i in 1...3000 { try q.append(values: values(i), at: t0) }
        for s in 1...2990 { try q.acknowledge(Int64(s)) }
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
        #expect(size < 200_000, "acknowledged readings are compacted away: \(size) bytes")
        #expect(try OfflineQueue(path: path).readings.map(\.sequence) == Array(2991...3000))
    }

    @Test func envelopeIsWhatTheGatewayValidates() throws {
        let reading = QueuedReading(
            sequence: 12, at: 1_800_000_000_000,
            values: ["temperature": 21.5, "humidity": 40, "heating": false, "target": 21])
        let model = try #require(ProductModel.demoModels().first)
        var rng = SystemRandomNumberGenerator()
        let serial = DeviceSerial.random(using: &rng)
        let parsed = try TelemetryValidator(model: model).validate(
            reading.envelope(dropped: 4), serial: serial, receivedAt: Date())
        #expect(parsed.sequence == 12 && parsed.droppedBefore == 4)
        #expect(parsed.deviceTime == Date(timeIntervalSince1970: 1_800_000_000))
        #expect(throws: TelemetryProblem.self) {
            try TelemetryValidator(model: model).validate(
                Array(
                    #"{"seq":1,"dropped":-1,"values":{"temperature":1,"humidity":1,"heating":true,"target":20}}"#.utf8),
                serial: serial, receivedAt: Date())
        }
    }
}

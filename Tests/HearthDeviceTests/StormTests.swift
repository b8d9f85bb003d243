import Foundation
import HearthCore
import HearthDevice
import HearthFixtures
import Synchronization
import Testing

/// Up to the hard limit of open files: a thousand devices and their server share this process.
func raiseFileLimit() {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    limit.rlim_cur = limit.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

@Suite("Reconnect storm")
struct StormTests {
    /// 1,000 devices lose the server at once. When it returns, their reconnects are spread over
    /// the configured window (full jitter) instead of arriving as one wave, and the gateway keeps
    /// serving a newcomer meanwhile.
    @Test(.timeLimit(.minutes(5)))
    func aThousandDevicesComeBackSpreadOverTheWindow() async throws {
        raiseFileLimit()
        let count = 1000
        let window = 6.0
        let fixture = try await DeviceFixture(devices: count / 2 + 1)
        let port = try await freePort(fixture)
        let uniqueKey = try DeviceUniqueKey(secret: Array(repeating: 7, count: 32))
        let connects = Mutex<[[Date]]>(Array(repeating: [], count: count))
        let members = Array((fixture.thermostats.dropLast() + fixture.locks.dropLast()).prefix(count))
        func agent(_ device: DeviceFixture.Device, seed: UInt64, startupDelay: Double, onConnect: @escaping @Sendable () -> Void) throws -> DeviceAgent {
            let bundle = try DeviceBundle.load(try fixture.bundle(for: device))
            var c = DeviceConfiguration(serial: device.serial, model: device.model, host: "127.0.0.1", port: port)
            c.reconnect = ReconnectPolicy(startupDelay: startupDelay, window: window, cap: 60, stableAfter: 1)
            c.seed = seed
            return try DeviceAgent(
                configuration: c, keyStore: try bundle.keyStore(uniqueKey: uniqueKey), trustRootsPEM: bundle.trustRootsPEM, queuePath: bundle.queuePath,
                onEvent: { if case .connected = $0 { onConnect() } }, onCommand: { _ in .ok }
            )
        }
        let fleet = try members.enumerated().map { i, device in
            try agent(device, seed: UInt64(i + 1), startupDelay: 4) { connects.withLock { $0[i].append(Date()) } }
        }
        let tasks = fleet.map { a in Task { try await a.run() } }
        defer { tasks.forEach { $0.cancel() } }
        func connectedOnce(_ n: Int) -> Int { connects.withLock { $0.filter { $0.count >= n }.count } }

        try await fixture.withGateway({ $0.deviceListener = ("127.0.0.1", port) }) { _, _, _ in
            try await eventually("all \(count) connected", within: 120) { connectedOnce(1) == count }
            try await Task.sleep(for: .seconds(1.5))  // connections become stable
        }
        // The gateway stopped (every connection closed) and comes straight back on the same port;
        // a second `connected` per device below proves each one lost its connection and returned.
        try await fixture.withGateway({ $0.deviceListener = ("127.0.0.1", port) }) { _, _, _ in
            let back = Date()
            // A newcomer during the storm (a second in): how long until its reading is stored?
            try await Task.sleep(for: .seconds(1))
            let probeDevice = fixture.thermostats.last!
            let probe = try agent(probeDevice, seed: 99, startupDelay: 0) {}
            let probeStart = Date()
            try await probe.report(["temperature": 20, "humidity": 40, "heating": false, "target": 20])
            let probeTask = Task { try await probe.run() }
            defer { probeTask.cancel() }
            let watcher = Task { () async throws -> Date in
                try await eventually("the newcomer's reading is stored", within: 30) { try await fixture.telemetry.latest(probeDevice.serial) != nil }
                return Date()
            }
            try await eventually("all reconnected", within: 120) { connectedOnce(2) == count }
            let probeStored = try await watcher.value
            let offsets = connects.withLock { $0.map { $0[1].timeIntervalSince(back) } }.sorted()
            var histogram = [Int](repeating: 0, count: Int(offsets.last!.rounded(.up)) + 1)
            for o in offsets { histogram[max(0, Int(o))] += 1 }
            let p99 = offsets[Int(Double(count) * 0.99) - 1]
            let probeSeconds = probeStored.timeIntervalSince(probeStart)
            print("storm: window \(window) s; reconnects per second after the server returned: \(histogram); p50 \(String(format: "%.2f", offsets[count / 2])) s, p99 \(String(format: "%.2f", p99)) s; newcomer stored after \(String(format: "%.2f", probeSeconds)) s")
            #expect(histogram.max()! <= count * 35 / 100, "no one-second spike holds most devices: \(histogram)")
            #expect(offsets[count / 2] >= window / 4, "half of them wait a good part of the window: p50 \(offsets[count / 2])")
            // Spread over at least the window's worth of seconds (on a loaded machine, more: attempts
            // that met a busy or restarting server back off over twice the window).
            #expect(histogram.filter { $0 >= count / 50 }.count >= Int(window) - 1, "spread over the window: \(histogram)")
            #expect(probeSeconds < 10, "the gateway kept serving a newcomer during the storm: \(probeSeconds) s")
        }
    }
}

import Foundation
import GRDB
import HearthCore
import HearthTestSupport
import Testing

extension HeavyServerTests {
    /// Security monitoring end to end, as processes (issue 16): a server, and for each kind of
    /// misbehaviour one device doing it with `hearth-device misbehave` (its real identity, over
    /// mutual TLS). Each raises its alert, with its severity and evidence, within 10 s of the
    /// misbehaviour ending; high severity quarantines the device; the well-behaved devices beside
    /// them raise nothing.
    @Suite(.serialized) struct MisbehaviourTests {
        static let within: TimeInterval = 10

        @Test func eachMisbehaviourRaisesItsAlertInSecondsAndHighSeverityQuarantines() async throws {
            let dir = temporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let demo = try await DevicePathTests.Demo(data: dir.appendingPathComponent("data"), devices: 3)
            defer { demo.process.signal(SIGKILL) }
            let database = try DatabaseQueue(
                path: demo.data.appendingPathComponent("hearth.sqlite").path,
                configuration: {
                    var c = Configuration()
                    c.readonly = true
                    return c
                }())
            let cases: [(String, String, String, Bool)] = [
                ("flood", "flood", "medium", false), ("garbage", "garbage", "medium", false),
                ("probe", "probe", "high", true), ("clone", "clone", "high", true),
                ("fake-firmware", "unknownFirmware", "high", true),
            ]
            for ((kind, alert, severity, quarantined), bundle) in zip(cases, demo.bundles) {
                let run = try await ChildProcess.run(
                    builtProduct("hearth-device").path,
                    [
                        "misbehave", "--kind", kind, "--bundle", bundle.folder.path, "--mqtt",
                        "127.0.0.1:\(demo.mqttPort)", "--hardware-key", dir.appendingPathComponent("hw-\(kind)").path,
                    ], timeout: 60)
                #expect(run.status == 0, "\(kind): \(run.output)")
                let ended = Date()
                var found: Row?
                while found == nil, Date().timeIntervalSince(ended) < Self.within {
                    found = try await database.read {
                        try Row.fetchOne($0, sql: "SELECT * FROM alerts WHERE serial = ?", arguments: [bundle.serial])
                    }
                    if found == nil { try await Task.sleep(for: .milliseconds(50)) }
                }
                let row = try #require(
                    found, "\(kind): no alert within \(Self.within) s\n\(demo.process.text.suffix(2000))")
                print(
                    "misbehave \(kind): '\(row["kind"] as String)' alert \(String(format: "%.2f", Date().timeIntervalSince(ended))) s after it ended"
                )
                #expect(row["kind"] as String == alert, "\(kind)")
                #expect(row["severity"] as String == severity, "\(kind)")
                let evidence = try JSONValue.parse(Array((row["evidence"] as String).utf8))
                #expect(evidence != .object([:]), "\(kind): evidence \(evidence)")
                if kind == "clone", case .object(let e) = evidence {
                    #expect(
                        e["addresses"] == .array(["127.0.0.2", "127.0.0.1"])
                            || e["addresses"] == .array(["127.0.0.1", "127.0.0.2"]), "\(evidence)")
                }
                if kind == "fake-firmware", case .object(let e) = evidence { #expect(e["version"] == "99.0.0") }
                // Quarantined at once when high (within 10 s of the alert); its audit entry is written
                // with the alert.
                var held: Int64?
                for attempt in 0..<200 where held == nil && (quarantined || attempt == 0) {
                    if attempt > 0 { try await Task.sleep(for: .milliseconds(50)) }
                    held = try await database.read {
                        try Int64.fetchOne(
                            $0, sql: "SELECT quarantined_at FROM devices WHERE serial = ?", arguments: [bundle.serial])
                    }
                }
                #expect((held != nil) == quarantined, "\(kind): quarantined \(held != nil)")
            }
            // Exactly one alert per misbehaving device, none for the sixth device nor any other.
            let all = try await database.read {
                try Row.fetchAll($0, sql: "SELECT serial, kind FROM alerts").map {
                    "\($0["serial"] as String) \($0["kind"] as String)"
                }
            }
            #expect(all.count == cases.count, "\(all)")
            #expect(!all.contains { $0.hasPrefix(demo.bundles[5].serial) })
        }
    }
}

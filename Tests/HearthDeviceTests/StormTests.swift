import Foundation
import HearthCore
import HearthSQLite
import HearthServer
import HearthStorage
import HearthTestSupport
import Testing

/// 1,000 devices lose the server at once; when it returns, their reconnects are spread over the
/// configured window (full jitter) instead of arriving as one wave, and the gateway keeps serving a
/// newcomer meanwhile.
///
/// The server (`hearth serve`) and the fleet (`hearth-device fleet`, 1,000 agents in one process)
/// run as child processes, as in production: thousands of sockets inside the test process made
/// Foundation's `Process.run` crash in concurrently running tests.
/// The suites that run many processes or connections at once: one at a time, so together they do
/// not starve the other tests of a two-core machine.
@Suite(.serialized) enum HeavyProcessTests {}

extension HeavyProcessTests {
    @Suite("Reconnect storm")
    struct StormTests {
        static let count = 1000
        static let window = 6.0

        static func start(_ arguments: [String], data: String) throws -> ChildProcess {
            try ChildProcess(
                builtProduct("hearth"),
                ["serve", "--data", data, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"] + arguments)
        }

        /// When each device connected, in order, from the fleet's `--log-connects` lines.
        static func connects(_ fleet: ChildProcess) -> [Int: [Double]] {
            var out: [Int: [Double]] = [:]
            for line in fleet.text.split(separator: "\n") where line.hasPrefix(#"{"event":"connected""#) {
                guard case .object(let o)? = try? JSONValue.parse(Array(line.utf8)),
                    case .number(let device)? = o["device"], case .number(let at)? = o["at"]
                else { continue }
                out[Int(device), default: []].append(at)
            }
            return out
        }

        @Test(.timeLimit(.minutes(6)))
        func aThousandDevicesComeBackSpreadOverTheWindow() async throws {
            let mosquittoPub = try requiredTool("mosquitto_pub", package: "mosquitto-clients")
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("hearth-storm-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: dir) }
            let data = dir.appendingPathComponent("data").path
            let out = dir.appendingPathComponent("out").path
            let prepared = try await ChildProcess.run(
                builtProduct("hearth").path,
                ["bench", "prepare", "--data", data, "--out", out, "--devices", "\(Self.count + 1)"])
            #expect(prepared.status == 0, "\(prepared.output)")
            let bundles = URL(fileURLWithPath: out).appendingPathComponent("bundles")
            let probe = try #require(try FileManager.default.contentsOfDirectory(atPath: bundles.path).sorted().last)

            var server = try Self.start(["--mqtt-listen", "127.0.0.1:0"], data: data)
            defer { server.signal(SIGKILL) }
            #expect(try await server.wait(for: "MQTT device listener (mutual TLS"), "\(server.text)")
            let portText = try #require(
                server.text.range(of: #"mqtts://127\.0\.0\.1:\d+"#, options: .regularExpression).map {
                    server.text[$0].split(separator: ":").last.map(String.init)
                } ?? nil)
            let port = try #require(Int(portText))

            let fleet = try ChildProcess(
                builtProduct("hearth-device"),
                [
                    "fleet", "--bundles", bundles.path, "--count", "\(Self.count)", "--hardware-key",
                    dir.appendingPathComponent("hw.key").path,
                    "--mqtt", "127.0.0.1:\(port)", "--report-every", "3600", "--startup-delay", "3",
                    "--reconnect-window", "\(Self.window)", "--log-connects",
                ])
            defer { fleet.signal(SIGKILL) }
            let deadline = Date().addingTimeInterval(180)
            while Self.connects(fleet).count < Self.count, Date() < deadline {
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(Self.connects(fleet).count == Self.count, "all connected once: \(fleet.text.suffix(500))")
            try await Task.sleep(for: .seconds(1.5))  // connections become stable

            // The server goes away (every connection closes) and comes straight back on the same port.
            server.signal(SIGTERM)
            _ = try await server.waitForExit()
            server = try Self.start(["--mqtt-listen", "127.0.0.1:\(port)"], data: data)
            #expect(try await server.wait(for: "MQTT device listener (mutual TLS"), "\(server.text)")
            let back = Date().timeIntervalSince1970

            // A newcomer a second into the storm: how long until its reading is acknowledged?
            try await Task.sleep(for: .seconds(1))
            let p = bundles.appendingPathComponent(probe)
            let probeStart = Date()
            let published = try await ChildProcess.run(
                mosquittoPub,
                [
                    "-h", "127.0.0.1", "-p", "\(port)", "--cafile", p.appendingPathComponent("server-root-ca.pem").path,
                    "--cert", p.appendingPathComponent("device.pem").path, "--key",
                    p.appendingPathComponent("device.key.pem").path,
                    "-V", "mqttv5", "-q", "1", "-t", "devices/\(probe)/telemetry", "-m",
                    #"{"seq":1,"values":{"temperature":20,"heating":false,"target":20}}"#,
                ], timeout: 60)
            let probeSeconds = Date().timeIntervalSince(probeStart)
            #expect(published.status == 0, "the newcomer was served: \(published.output)")

            while Self.connects(fleet).values.filter({ $0.count >= 2 }).count < Self.count,
                Date() < deadline.addingTimeInterval(120)
            {
                try await Task.sleep(for: .milliseconds(200))
            }
            let second = Self.connects(fleet).values.compactMap { $0.count >= 2 ? $0[1] - back : nil }.sorted()
            try #require(second.count == Self.count, "every device reconnected: \(second.count)")
            var histogram = [Int](repeating: 0, count: Int(max(0, second.last!).rounded(.up)) + 1)
            for o in second { histogram[max(0, Int(o))] += 1 }
            let p50 = second[Self.count / 2]
            let p99 = second[Self.count * 99 / 100 - 1]
            print(
                "storm: window \(Self.window) s; reconnects per second after the server returned: \(histogram); p50 \(String(format: "%.2f", p50)) s, p99 \(String(format: "%.2f", p99)) s; newcomer acknowledged after \(String(format: "%.2f", probeSeconds)) s"
            )
            #expect(histogram.max()! <= Self.count * 35 / 100, "no one-second spike holds most devices: \(histogram)")
            #expect(p50 >= Self.window / 4, "half of them wait a good part of the window: p50 \(p50)")
            // Spread over at least the window's worth of seconds (on a loaded machine, more: attempts
            // that met the restarting server back off over twice the window).
            #expect(
                histogram.filter { $0 >= Self.count / 50 }.count >= Int(Self.window) - 1,
                "spread over the window: \(histogram)")
            #expect(probeSeconds < 10, "the gateway kept serving a newcomer during the storm: \(probeSeconds) s")
            fleet.signal(SIGTERM)
            #expect(try await fleet.waitForExit() == 0)
            server.signal(SIGTERM)
            _ = try await server.waitForExit()
            // Guideline 10 without false positives: 1,000 well-behaved devices through a storm
            // raise no security alert.
            let folder = try DataFolder.open(path: data)
            let store = try SQLiteStore(path: folder.databasePath, sealer: KEKAuditSealer(kek: folder.kek))
            let alerts = try await store.alerts(in: Set(AlertRecord.State.allCases), limit: 100)
            #expect(alerts.isEmpty, "no alert for a well-behaved fleet: \(alerts.map { "\($0.serial) \($0.kind)" })")
        }
    }
}

import Foundation
import GRDB
import HearthCore
import HearthSQLite
import HearthServer
import HearthTestSupport
import Testing

/// The whole device path through the `hearth` executable: devices over mutual TLS (paho-mqtt with
/// a factory bundle), readings stored, owners reading them and sending commands over HTTPS.
@Suite struct DevicePathTests {
    struct Bundle {
        let serial: String
        let model: String
        let setupCode: String
        let folder: URL
        func paho(port: Int) -> [String] {
            [
                "--host", "127.0.0.1", "--port", "\(port)", "--cafile",
                folder.appendingPathComponent("server-root-ca.pem").path,
                "--cert", folder.appendingPathComponent("device.pem").path, "--key",
                folder.appendingPathComponent("device.key.pem").path,
            ]
        }
    }

    /// A running demo: its data folder, HTTPS base URL, MQTT device port and device bundles.
    struct Demo {
        let process: HearthProcess
        let data: URL
        let base: String
        let mqttPort: Int
        let bundles: [Bundle]

        init(data: URL, devices: Int = 1) async throws {
            process = try HearthProcess([
                "demo", "--provision-only", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                "--mqtt-listen", "127.0.0.1:0", "--devices",
                "\(devices)", "--data", data.path,
            ])
            guard try await process.wait(for: "Press Ctrl-C to stop.") else {
                throw TestFailure("the demo did not start: \(process.text)")
            }
            self.data = data
            base = try #require(process.baseURL)
            let match = try #require(process.text.range(of: #"mqtts://127\.0\.0\.1:\d+"#, options: .regularExpression))
            mqttPort = Int(process.text[match].split(separator: ":").last!)!
            let folder = data.appendingPathComponent("bundles")
            bundles = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted().map { name in
                let dir = folder.appendingPathComponent(name)
                let json = try JSONValue.parse(Array(try Data(contentsOf: dir.appendingPathComponent("bundle.json"))))
                guard case .object(let o) = json, case .string(let serial)? = o["serial"],
                    case .string(let model)? = o["model"], case .string(let code)? = o["setupCode"]
                else {
                    throw TestFailure("bad bundle.json")
                }
                return Bundle(serial: serial, model: model, setupCode: code, folder: dir)
            }
        }

        func bundle(_ model: String) -> Bundle { bundles.first { $0.model == model }! }

        /// An HTTPS call with curl: status and parsed JSON body.
        func call(_ curl: String, _ method: String, _ path: String, token: String? = nil, body: String? = nil)
            async throws -> (status: Int, json: JSONValue?)
        {
            var args = [
                "-s", "-X", method, "-w", "\n%{http_code}", "--cacert", data.appendingPathComponent("root-ca.pem").path,
            ]
            if let token { args += ["-H", "authorization: Bearer \(token)"] }
            if let body { args += ["-H", "content-type: application/json", "--data-binary", body] }
            let r = try await runTool(curl, args + [base + path])
            let lines = r.output.split(separator: "\n", omittingEmptySubsequences: false)
            let status = Int(lines.last ?? "") ?? 0
            return (status, try? JSONValue.parse(Array(lines.dropLast().joined(separator: "\n").utf8)))
        }

        /// Creates the operator through the one-time set-up link the demo printed; the bearer token.
        func operatorToken(_ curl: String) async throws -> String {
            let link = try #require(process.text.components(separatedBy: "\n").first { $0.contains("/setup/") })
            let token = try #require(link.components(separatedBy: "/setup/").last?.prefix { !$0.isWhitespace })
            let credentials = #"{"email":"op@example.com","password":"operator passphrase that is long"}"#
            let setup = #"{"token":"\#(token)","email":"op@example.com","password":"operator passphrase that is long"}"#
            await #expect(try call(curl, "POST", "/api/v1/setup", body: setup).status == 201)
            guard case .object(let o)? = try await call(curl, "POST", "/api/v1/sessions", body: credentials).json,
                case .string(let bearer)? = o["token"]
            else { throw TestFailure("no operator session") }
            return bearer
        }

        /// Signs up and signs in an owner; returns the bearer token.
        func owner(_ curl: String, _ email: String) async throws -> String {
            let credentials = #"{"email":"\#(email)","password":"a long owner passphrase for tests"}"#
            await #expect(try call(curl, "POST", "/api/v1/accounts", body: credentials).status == 201)
            let session = try await call(curl, "POST", "/api/v1/sessions", body: credentials)
            guard case .object(let o)? = session.json, case .string(let token)? = o["token"] else {
                throw TestFailure("no token: \(session)")
            }
            return token
        }
    }

    /// Revocation in both documented forms: the API ends a live connection at once (DISCONNECT
    /// 0x87), the offline CLI at the device's next connect (CONNACK 0x87); the gateway refuses both
    /// devices from then on.
    @Test func revocationThroughTheAPIEndsTheLiveConnectionAndTheCLIsTheNextConnect() async throws {
        let curl = try curlPath()
        let python = try requiredPython(module: "paho.mqtt", package: "paho-mqtt")
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let demo = try await Demo(data: dir, devices: 2)
        defer { demo.process.signal(SIGKILL) }
        let (thermostat, lock) = (demo.bundle("thermostat-t1"), demo.bundle("lock-l1"))
        let op = try await demo.operatorToken(curl)
        let owner = try await demo.owner(curl, "ann@example.com")
        func connected(_ bundle: Bundle) async throws -> ChildProcess {
            let device = try ChildProcess(
                python,
                [pahoScript, "answer"] + bundle.paho(port: demo.mqttPort) + [
                    "--serial", bundle.serial, "--count", "1", "--timeout", "60",
                ])
            #expect(try await device.wait(for: "\"ready\"", timeout: 30), "\(device.text)")
            return device
        }

        // The API: only operators; the live connection ends with 0x87 "not authorized".
        let live = try await connected(thermostat)
        defer { live.signal(SIGKILL) }
        let revoke = "/api/v1/devices/\(thermostat.serial)/revoke"
        await #expect(try demo.call(curl, "POST", revoke).status == 401)
        await #expect(try demo.call(curl, "POST", revoke, token: owner).status == 403)
        await #expect(try demo.call(curl, "POST", "/api/v1/devices/NOTASERIAL/revoke", token: op).status == 404)
        #expect(try await live.wait(for: "\"ready\"", timeout: 1) && !live.text.contains("disconnect"))
        let revoked = try await demo.call(curl, "POST", revoke, token: op)
        #expect(
            revoked.status == 200
                && revoked.json == ["serial": .string(thermostat.serial), "revoked": true, "changed": true])
        #expect(try await live.wait(for: #"{"disconnect": 135}"#, timeout: 10), "\(live.text)")
        await #expect(try demo.call(curl, "POST", revoke, token: op).json?["changed"] == false, "once")

        // The CLI: the live connection stays (documented), the next connect is refused.
        let held = try await connected(lock)
        defer { held.signal(SIGKILL) }
        let cli = try await HearthProcess.run(["device", "revoke", "--data", demo.data.path, lock.serial])
        #expect(cli.status == 0, "\(cli.output)")
        try await Task.sleep(for: .seconds(1))
        #expect(!held.text.contains("disconnect"), "the CLI does not reach the running gateway: \(held.text)")
        for bundle in [thermostat, lock] {
            let again = try await ChildProcess.run(
                python,
                [pahoScript, "publish"] + bundle.paho(port: demo.mqttPort) + [
                    "--topic", "devices/\(bundle.serial)/telemetry", "--payload", #"{"seq":1,"values":{}}"#,
                    "--timeout", "10",
                ], timeout: 30)
            #expect(again.output.contains(#""connack": 135"#), "\(bundle.model) is refused: \(again.output)")
        }
    }

    struct TestFailure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    static func rcs(_ output: String) -> [Int?] {
        output.split(separator: "\n").compactMap { line -> Int?? in
            guard let value = try? JSONValue.parse(Array(line.utf8)), case .object(let o) = value, o["index"] != nil
            else { return nil }
            if case .number(let d)? = o["rc"] { return .some(Int(d)) }
            return .some(nil)
        }
    }

    @Test func everyAcknowledgedReadingSurvivesKill9() async throws {
        let python = try requiredPython(module: "paho.mqtt", package: "paho-mqtt")
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let demo = try await Demo(data: dir)
        let thermostat = demo.bundle("thermostat-t1")
        let payloads = (1...3000).map {
            #"{"seq": \#($0), "values": {"temperature": 20.5, "heating": true, "target": 21}}"#
        }
        // One reading in flight at a time, each sent once the last is acknowledged (a commit each,
        // ~10 a second in a debug build): minutes of stream, which the kill interrupts.
        let device = try ChildProcess(
            python,
            [pahoScript, "publish"] + thermostat.paho(port: demo.mqttPort) + [
                "--topic", "devices/\(thermostat.serial)/telemetry", "--timeout", "5", "--wait-each",
            ] + payloads.flatMap { ["--payload", $0] })
        #expect(try await device.wait(for: "connack", timeout: 30), "\(device.text)")
        // Killed once 50 readings are committed (read from the file, as another process): mid-stream.
        let telemetry = try DatabaseQueue(
            path: dir.appendingPathComponent("telemetry.sqlite").path,
            configuration: {
                var c = Configuration()
                c.readonly = true
                return c
            }())
        var committed = 0
        for _ in 0..<600 where committed < 50 {
            try await Task.sleep(for: .milliseconds(50))
            committed = try await telemetry.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM readings") ?? 0 }
        }
        #expect(committed >= 50, "the stream never got going: \(committed) stored")
        demo.process.signal(SIGKILL)
        _ = try await demo.process.waitForExit(timeout: 10)
        _ = try await device.waitForExit(timeout: 60)
        let codes = Self.rcs(device.text)
        #expect(codes.count == payloads.count, "\(device.text.suffix(500))")
        let acknowledged = Set(codes.enumerated().compactMap { $0.element == 0 ? Int64($0.offset + 1) : nil })
        #expect(
            !acknowledged.isEmpty && acknowledged.count < payloads.count,
            "the kill landed mid-stream: \(acknowledged.count) of \(payloads.count) acknowledged")
        // After the crash: open the telemetry file as a restarted server would (readings sealed under
        // their owner's key, the keys in the main database under the folder's KEK).
        let folder = try DataFolder.open(path: dir.path)
        let main = try SQLiteStore(path: folder.databasePath, sealer: KEKAuditSealer(kek: folder.kek))
        let store = try SQLiteTelemetryStore(
            path: folder.telemetryPath, keys: DataKeys(store: main, kek: folder.kek))
        let stored = Set(
            try await store.readings(
                try DeviceSerial(thermostat.serial), from: .distantPast, to: .distantFuture, after: nil, limit: 100_000
            ).map(\.reading.sequence))
        #expect(
            acknowledged.isSubset(of: stored),
            "acknowledged but lost: \(acknowledged.subtracting(stored).sorted().prefix(20))")
    }

    @Test func ownersReadTheirTelemetryAndSendCommandsOverHTTPS() async throws {
        let curl = try curlPath()
        let python = try requiredPython(module: "paho.mqtt", package: "paho-mqtt")
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let demo = try await Demo(data: dir)
        defer { demo.process.signal(SIGKILL) }
        let thermostat = demo.bundle("thermostat-t1")
        let owner = try await demo.owner(curl, "owner@example.com")
        let stranger = try await demo.owner(curl, "stranger@example.com")
        await #expect(
            try demo.call(
                curl, "POST", "/api/v1/devices/claim", token: owner,
                body: #"{"serial":"\#(thermostat.serial)","setupCode":"\#(thermostat.setupCode)"}"#
            ).status == 201)
        let telemetry = "/api/v1/devices/\(thermostat.serial)/telemetry"
        await #expect(try demo.call(curl, "GET", telemetry + "/latest", token: owner).json == ["reading": .null])

        let readings = (1...3).map {
            #"{"seq": \#($0), "at": 1800000000000, "values": {"temperature": \#(20 + $0), "heating": false, "target": 21}}"#
        }
        let published = try await ChildProcess.run(
            python,
            [pahoScript, "publish"] + thermostat.paho(port: demo.mqttPort) + [
                "--topic", "devices/\(thermostat.serial)/telemetry",
            ] + readings.flatMap { ["--payload", $0] })
        #expect(Self.rcs(published.output) == [0, 0, 0], "\(published.output)")

        let latest = try await demo.call(curl, "GET", telemetry + "/latest", token: owner)
        guard case .object(let o)? = latest.json, case .object(let reading)? = o["reading"] else {
            Issue.record("\(latest)")
            return
        }
        #expect(
            reading["seq"] == 3
                && reading["values"] == ["temperature": 23, "heating": false, "target": 21])
        #expect(reading["deviceTime"] == "2027-01-15T08:00:00.000Z")
        // Paged: two, then the rest after the cursor.
        let page1 = try await demo.call(curl, "GET", telemetry + "?limit=2", token: owner)
        guard case .object(let p1)? = page1.json, case .array(let items1)? = p1["readings"],
            case .string(let next)? = p1["next"]
        else {
            Issue.record("\(page1)")
            return
        }
        #expect(items1.count == 2)
        let page2 = try await demo.call(curl, "GET", telemetry + "?limit=2&after=\(next)", token: owner)
        guard case .object(let p2)? = page2.json, case .array(let items2)? = p2["readings"] else {
            Issue.record("\(page2)")
            return
        }
        #expect(items2.count == 1 && p2["next"] == .null)
        // A time range that excludes everything.
        let empty = try await demo.call(
            curl, "GET", telemetry + "?from=2001-01-01T00:00:00Z&to=2001-01-02T00:00:00Z", token: owner)
        #expect(empty.json == ["readings": [], "next": .null])
        // Bad queries, someone else's device, no token.
        for query in [
            "?limit=0", "?limit=5000", "?limit=abc", "?from=yesterday", "?after=-1",
            "?from=2030-01-01T00:00:00Z&to=2020-01-01T00:00:00Z",
        ] {
            await #expect(try demo.call(curl, "GET", telemetry + query, token: owner).status == 400, "\(query)")
        }
        await #expect(try demo.call(curl, "GET", telemetry + "/latest", token: stranger).status == 404)
        await #expect(
            try demo.call(curl, "GET", "/api/v1/devices/NOTASERIAL/telemetry/latest", token: owner).status == 404)
        await #expect(try demo.call(curl, "GET", telemetry + "/latest").status == 401)

        // Commands: offline first, then through a paho device that answers.
        let commands = "/api/v1/devices/\(thermostat.serial)/commands"
        let offline = try await demo.call(
            curl, "POST", commands, token: owner, body: #"{"name":"setTarget","parameters":{"target":21}}"#)
        #expect(offline.status == 409 && offline.json.map { "\($0)" }?.contains("device_offline") == true, "\(offline)")
        let device = try ChildProcess(
            python,
            [pahoScript, "answer"] + thermostat.paho(port: demo.mqttPort) + [
                "--serial", thermostat.serial, "--count", "1", "--timeout", "20",
            ])
        #expect(try await device.wait(for: "\"ready\"", timeout: 20), "\(device.text)")
        // Invalid commands are refused by the server and never reach the device.
        for body in [
            #"{"name":"setTarget","parameters":{"target":99}}"#, #"{"name":"setTarget","parameters":{"target":"hot"}}"#,
            #"{"name":"setTarget"}"#, #"{"name":"selfDestruct"}"#,
            #"{"name":"setTarget","parameters":{"target":21,"extra":1}}"#,
        ] {
            // Schema-valid, refused against the thermostat's model: 422.
            await #expect(try demo.call(curl, "POST", commands, token: owner, body: body).status == 422, "\(body)")
        }
        await #expect(
            try demo.call(
                curl, "POST", commands, token: stranger, body: #"{"name":"setTarget","parameters":{"target":21}}"#
            ).status == 404)
        let answered = try await demo.call(
            curl, "POST", commands, token: owner, body: #"{"name":"setTarget","parameters":{"target":21.5}}"#)
        #expect(answered.status == 200 && answered.json == ["status": "ok", "detail": "done by paho"], "\(answered)")
        _ = try await device.waitForExit(timeout: 20)
        let received = device.text.split(separator: "\n").filter { $0.contains("\"command\"") }
        #expect(received.count == 1 && received[0].contains("21.5"), "\(device.text)")
    }
}

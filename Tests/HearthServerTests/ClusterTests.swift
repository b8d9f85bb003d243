import Foundation
import HearthCore
import HearthFixtures
import HearthPostgres
import HearthServer
import HearthTestSupport
import Testing

/// Several `hearth serve` nodes sharing one PostgreSQL database (`--database`), each a full server
/// on loopback, as behind a TCP load balancer.
@Suite struct ClusterTests {
    /// A node of the deployment in `data` on `database`.
    static func node(_ data: String, _ database: [String], _ extra: [String] = []) async throws -> HearthProcess {
        let server = try HearthProcess(
            [
                "serve", "--data", data, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--mqtt-listen",
                "127.0.0.1:0",
            ] + database + extra)
        #expect(try await server.wait(for: "Clients verify it"), "\(server.text)")
        return server
    }

    /// An account made on one node signs in on the other; a device claimed through one is the
    /// owner's on both; a node killed with SIGKILL loses nothing the other (or its restart) reads;
    /// and the one audit chain both wrote verifies, and shows an edit made in the database.
    @Test(.enabled(if: TestPostgres.available)) func twoNodesServeOneDeployment() async throws {
        guard let curl = try curlPath() else { return }
        try await TestPostgres.withAddress { address, passwordFile in
            let database = ["--database", address] + (passwordFile.map { ["--database-password-file", $0] } ?? [])
            let dir = temporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let data = try await dataFolder(in: dir, with: ProductModel.demoModels()[1], extra: database)
            let (serial, code) = try await provisionedLock(data: data, in: dir, count: 2, extra: database)
            #expect(!FileManager.default.fileExists(atPath: data + "/hearth.sqlite"), "nothing on SQLite")

            var a = try await Self.node(data, database)
            let b = try await Self.node(data, database)
            #expect(a.text.contains("State: PostgreSQL postgres://hearth_test@127.0.0.1"), "\(a.text)")
            #expect(!a.text.contains(try passwordFile.map { try String(contentsOfFile: $0, encoding: .utf8) } ?? "?"))
            func call(_ node: HearthProcess, _ path: String, _ extra: [String]) throws -> String {
                try runTool(
                    curl,
                    ["-s", "-w", "\n%{http_code}", "--cacert", data + "/root-ca.pem"] + extra
                        + [(node.baseURL ?? "https://127.0.0.1:1") + path]
                ).output
            }
            let json = ["-H", "content-type: application/json"]
            let credentials = #"{"email":"ann@example.com","password":"a long and unusual passphrase"}"#
            #expect(try call(a, "/api/v1/accounts", json + ["-d", credentials]).hasSuffix("201"))
            let session = try call(b, "/api/v1/sessions", json + ["-d", credentials])
            #expect(session.hasSuffix("201"), "signed in on B with the account made on A: \(session)")
            let token = try #require(session.components(separatedBy: #""token":""#).last?.prefix(43))
            let bearer = ["-H", "authorization: Bearer \(token)"]
            let claim = try call(
                a, "/api/v1/devices/claim", json + bearer + ["-d", #"{"serial":"\#(serial)","setupCode":"\#(code)"}"#])
            #expect(claim.hasSuffix("201"), "B's session works on A: \(claim)")
            #expect(try call(b, "/api/v1/devices", bearer).contains(serial))

            a.signal(SIGKILL)
            _ = try await a.waitForExit()
            #expect(try call(b, "/api/v1/devices", bearer).contains(serial), "B goes on alone")
            a = try await Self.node(data, database)
            #expect(try call(a, "/api/v1/devices", bearer).contains(serial), "A restarted sees it all")
            for node in [a, b] {
                node.signal(SIGTERM)
                _ = try await node.waitForExit()
            }

            let verify = try await HearthProcess.run(["audit", "verify", "--data", data] + database)
            #expect(verify.status == 0 && verify.output.contains("Audit log intact"), "\(verify.output)")
            let show = try await HearthProcess.run(["audit", "show", "--data", data] + database).output
            #expect(show.components(separatedBy: "server.started").count - 1 == 3, "three starts, one chain")
            for kind in ["model.created", "devices.provisioned", "account.created", "device.claimed"] {
                #expect(show.contains(kind), "audit lacks \(kind)")
            }
            // The database refuses the edit; with its trigger dropped by the owner, the chain shows it.
            try await PostgresDatabase.with(
                try PostgresLocation(parsing: address),
                password: try passwordFile.map {
                    try String(contentsOfFile: $0, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
                }
            ) { db in
                await #expect(throws: HearthError.self) {
                    try await db.run { try await $0.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 1") }
                }
                try await db.run { try await $0.execute("DROP TRIGGER audit_log_no_change ON audit_log") }
                try await db.run {
                    try await $0.execute("UPDATE audit_log SET actor = 'someone-else' WHERE kind = 'device.claimed'")
                }
            }
            let tampered = try await HearthProcess.run(["audit", "verify", "--data", data] + database)
            #expect(tampered.status == 1 && tampered.output.contains("TAMPERED"), "\(tampered.output)")
        }
    }

    /// 1,000 wrong passwords for one account, half to each node, all at once: exactly as many
    /// are checked as one node alone would check (5 free, then the doubling wait), because the
    /// throttle lives in the database both nodes share. Per-node throttles would check 10.
    @Test(.enabled(if: TestPostgres.available)) func guessesSpreadOverTwoNodesAreThrottledAsOnOne() async throws {
        guard let curl = try curlPath() else { return }
        try await TestPostgres.withAddress { address, passwordFile in
            let database = ["--database", address] + (passwordFile.map { ["--database-password-file", $0] } ?? [])
            let dir = temporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let data = try await dataFolder(in: dir, with: ProductModel.demoModels()[1], extra: database)
            let nodes = [try await Self.node(data, database), try await Self.node(data, database)]
            let base = nodes.map { $0.baseURL ?? "https://127.0.0.1:1" }
            let signUp = try runTool(
                curl,
                [
                    "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", data + "/root-ca.pem", "-H",
                    "content-type: application/json", "-d",
                    #"{"email":"ann@example.com","password":"a long and unusual passphrase"}"#,
                    base[0] + "/api/v1/accounts",
                ])
            #expect(signUp.output == "201")
            let started = Date()
            let answers = try await withThrowingTaskGroup(of: String.self) { group in
                for url in base {
                    group.addTask {
                        try runTool(
                            curl,
                            [
                                "-s", "-Z", "--parallel-max", "50", "-w", "\nHTTP%{http_code}\n", "--cacert",
                                data + "/root-ca.pem", "-H", "content-type: application/json", "-d",
                                #"{"email":"ann@example.com","password":"not the passphrase at all"}"#,
                            ] + Array(repeating: url + "/api/v1/sessions", count: 500)
                        ).output
                    }
                }
                return try await group.reduce(into: "") { $0 += $1 }
            }
            let seconds = Date().timeIntervalSince(started)
            func count(_ status: String) -> Int { answers.components(separatedBy: "HTTP" + status).count - 1 }
            #expect(count("401") + count("429") == 1_000, "every guess answered, none failed otherwise")
            // 5 free; after the 5th the account waits 2 s, then 4 s: a run under 6 s checks at most 7.
            #expect(
                count("401") >= 5 && count("401") <= 5 + (seconds < 2 ? 0 : seconds < 6 ? 1 : 2),
                "\(count("401")) checked in \(seconds) s")
            for node in nodes {
                node.signal(SIGTERM)
                _ = try await node.waitForExit()
            }
        }
    }

    /// A device on node A, its owner's command through node B: relayed and answered. The device
    /// then connects to B (a second copy of it, as after a move or a clone): A closes its
    /// connection at once (0x8E session taken over), and a command through A reaches it on B.
    @Test(.enabled(if: TestPostgres.available)) func aCommandReachesTheDeviceOnAnotherNode() async throws {
        guard let curl = try curlPath() else { return }
        try await TestPostgres.withAddress { address, passwordFile in
            let database = ["--database", address] + (passwordFile.map { ["--database-password-file", $0] } ?? [])
            let dir = temporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let data = try await dataFolder(in: dir, with: ProductModel.demoModels()[1], extra: database)
            let (serial, code) = try await provisionedLock(data: data, in: dir, count: 1, extra: database)
            let (a, b) = (try await Self.node(data, database), try await Self.node(data, database))
            defer { for node in [a, b] { node.signal(SIGKILL) } }
            func mqtt(_ node: HearthProcess) throws -> String {
                let match = try #require(node.text.range(of: #"mqtts://127\.0\.0\.1:\d+"#, options: .regularExpression))
                return String(node.text[match].dropFirst("mqtts://".count))
            }
            func call(_ node: HearthProcess, _ path: String, _ extra: [String]) throws -> String {
                try runTool(
                    curl,
                    ["-s", "-w", "\n%{http_code}", "--cacert", data + "/root-ca.pem"] + extra
                        + [(node.baseURL ?? "https://127.0.0.1:1") + path]
                ).output
            }
            let json = ["-H", "content-type: application/json"]
            let credentials = #"{"email":"ann@example.com","password":"a long and unusual passphrase"}"#
            #expect(try call(a, "/api/v1/accounts", json + ["-d", credentials]).hasSuffix("201"))
            let session = try call(b, "/api/v1/sessions", json + ["-d", credentials])
            let bearer = [
                "-H",
                "authorization: Bearer \(try #require(session.components(separatedBy: #""token":""#).last?.prefix(43)))",
            ]
            #expect(
                try call(
                    a, "/api/v1/devices/claim",
                    json + bearer + ["-d", #"{"serial":"\#(serial)","setupCode":"\#(code)"}"#]
                )
                .hasSuffix("201"))
            let lockCommand = json + bearer + ["-d", #"{"name":"lock"}"#]
            #expect(
                try call(b, "/api/v1/devices/\(serial)/commands", lockCommand).hasSuffix("409"),
                "offline: 409 as on one node")

            let bundle = dir.appendingPathComponent("bundles").appendingPathComponent(serial).path
            func device(on node: HearthProcess) throws -> ChildProcess {
                try ChildProcess(
                    builtProduct("hearth-device"),
                    [
                        "lock", "--bundle", bundle, "--mqtt", try mqtt(node), "--hardware-key",
                        dir.appendingPathComponent("hw").path, "--startup-delay", "0", "--reconnect-window", "30",
                        "--verbose",
                    ])
            }
            let onA = try device(on: a)
            defer { onA.signal(SIGKILL) }
            #expect(try await onA.wait(for: "connected (MQTT"), "\(onA.text)")
            var answered = ""
            for _ in 0..<50 where !answered.hasSuffix("200") {
                answered = try call(b, "/api/v1/devices/\(serial)/commands", lockCommand)
                if !answered.hasSuffix("200") { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(
                answered.hasSuffix("200") && answered.contains(#""status":"ok""#),
                "through B to the device on A: \(answered)")

            let onB = try device(on: b)
            defer { onB.signal(SIGKILL) }
            #expect(try await onB.wait(for: "connected (MQTT"), "\(onB.text)")
            #expect(try await onA.wait(for: "disconnected", timeout: 10), "A closed the old connection: \(onA.text)")
            #expect(onA.text.contains("0x8E"), "session taken over: \(onA.text)")
            onA.signal(SIGKILL)
            _ = try await onA.waitForExit()
            let unlock = try call(
                a, "/api/v1/devices/\(serial)/commands", json + bearer + ["-d", #"{"name":"unlock"}"#])
            #expect(
                unlock.hasSuffix("200") && unlock.contains(#""status":"ok""#), "through A to the device on B: \(unlock)"
            )
        }
    }

    /// A device streams 3,000 QoS 1 readings to node A, which is killed with SIGKILL mid-stream;
    /// it sends them all again to node B. Every reading A acknowledged is in PostgreSQL, and
    /// every reading is there exactly once (by device sequence), the re-sent ones acknowledged
    /// again without a copy.
    @Test(.enabled(if: TestPostgres.available)) func readingsAcknowledgedByANodeKilledMidStreamAreKeptOnce()
        async throws
    {
        guard let python = try requiredPython(module: "paho.mqtt", package: "paho-mqtt") else { return }
        try await TestPostgres.withAddress { address, passwordFile in
            let database = ["--database", address] + (passwordFile.map { ["--database-password-file", $0] } ?? [])
            let dir = temporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let data = try await dataFolder(in: dir, with: ProductModel.demoModels()[1], extra: database)
            let (serial, code) = try await provisionedLock(data: data, in: dir, count: 1, extra: database)
            let lock = DevicePathTests.Bundle(
                serial: serial, model: "lock-l1", setupCode: code,
                folder: dir.appendingPathComponent("bundles").appendingPathComponent(serial))
            // Rate limits high enough that every publish is taken.
            let unlimited = ["--max-publishes-per-second", "100000", "--max-bytes-per-second", "100000000"]
            let (a, b) = (
                try await Self.node(data, database, unlimited), try await Self.node(data, database, unlimited)
            )
            defer { b.signal(SIGKILL) }
            func port(_ node: HearthProcess) throws -> Int {
                let match = try #require(node.text.range(of: #"mqtts://127\.0\.0\.1:\d+"#, options: .regularExpression))
                return try #require(Int(node.text[match].split(separator: ":").last ?? ""))
            }
            let payloads = (1...3000).map { #"{"seq": \#($0), "values": {"state": "locked"}}"# }
            func publish(to node: HearthProcess) throws -> ChildProcess {
                try ChildProcess(
                    python,
                    [pahoScript, "publish"] + lock.paho(port: try port(node)) + [
                        "--topic", "devices/\(serial)/telemetry", "--timeout", "5",
                    ] + payloads.flatMap { ["--payload", $0] })
            }
            let first = try publish(to: a)
            #expect(try await first.wait(for: "connack", timeout: 30), "\(first.text)")
            // Killed once a few hundred readings are committed, so the kill lands mid-stream.
            let password = try passwordFile.map {
                try String(contentsOfFile: $0, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            }
            try await PostgresDatabase.with(try PostgresLocation(parsing: address), password: password) { db in
                let started = Date()
                while Date().timeIntervalSince(started) < 30 {
                    if try await db.run({ try await $0.int("SELECT COUNT(*) FROM readings") }) >= 300 { break }
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            a.signal(SIGKILL)
            _ = try await a.waitForExit(timeout: 10)
            _ = try await first.waitForExit(timeout: 60)
            let codes = DevicePathTests.rcs(first.text)
            let taken = Set(codes.enumerated().compactMap { $0.element == 0 ? Int64($0.offset + 1) : nil })
            #expect(
                taken.count >= 300 && taken.count < payloads.count,
                "killed mid-stream: \(Dictionary(grouping: codes, by: { $0 ?? -1 }).mapValues(\.count))")

            let again = try await ChildProcess.run(
                python,
                [pahoScript, "publish"] + lock.paho(port: try port(b)) + ["--topic", "devices/\(serial)/telemetry"]
                    + payloads.flatMap { ["--payload", $0] }, timeout: 120)
            let resent = DevicePathTests.rcs(again.output)
            #expect(
                resent.count == payloads.count && resent.allSatisfy { $0 == 0 },
                "B takes them all: \(Dictionary(grouping: resent, by: { $0 ?? -1 }).mapValues(\.count))")

            let folder = try DataFolder.open(path: data)
            try await PostgresDatabase.with(try PostgresLocation(parsing: address), password: password) { db in
                let main = try await PostgresStore(database: db, sealer: KEKAuditSealer(kek: folder.kek))
                let telemetry = try await PostgresTelemetryStore(
                    database: db, keys: DataKeys(store: main, kek: folder.kek))
                let stored = try await telemetry.readings(
                    try DeviceSerial(serial), from: .distantPast, to: .distantFuture, after: nil, limit: 100_000
                ).map(\.reading.sequence)
                #expect(
                    taken.isSubset(of: Set(stored)),
                    "acknowledged by A but lost: \(taken.subtracting(stored).sorted().prefix(20))")
                #expect(
                    stored.count == payloads.count && Set(stored) == Set(1...Int64(payloads.count)),
                    "each once: \(stored.count)")
            }
        }
    }
}

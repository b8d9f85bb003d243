import Foundation
import HearthCore
import HearthFixtures
import HearthPostgres
import HearthTestSupport
import Testing

/// Several `hearth serve` nodes sharing one PostgreSQL database (`--database`), each a full server
/// on loopback, as behind a TCP load balancer.
@Suite struct ClusterTests {
    /// A node of the deployment in `data` on `database`.
    static func node(_ data: String, _ database: [String]) async throws -> HearthProcess {
        let server = try HearthProcess(
            [
                "serve", "--data", data, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--mqtt-listen",
                "127.0.0.1:0",
            ] + database)
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
}

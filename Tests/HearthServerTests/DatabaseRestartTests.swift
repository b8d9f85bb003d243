import Foundation
import HearthCore
import HearthFixtures
import HearthPostgres
import HearthServer
import HearthTestSupport
import Testing

/// The real PostgreSQL server stops under load and starts again. It stops the database every
/// other PostgreSQL test uses, so it runs only when asked, alone:
/// `HEARTH_TEST_POSTGRES_CONTROL=$PWD/scripts/postgres.sh swift test --filter DatabaseRestartTests`
/// (it calls the script's `stop` and `start`); `.ci/run` runs it as its own step, after the other
/// PostgreSQL suites. ARCHITECTURE 93, "When the database fails".
@Suite(.serialized) struct DatabaseRestartTests {
    static let control = ProcessInfo.processInfo.environment["HEARTH_TEST_POSTGRES_CONTROL"]

    /// Blocking (it is called from `defer`): this suite runs alone, never beside the timing-bound ones.
    static func postgres(_ command: String) throws {
        let run = try ChildProcess.runBlocking("/bin/bash", [try #require(control), command])
        #expect(run.status == 0, "postgres.sh \(command): \(run.output)")
    }

    /// Below the server: while the database is down, a request fails as unavailable within the
    /// pool's deadline (the pool itself keeps trying to connect for ever), both on a connection
    /// the pool held before the stop and on a fresh one; once the database is back the same pool
    /// works again by itself.
    @Test(.enabled(if: TestPostgres.available && control != nil))
    func aRequestWhileTheDatabaseIsDownFailsWithinItsDeadline() async throws {
        try await TestPostgres.withAddress { address, passwordFile in
            let password = try passwordFile.map {
                try String(contentsOfFile: $0, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            }
            try await PostgresDatabase.with(
                try PostgresLocation(parsing: address), password: password, maximumConnections: 2,
                connectWithin: .seconds(2)
            ) { db in
                #expect(try await db.run { try await $0.int("SELECT 1") } == 1)
                try Self.postgres("stop")
                var restarted = false
                defer { if !restarted { try? Self.postgres("start") } }
                for attempt in 1...3 {
                    let clock = ContinuousClock()
                    let started = clock.now
                    do {
                        _ = try await db.transaction { try await $0.int("SELECT 1") }
                        Issue.record("attempt \(attempt): answered while the database is down")
                    } catch let error as HearthError {
                        #expect(error.code == .unavailable, "attempt \(attempt): \(error)")
                    }
                    #expect(clock.now - started < .seconds(4), "attempt \(attempt): \(clock.now - started)")
                }
                try Self.postgres("start")
                restarted = true
                var answer: Int?
                let back = Date()
                while answer == nil, Date().timeIntervalSince(back) < 30 {
                    // Not `try?`: on Swift 6.3.1 `answer = try? await db.run { … }` here ran the
                    // closure of the first `db.run` above and answered 1 (seen 5 of 5 runs).
                    do { answer = try await db.run { try await $0.int("SELECT 40 + 2") } } catch {}
                    if answer == nil { try await Task.sleep(for: .milliseconds(200)) }
                }
                #expect(answer == 42, "the pool works again once the database is back")
            }
        }
    }

    /// While the database is down: the node says it is not ready, the device streaming to it is
    /// told to back off (DISCONNECT 0x89 with retry-after) and so is a device that connects
    /// meanwhile (CONNACK 0x89); once the database is back the node is ready again by itself,
    /// every reading it acknowledged is stored, and the device's resend is stored once.
    @Test(.enabled(if: TestPostgres.available && control != nil))
    func aStoppedDatabaseLosesNothingAcknowledgedAndServiceResumesByItself() async throws {
        let python = try requiredPython(module: "paho.mqtt", package: "paho-mqtt")
        try await ClusterTests.Cluster.with { c in
            let serial = c.lock.serial
            let lock = DevicePathTests.Bundle(
                serial: serial, model: "lock-l1", setupCode: c.lock.code,
                folder: c.dir.appendingPathComponent("bundles").appendingPathComponent(serial))
            let node = try await c.node(["--max-publishes-per-second", "100000", "--max-bytes-per-second", "100000000"])
            defer { node.signal(SIGKILL) }
            let port = try #require(Int(try ClusterTests.Cluster.mqtt(node).split(separator: ":").last ?? ""))
            // `timeout`: how long paho waits for the acknowledgements once it has sent everything.
            func publish(_ payloads: [String], timeout: Int = 60) throws -> ChildProcess {
                try ChildProcess(
                    python,
                    [pahoScript, "publish"] + lock.paho(port: port) + [
                        "--topic", "devices/\(serial)/telemetry", "--timeout", "\(timeout)",
                    ] + payloads.flatMap { ["--payload", $0] })
            }
            // Readiness must answer promptly whatever the database does: a balancer gives up too.
            func ready() async throws -> String { try await c.call(node, "/readyz", ["--max-time", "10"]) }
            func step(_ what: String) { FileHandle.standardError.write(Data("restart test: \(what)\n".utf8)) }
            await #expect(try ready().hasSuffix("200"))

            let payloads = (1...10_000).map { #"{"seq": \#($0), "values": {"state": "locked"}}"# }
            let stream = try publish(payloads)
            #expect(try await stream.wait(for: "connack", timeout: 30), "\(stream.text)")
            // Stopped once some readings are committed, so the stop lands mid-stream.
            try await c.waitUntilStored(atLeast: 100)
            step("stopping")
            try Self.postgres("stop")
            var restarted = false
            defer { if !restarted { try? Self.postgres("start") } }
            _ = try await stream.waitForExit(timeout: 60)
            let lines = jsonLines(stream.text)
            let told = lines.first { $0["disconnect"] != nil }
            #expect(
                told?["disconnect"] == 0x89,
                "told to back off: \(lines.filter { $0["index"] == nil })")
            if case .number(let wait)? = told?["retryAfter"] {
                #expect((1...10).contains(wait))
            } else {
                Issue.record("no retry-after: \(String(describing: told))")
            }
            let codes = DevicePathTests.rcs(stream.text)
            let taken = Set(codes.enumerated().compactMap { $0.element == 0 ? Int64($0.offset + 1) : nil })
            #expect(taken.count >= 100 && taken.count < payloads.count, "stopped mid-stream: \(taken.count)")

            step("stream ended")
            // Down: not ready, and a device connecting now is refused with the same hint.
            let down = try await ready()
            #expect(down.hasSuffix("503"), "not ready while the database is down: \(down)")
            let meanwhile = try publish(Array(payloads.prefix(1)), timeout: 5)
            _ = try await meanwhile.waitForExit(timeout: 30)
            #expect(connackCode(jsonLines(meanwhile.text)) == 0x89, "\(meanwhile.text)")

            step("meanwhile done")
            // Back: ready again by itself, and the resend is taken whole.
            try Self.postgres("start")
            restarted = true
            var up = ""
            let back = Date()
            while !up.hasSuffix("200"), Date().timeIntervalSince(back) < 60 {
                try await Task.sleep(for: .milliseconds(100))
                up = try await ready()
            }
            #expect(up.hasSuffix("200"), "ready again by itself: \(up)")
            step("ready again")
            var resent: [Int?] = []
            var last = ""
            for _ in 0..<5 {
                let again = try publish(payloads, timeout: 150)
                _ = try await again.waitForExit(timeout: 200)
                resent = DevicePathTests.rcs(again.text)
                last = again.text
                if connackCode(jsonLines(again.text)) == 0 { break }
                try await Task.sleep(for: .seconds(1))  // still inside the back-off: try again, as a device does
            }
            #expect(
                resent.count == payloads.count && resent.allSatisfy { $0 == 0 },
                """
                the resend is taken: \(Dictionary(grouping: resent, by: { $0 ?? -1 }).mapValues(\.count)) \
                \(last.prefix(300)) … \(last.suffix(300))
                """)

            step("resent")
            try await c.expectKeptOnce(serial, acknowledged: taken, sent: payloads.count)
        }
    }
}

import Foundation
import GRDB
import HearthCore
import HearthServer
import HearthTestSupport
import Hummingbird
import HummingbirdTesting
import Testing

extension HeavyServerTests {
    /// The operating side of a running server (issue 16): `/metrics` apart from the public
    /// listener and accepted by Prometheus's own checker, bounded label values, JSON logs that parse
    /// line by line, and not one secret the demo made in its log.
    @Suite(.serialized) struct OperationsTests {
        @Test(.enabled(if: toolsPresentOrRequired("curl", "promtool")))
        func theDemoServesMetricsApartAndLogsJSONWithoutSecrets() async throws {
            let curl = try requiredTool("curl", package: "curl")
            let promtool = try requiredTool("promtool", package: "prometheus")
            let dir = temporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let demo = try ChildProcess(
                hearthBinary(),
                [
                    "demo", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--mqtt-listen",
                    "127.0.0.1:0", "--devices", "1", "--data", dir.path, "--log-format", "json",
                ], separateErrors: true)
            defer { demo.signal(SIGKILL) }
            #expect(try await demo.wait(for: "Press Ctrl-C to stop.", timeout: 180), "\(demo.text)\(demo.errorText)")
            let out = demo.text
            let base = try #require(demo.baseURL)
            let metricsURL = try #require(
                out.firstMatch(of: #/Metrics \(Prometheus\): (http://127\.0\.0\.1:\d+/metrics)/#).map { String($0.1) },
                "\(out)")
            let ca = dir.path + "/root-ca.pem"

            // Ready: both listeners up, the database takes a write.
            let ready = try await runTool(curl, ["-s", "--cacert", ca, base + "/readyz"])
            #expect(ready.output == #"{"status":"ready"}"#, "\(ready.output)")

            // The public listener does not serve metrics; the metrics listener serves nothing else.
            let publicMetrics = try await runTool(
                curl, ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", ca, base + "/metrics"])
            #expect(publicMetrics.output == "404")
            let other = try await runTool(
                curl,
                [
                    "-s", "-o", "/dev/null", "-w", "%{http_code}",
                    metricsURL.replacingOccurrences(of: "/metrics", with: "/healthz"),
                ])
            #expect(other.output == "404")

            let scrape = try await runTool(curl, ["-s", "-D", "-", metricsURL])
            #expect(scrape.status == 0)
            #expect(
                scrape.output.lowercased().contains("content-type: text/plain; version=0.0.4"),
                "\(scrape.output.prefix(400))")
            let body = try #require(scrape.output.components(separatedBy: "\r\n\r\n").dropFirst().first)
            let file = dir.appendingPathComponent("metrics.txt")
            try body.write(to: file, atomically: true, encoding: .utf8)
            let check = try await runTool("/bin/sh", ["-c", "'\(promtool)' check metrics < '\(file.path)' 2>&1"])
            #expect(check.status == 0, "promtool check metrics: \(check.output)")

            // The numbers are the system's: the demo's devices published, its API calls were answered.
            func value(_ series: String) -> Double? {
                body.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap {
                    Double($0.split(separator: " ").last!)
                }
            }
            #expect((value(#"hearth_mqtt_messages_total{direction="in"}"#) ?? 0) > 0, "\(body)")
            #expect((value(#"hearth_mqtt_messages_total{direction="out"}"#) ?? 0) > 0, "\(body)")
            #expect((value(#"hearth_mqtt_connects_total{result="accepted"}"#) ?? 0) >= 2, "\(body)")
            #expect((value("hearth_readings_stored_total") ?? 0) > 0, "\(body)")
            #expect((value("hearth_ingest_commit_seconds_count") ?? 0) > 0, "\(body)")
            #expect(value(#"hearth_update_rollouts{state="completed"}"#) != nil, "\(body)")
            #expect(
                body.contains(#"hearth_http_requests_total{method="POST",route="/api/v1/sessions",status="201"}"#),
                "\(body)")

            // Label values: closed sets and route patterns only — no serial, e-mail or token.
            let serials = out.matches(of: #/claimed ([A-Z0-9]{12})/#).map { String($0.1) }
            #expect(serials.count == 2, "\(out)")
            let values = body.matches(of: #/="([^"]*)"/#).map { String($0.1) }
            #expect(!values.isEmpty)
            for v in values {
                #expect(!v.contains("@"), "an e-mail in a label: \(v)")
                #expect(!serials.contains { v.contains($0) }, "a serial in a label: \(v)")
                // A token: a long run of base64url with digits in it (reason names have none).
                let tokenLike = v.matches(of: #/[A-Za-z0-9_-]{20,}/#).contains { $0.0.contains(where: \.isNumber) }
                #expect(v.count <= 64 && !tokenLike, "a token-like label: \(v)")
            }

            // Logs: standard error is JSON, one object a line, with time, level and component.
            demo.signal(SIGTERM)
            _ = try await demo.waitForExit(timeout: 60)
            let lines = demo.errorText.split(separator: "\n")
            #expect(lines.count >= 2, "\(demo.errorText)")
            for line in lines {
                let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                #expect(object != nil, "not a JSON object: \(line)")
                for key in ["time", "level", "component", "message"] {
                    #expect(object?[key] is String, "\(key) missing: \(line)")
                }
            }
            #expect(lines.contains { $0.contains(#""component":"hearth.gateway""#) }, "\(demo.errorText)")

            // No secret the demo made is in the log: the set-up link's token, the labels' setup
            // codes, the owner's password, the key-encryption key, any private key.
            let token = try #require(out.firstMatch(of: #/\/setup\/([A-Za-z0-9_-]+)/#).map { String($0.1) })
            let codes = out.matches(of: #/Setup code: ([A-Z0-9-]+)/#).map { String($0.1) }
            #expect(codes.count == 2)
            let owner = try String(contentsOf: dir.appendingPathComponent("demo-owner.json"), encoding: .utf8)
            let password = try #require(owner.split(separator: "\"").dropLast().last.map(String.init))
            let kek = try Data(contentsOf: dir.appendingPathComponent("kek.key"))
            let log = demo.errorText
            var secrets = [token, password, kek.base64EncodedString(), kek.map { String(format: "%02x", $0) }.joined()]
            secrets += codes + codes.map { $0.replacingOccurrences(of: "-", with: "") }
            for secret in secrets { #expect(!log.contains(secret), "a secret is in the log") }
            #expect(!log.contains("PRIVATE KEY"))
        }
    }
}

/// `/readyz` says ready only once every listener the server expects is up and the database takes a
/// write; `/healthz` only that the process answers.
@Suite struct ReadinessTests {
    @Test func readyOnlyOnceEveryListenerIsUpAndTheDatabaseTakesAWrite() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        d.hearth.readiness.down("mqtt")
        try await d.application.test(.router) { client in
            try await client.execute(uri: "/readyz", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(String(buffer: response.body).contains("waiting for mqtt"))
            }
            try await client.execute(uri: "/healthz", method: .get) { #expect($0.status == .ok) }
            d.hearth.readiness.up("mqtt")
            let before = try checkedAt(d)
            d.time.advance(by: 5)
            try await client.execute(uri: "/readyz", method: .get) { response in
                #expect(response.status == .ok)
                #expect(String(buffer: response.body) == #"{"status":"ready"}"#)
            }
            #expect(try checkedAt(d) != before, "the check wrote to the database")
        }
    }

    func checkedAt(_ d: TestDeployment) throws -> Int64? {
        try DatabaseQueue(path: d.folder.databasePath).read {
            try Int64.fetchOne($0, sql: "SELECT checked_at FROM readiness")
        }
    }
}

import Foundation
import HearthCore
import HearthMonitor
import HearthServer
import HearthStorage
import Hummingbird
import HummingbirdTesting
import Synchronization
import Testing

/// Guideline 10: what the detectors find becomes an alert — audited, listed for operators with a
/// lifecycle that only moves forward, and shown to the device's owner in plain English (and to
/// nobody else).
@Suite struct AlertTests {
    @Test func alertsReachTheOperatorAndTheOwnerAndMoveOnlyForward() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try await d.provisionThermostats(1)[0]
        // Alerts only here (automatic quarantine is the next test).
        let alerts = SecurityAlerts(store: d.store, quarantineAt: nil)
        try await d.application.test(.router) { client in
            let op = try await makeOperator(d, client)
            let ann = try await client.owner("ann@example.com")
            let bob = try await client.owner("bob@example.com")
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: OwnershipTests.claim(unit), token: ann)
                    .status == 201)
            d.time.advance(by: 1)
            await alerts.detected(
                Detection(
                    kind: .probe, severity: .high,
                    evidence: ["refused": 3, "lastTopic": "devices/OTHER/telemetry", "windowSeconds": 60],
                    at: d.time.now()),
                device: unit.serial)

            let list = try await client.call(.get, "/api/v1/alerts", token: op)
            #expect(list.status == 200, "\(list.text)")
            guard case .object(let body)? = list.json, case .array(let items)? = body["alerts"],
                case .object(let alert)? = items.first, case .string(let id)? = alert["id"]
            else { throw DevicePathTests.TestFailure("no alert: \(list.text)") }
            #expect(alert["kind"] == "probe" && alert["severity"] == "high" && alert["state"] == "open")
            #expect(alert["serial"] == .string(unit.serial.rawValue))
            if case .object(let evidence)? = alert["evidence"] { #expect(evidence["refused"] == 3) }

            // The owner reads it in plain English, without the operator's evidence; others cannot.
            let mine = try await client.call(.get, "/api/v1/devices/\(unit.serial)/alerts", token: ann)
            #expect(mine.status == 200 && mine.text.contains("belong to other devices"), "\(mine.text)")
            #expect(!mine.text.contains("evidence") && !mine.text.contains("OTHER"))
            #expect(try await client.call(.get, "/api/v1/devices/\(unit.serial)/alerts", token: bob).status == 404)
            #expect(try await client.call(.get, "/api/v1/alerts", token: ann).status == 403)
            #expect(try await client.call(.get, "/api/v1/alerts").status == 401)

            // Forward only: acknowledge, resolve; not again, not back; bad input changes nothing.
            for (state, status) in [
                ("nope", 400), ("open,", 400), ("", 400), (String(repeating: "a", count: 5000), 400),
                ("open,open,open,open,open", 200), ("resolved,open", 200),
            ] {
                let r = try await client.call(.get, "/api/v1/alerts?state=\(state)", token: op)
                #expect(r.status == status, "state=\(state.prefix(20)): \(r.status)")
            }
            #expect(try await client.call(.post, "/api/v1/alerts/\(id)/acknowledge", token: ann).status == 403)
            #expect(try await client.call(.post, "/api/v1/alerts/\(id)/acknowledge", token: op).status == 200)
            #expect(try await client.call(.post, "/api/v1/alerts/\(id)/acknowledge", token: op).status == 409)
            #expect(try await client.call(.post, "/api/v1/alerts/\(id)/resolve", token: op).status == 200)
            #expect(try await client.call(.post, "/api/v1/alerts/\(id)/resolve", token: op).status == 409)
            #expect(try await client.call(.post, "/api/v1/alerts/not-an-alert/resolve", token: op).status == 409)
            let open = try await client.call(.get, "/api/v1/alerts", token: op)
            #expect(!open.text.contains(id), "resolved alerts leave the default list")
            let resolved = try await client.call(.get, "/api/v1/alerts?state=resolved", token: op)
            #expect(resolved.text.contains(id))
            let audit = try await d.store.auditRecords().map(\.kind)
            for kind in [AuditKind.alertRaised, .alertAcknowledged, .alertResolved] {
                #expect(audit.contains(kind.rawValue), "\(kind) audited")
            }

            // A later owner does not see alerts from before their claim.
            _ = try await client.call(
                .post, "/api/v1/devices/\(unit.serial)/unclaim", body: #"{"history":"keep"}"#, token: ann)
            d.time.advance(by: 1)
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: OwnershipTests.claim(unit), token: bob)
                    .status == 201)
            let theirs = try await client.call(.get, "/api/v1/devices/\(unit.serial)/alerts", token: bob)
            #expect(theirs.status == 200 && theirs.text.contains(#""alerts":[]"#), "\(theirs.text)")
        }
    }

    /// A high-severity detection quarantines the device at once (audited, the gateway told);
    /// commands are refused and the owner reads why and what to do; the operator releases it.
    /// Bad quarantine requests change nothing.
    @Test func highSeverityQuarantinesAndTheOperatorReleases() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try await d.provisionThermostats(1)[0]
        let told = QuarantineRecorder()
        let alerts = SecurityAlerts(store: d.store, quarantine: told)
        try await d.application.test(.router) { client in
            let op = try await makeOperator(d, client)
            let ann = try await client.owner("ann@example.com")
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: OwnershipTests.claim(unit), token: ann)
                    .status == 201)
            await alerts.detected(
                Detection(kind: .churn, severity: .low, evidence: ["connects": 20], at: d.time.now()),
                device: unit.serial)
            #expect(try await d.store.device(unit.serial)?.quarantine == nil, "low severity: an alert only")
            await alerts.detected(
                Detection(kind: .clone, severity: .high, evidence: ["addressChanges": 3], at: d.time.now()),
                device: unit.serial)
            #expect(try await d.store.device(unit.serial)?.quarantine != nil)
            #expect(told.calls.count == 1 && told.calls.first?.1 != nil, "the gateway is told")

            let command = try await client.call(
                .post, "/api/v1/devices/\(unit.serial)/commands",
                body: #"{"name":"setTarget","parameters":{"target":22}}"#,
                token: ann)
            #expect(command.status == 409 && command.text.contains("quarantined"), "\(command.text)")
            let mine = try await client.call(.get, "/api/v1/devices/\(unit.serial)/alerts", token: ann)
            #expect(mine.text.contains("copied") && mine.text.contains("reset it to factory settings"), "\(mine.text)")
            let page = try await client.call(
                .get, "/devices/\(unit.serial)", headers: try await PageTests.browser(client, token: ann).headers)
            #expect(page.text.contains("Quarantined:") && page.text.contains("Security alerts"))

            let path = "/api/v1/devices/\(unit.serial)/quarantine"
            let release = "/api/v1/devices/\(unit.serial)/quarantine/release"
            #expect(try await client.call(.post, release, token: ann).status == 403)
            #expect(try await client.call(.post, path, body: #"{"reason":"again"}"#, token: op).status == 409)
            #expect(try await client.call(.post, release, token: op).status == 200)
            #expect(try await client.call(.post, release, token: op).status == 409)
            for bad in [#"{"reason":"   "}"#, #"{"reason":1}"#, #"{}"#, "not json"] {
                let r = try await client.call(.post, path, body: bad, token: op)
                #expect((400...422).contains(r.status), "\(bad): \(r.status)")
            }
            #expect(
                try await client.call(
                    .post, "/api/v1/devices/NOSUCHSERIAL/quarantine", body: #"{"reason":"x"}"#, token: op
                )
                .status == 404)
            #expect(try await d.store.device(unit.serial)?.quarantine == nil, "bad requests changed nothing")
            let audit = try await d.store.auditRecords(subject: unit.serial.rawValue, limit: 50).map(\.kind)
            #expect(
                audit.contains(AuditKind.deviceQuarantined.rawValue)
                    && audit.contains(AuditKind.deviceReleasedFromQuarantine.rawValue))
        }
    }
}

/// A stand-in for the gateway: remembers what it was told.
final class QuarantineRecorder: DeviceQuarantining {
    private let items = Mutex<[(DeviceSerial, String?)]>([])
    var calls: [(DeviceSerial, String?)] { items.withLock { $0 } }
    func quarantineChanged(_ serial: DeviceSerial, reason: String?) async {
        items.withLock { $0.append((serial, reason)) }
    }
}

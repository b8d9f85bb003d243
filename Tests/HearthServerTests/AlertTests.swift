import Foundation
import HearthCore
import HearthMonitor
import HearthServer
import HearthStorage
import Hummingbird
import HummingbirdTesting
import Testing

/// Guideline 10: what the detectors find becomes an alert — audited, listed for operators with a
/// lifecycle that only moves forward, and shown to the device's owner in plain English (and to
/// nobody else).
@Suite struct AlertTests {
    @Test func alertsReachTheOperatorAndTheOwnerAndMoveOnlyForward() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try await d.provisionThermostats(1)[0]
        let alerts = SecurityAlerts(store: d.store)
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
            #expect(theirs.status == 200 && !theirs.text.contains("belong to other devices"), "\(theirs.text)")
        }
    }
}

import Foundation
import HTTPTypes
import HearthCore
import Hummingbird
import HummingbirdTesting
import Testing

@testable import HearthServer

/// Vulnerability disclosure: security.txt, the policy, the intake and the coordinated workflow
/// (Code of Practice guideline 2; PSTI Schedule 1 ¶2).
@Suite struct DisclosureTests {
    static let report =
        #"{"title":"Setup code brute force","description":"Steps: 1. send 1000 claims\n2. observe no delay","product":"thermostat-t1","credit":"A. Researcher"}"#

    /// RFC 9116 fields as name → values.
    static func fields(_ text: String) -> [String: [String]] {
        var out: [String: [String]] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            out[String(line[..<colon]).lowercased(), default: []].append(
                line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        return out
    }

    @Test func securityTxtFollowsRFC9116AndKeepsItsExpiryAhead() async throws {
        let d = try TestDeployment {
            $0.disclosure.contacts = ["mailto:security@example.com"]
            $0.disclosure.languages = ["en", "de"]
        }
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            for days in [0.0, 200, 400] {
                d.time.advance(by: days * 86_400)
                let r = try await client.call(.get, "/.well-known/security.txt")
                #expect(r.status == 200)
                #expect(r.headers[.contentType] == "text/plain; charset=utf-8")
                let f = Self.fields(r.text)
                #expect(
                    f["contact"] == ["mailto:security@example.com", "https://localhost/security/report"],
                    "configured contact first, then the form")
                #expect(f["policy"] == ["https://localhost/security/policy"])
                #expect(f["canonical"] == ["https://localhost/.well-known/security.txt"])
                #expect(f["acknowledgments"] == ["https://localhost/security/acknowledgments"])
                #expect(f["preferred-languages"] == ["en, de"])
                let expires = try #require(
                    f["expires"]?.first.flatMap { ISO8601DateFormatter().date(from: $0) },
                    "Expires is an RFC 3339 date: \(r.text)")
                #expect(f["expires"]?.count == 1)
                #expect(
                    expires > d.time.now() && expires < d.time.now().addingTimeInterval(365 * 86_400),
                    "in the future and under a year ahead, day \(days)")
                for (name, values) in f where name != "expires" && name != "preferred-languages" {
                    #expect(
                        values.allSatisfy { $0.hasPrefix("https://") || $0.hasPrefix("mailto:") },
                        "\(name): only HTTPS or mailto URIs")
                }
            }
        }
        #expect(throws: HearthError.self) { try DisclosureSettings.validContact("security@example.com") }
        #expect(throws: HearthError.self) { try DisclosureSettings.validContact("http://example.com/report") }
        #expect(throws: HearthError.self) { try DisclosureSettings.validContact("mailto:a b@example.com") }
        #expect(throws: HearthError.self) { try DisclosureSettings.validLanguage("english!") }
        #expect(try DisclosureSettings.validLanguage("pt-BR") == "pt-BR")
    }

    @Test func policyFormAndStatusPageNeedNoAccount() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let policy = try await client.call(.get, "/security/policy")
            #expect(policy.status == 200)
            for phrase in ["5 days", "90 days", "Safe harbour", "no account", "status token", "every change of status"]
            {
                #expect(policy.text.localizedCaseInsensitiveContains(phrase), "\(phrase)")
            }
            let form = try await client.call(.get, "/security/report")
            #expect(form.status == 200 && form.text.contains(#"<form method="post" action="/security/report""#))
            #expect(!form.text.contains("<script"), "works without JavaScript")
            #expect(try await client.call(.get, "/security/status").status == 200)
            #expect(try await client.call(.get, "/").text.contains("/security/policy"))
        }
    }

    @Test func badInputToTheIntakeIsRefusedAndChangesNothing() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let before = try d.snapshot()
            let cases: [(String, [UInt8], String?)] = [
                (
                    "oversize",
                    Array(#"{"title":"big","description":"\#(String(repeating: "x", count: 20_000))"}"#.utf8), nil
                ),
                (
                    "description over 10,000 characters",
                    Array(#"{"title":"long","description":"\#(String(repeating: "x", count: 10_001))"}"#.utf8),
                    "description"
                ),
                (
                    "control character in the title",
                    Array(#"{"title":"bell\u0007","description":"a long enough description"}"#.utf8), "title"
                ),
                (
                    "escape sequence", Array(#"{"title":"ok title","description":"\u001b[31m red terminal"}"#.utf8),
                    "description"
                ),
                (
                    "invalid UTF-8",
                    Array(#"{"title":"ok title","description":"bad "#.utf8) + [0xC3, 0x28]
                        + Array(#" bytes here"}"#.utf8), nil
                ),
                ("missing description", Array(#"{"title":"ok title"}"#.utf8), "description"),
                (
                    "unknown field",
                    Array(#"{"title":"ok title","description":"a long enough description","severity":"10"}"#.utf8), nil
                ),
                ("wrong type", Array(#"{"title":42,"description":"a long enough description"}"#.utf8), "title"),
                ("not JSON", Array("title=x".utf8), nil),
                ("too short", Array(#"{"title":"ok title","description":"short"}"#.utf8), "description"),
            ]
            for (name, bytes, field) in cases {
                let r = try await client.call(.post, "/api/v1/reports", bytes: bytes)
                #expect([400, 413].contains(r.status), "\(name): \(r.status) \(r.text)")
                #expect(r.error != nil, "\(name): a clear error")
                if let field { #expect(r.field == field, "\(name): names \(field): \(r.text)") }
            }
            let form = try await client.postForm(
                "/security/report", "title=x&description=%07%07%07%07%07%07%07%07%07%07%07",
                pass: try await client.formPass("/security/report"))
            #expect(
                form.status == 400 && form.text.contains("must"),
                "the form says what is wrong: \(form.text.prefix(300))")
            #expect(try d.snapshot() == before, "nothing stored, no audit record")
        }
    }

    @Test func aFloodFromOneSourceIsThrottled() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            for _ in 0..<5 { #expect(try await client.call(.post, "/api/v1/reports", body: Self.report).status == 201) }
            let refused = try await client.call(.post, "/api/v1/reports", body: Self.report)
            #expect(refused.status == 429 && refused.headers[.retryAfter] != nil, "\(refused.text)")
            #expect(try await d.store.reports().count == 5)
            d.time.advance(by: 61)
            #expect(
                try await client.call(.post, "/api/v1/reports", body: Self.report).status == 201,
                "open again after the wait")
        }
    }

    @Test func storedReportsRenderInertly() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let hostile =
                #"{"title":"<script>alert(1)</script>","description":"<img src=x onerror=alert(2)> and \"quotes\" & ampersands"}"#
            let sent = try await client.call(.post, "/api/v1/reports", body: hostile)
            #expect(sent.status == 201)
            let token = try #require(sent.string("statusToken"))
            let id = try #require(sent.string("id"))
            _ = try await d.hearth.moveReport(
                id, to: .acknowledged, note: "<b>thanks</b><script>x()</script>", actor: "test")
            let page = try await client.postForm(
                "/security/status", "token=\(token)", pass: try await client.formPass("/security/status"))
            #expect(page.status == 200)
            #expect(
                page.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;")
                    && page.text.contains("&lt;b&gt;thanks&lt;/b&gt;"))
            #expect(
                !page.text.contains("<script") && !page.text.contains("<b>thanks"),
                "no markup from a report or a note reaches the page")
            #expect(
                page.headers[.contentSecurityPolicy]?.contains("script-src 'none'") == true
                    || page.headers[.contentSecurityPolicy]?.contains("default-src 'none'") == true,
                "CSP forbids scripts anyway")
            // The stored text is sealed: the title is not in the database file in clear.
            let raw = try Data(contentsOf: URL(fileURLWithPath: d.folder.databasePath))
            #expect(raw.range(of: Data("alert(1)".utf8)) == nil)
        }
    }

    @Test func aReportWalksTheWholeWorkflowAndTheReporterFollowsIt() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let sent = try await client.call(.post, "/api/v1/reports", body: Self.report)
            let token = try #require(sent.string("statusToken"))
            let id = try #require(sent.string("id"))
            #expect(id.hasPrefix("VR-"))
            let other = try #require(
                try await client.call(.post, "/api/v1/reports", body: Self.report).string("statusToken"))
            let op = try await makeOperator(d, client)
            let owner = try await client.owner("owner@example.com")
            // Only the security team reads reports: not owners, not other operators.
            #expect(try await client.call(.get, "/api/v1/security/reports", token: owner).status == 403)
            #expect(try await client.call(.get, "/api/v1/security/reports", token: op).status == 403)
            #expect(try await client.call(.get, "/api/v1/security/reports").status == 401)
            try await d.hearth.setSecurityTeam(email: "op@example.com", member: true)
            let list = try await client.call(.get, "/api/v1/security/reports", token: op)
            #expect(
                list.status == 200 && list.text.contains("Setup code brute force")
                    && list.text.contains("A. Researcher"))
            let one = try await client.call(.get, "/api/v1/security/reports/\(id)", token: op)
            #expect(
                one.status == 200 && one.string("id") == id && one.string("state") == "received"
                    && one.text.contains("Setup code brute force"), "\(one.text)")
            #expect(try await client.call(.get, "/api/v1/security/reports/\(id)", token: owner).status == 403)
            #expect(try await client.call(.get, "/api/v1/security/reports/VR-nothing", token: op).status == 404)

            func status(_ t: String) async throws -> Reply {
                try await client.call(.post, "/api/v1/reports/status", body: #"{"token":"\#(t)"}"#)
            }
            #expect(try await status(token).string("state") == "received")
            // A jump is refused and changes nothing.
            let before = try d.snapshot()
            let jump = try await client.call(
                .post, "/api/v1/security/reports/\(id)/transitions", body: #"{"state":"fixed"}"#, token: op)
            #expect(jump.status == 409 && jump.text.contains("can move to acknowledged"), "\(jump.text)")
            #expect(try d.snapshot() == before)
            let steps: [(String, String)] = [
                ("acknowledged", "Thanks, we are looking at it."), ("valid", "Confirmed on firmware 1.2."),
                ("fix_in_progress", "Fix scheduled."), ("fixed", "Fixed in 1.3."), ("disclosed", "Advisory published."),
            ]
            for (n, (state, note)) in steps.enumerated() {
                let moved = try await client.call(
                    .post, "/api/v1/security/reports/\(id)/transitions",
                    body: #"{"state":"\#(state)","note":"\#(note)"}"#, token: op)
                #expect(moved.status == 200 && moved.string("state") == state, "\(moved.text)")
                let seen = try await status(token)
                #expect(seen.string("state") == state)
                guard case .object(let o)? = seen.json, case .array(let history)? = o["history"] else {
                    Issue.record("no history")
                    continue
                }
                #expect(history.count == n + 2, "received plus every step")
                #expect(
                    history.last == [
                        "at": history.last.flatMap { if case .object(let h) = $0 { h["at"] } else { nil } } ?? .null,
                        "state": .string(state), "note": .string(note),
                    ])
                #expect(o["report"] == nil && o["overdue"] == nil, "the reporter's view has no internal fields")
            }
            // Another token sees only its own report; a made-up one sees nothing.
            #expect(try await status(other).string("state") == "received")
            #expect(try await status(other).string("id") != id)
            #expect(try await status(String(repeating: "A", count: 43)).status == 404)
            #expect(
                try await client.call(
                    .post, "/api/v1/security/reports/\(id)/transitions", body: #"{"state":"acknowledged"}"#, token: op
                ).status == 409, "disclosed is final")
            // The credit appears on the acknowledgments page once disclosed.
            #expect(try await client.call(.get, "/security/acknowledgments").text.contains("A. Researcher"))
            let audit = try await d.store.auditRecords().filter { $0.kind == "report.moved" }
            #expect(audit.count == 5)
        }
    }

    @Test func overdueReportsAreFlaggedAtTheRightTime() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let id = try #require(try await client.call(.post, "/api/v1/reports", body: Self.report).string("id"))
            func flags() async throws -> [DisclosurePolicy.Overdue] { try await d.hearth.report(id).overdue }
            d.time.advance(by: 5 * 86_400 - 1)
            #expect(try await flags().isEmpty)
            d.time.advance(by: 2)
            #expect(try await flags() == [.acknowledgement])
            _ = try await d.hearth.moveReport(id, to: .acknowledged, note: nil, actor: "test")
            #expect(try await flags().isEmpty)
            d.time.advance(by: 85 * 86_400)
            #expect(try await flags() == [.disclosure], "90 days after receipt, not yet disclosed")
            _ = try await d.hearth.moveReport(id, to: .notVulnerability, note: "Working as designed", actor: "test")
            #expect(try await flags().isEmpty, "a closed report is not overdue")
        }
    }
}

import Foundation
import HTTPTypes
import HearthCore
import HearthTestSupport
import Hummingbird
import HummingbirdTesting
import Testing

@testable import HearthServer

/// Advisories for fixed vulnerabilities: CSAF 2.0 and OSV documents valid against the official
/// schemas, the CSAF provider metadata that security.txt points to, and notices for owners.
@Suite struct AdvisoryTests {
    /// Validates `json` with `Scripts/validate_schema.py`; the test is skipped if the validator or
    /// schema is missing locally (under `.ci/run` that is a failure).
    static func validate(_ kind: String, _ json: String) async throws -> (valid: Bool, output: String) {
        let python = try requiredPython(module: "jsonschema", package: "jsonschema")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent(
            "hearth-\(kind.hasSuffix(".json") ? "document" : kind)-\(UUID().uuidString).json")
        try Data(json.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let (status, output) = try await runTool(python, [schemaScript, kind, file.path])
        if status == 3 { try skipOrFail(output) }
        return (status == 0, output)
    }

    static let advisory =
        #"{"title":"Setup codes could be guessed without delay","summary":"Claim attempts were not throttled per device. Install the update.","severity":"important","models":["thermostat-t1"],"affectedBelow":"1.3.0","fixedVersion":"1.3.0","cve":"CVE-2026-12345"}"#

    @Test func aFixedReportIsPublishedAsCSAFAndOSVAndOwnersAreNotified() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let units = try await d.provisionThermostats(2)
        try await d.application.test(.router) { client in
            let ann = try await client.owner("ann@example.com")
            let bob = try await client.owner("bob@example.com")
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: OwnershipTests.claim(units[0]), token: ann)
                    .status == 201)
            let sent = try await client.call(.post, "/api/v1/reports", body: DisclosureTests.report)
            let id = try #require(sent.string("id"))
            let token = try #require(sent.string("statusToken"))
            let op = try await makeOperator(d, client)
            try await d.hearth.setSecurityTeam(email: "op@example.com", member: true)
            let publish = "/api/v1/security/reports/\(id)/advisory"
            for state in ["acknowledged", "valid", "fix_in_progress"] {
                _ = try await client.call(
                    .post, "/api/v1/security/reports/\(id)/transitions", body: #"{"state":"\#(state)"}"#, token: op)
            }
            #expect(
                try await client.call(.post, publish, body: Self.advisory, token: op).status == 409,
                "not before the fix")
            _ = try await client.call(
                .post, "/api/v1/security/reports/\(id)/transitions", body: #"{"state":"fixed"}"#, token: op)
            #expect(
                try await client.call(.post, publish, body: Self.advisory, token: ann).status == 403,
                "owners cannot publish")

            // Bad input is refused, names the field and changes nothing.
            let before = try d.snapshot()
            for (field, body) in [
                ("models", Self.advisory.replacingOccurrences(of: #"["thermostat-t1"]"#, with: #"["toaster-9"]"#)),
                (
                    "affectedBelow",
                    Self.advisory.replacingOccurrences(
                        of: #""affectedBelow":"1.3.0""#, with: #""affectedBelow":"1.3-beta""#)
                ),
                ("cve", Self.advisory.replacingOccurrences(of: "CVE-2026-12345", with: "CVE-26-1")),
                ("severity", Self.advisory.replacingOccurrences(of: "important", with: "meh")),
            ] {
                let r = try await client.call(.post, publish, body: body, token: op)
                // Schema-valid, refused for what it says (versions, the CVE id): 422, naming the field.
                #expect(r.status == (field == "severity" ? 400 : 422) && r.field == field, "\(field): \(r.text)")
            }
            #expect(try d.snapshot() == before)

            let published = try await client.call(.post, publish, body: Self.advisory, token: op)
            #expect(published.status == 201, "\(published.text)")
            let advisoryID = try #require(published.string("id"))
            #expect(
                try await client.call(.post, publish, body: Self.advisory, token: op).status == 409, "published once")
            // The reporter sees the report disclosed, with the advisory's address.
            let status = try await client.call(.post, "/api/v1/reports/status", body: #"{"token":"\#(token)"}"#)
            #expect(status.string("state") == "disclosed" && status.text.contains(advisoryID))

            // security.txt → provider metadata → the directory → the CSAF document.
            #expect(
                try await client.call(.get, "/.well-known/security.txt").text.contains(
                    "CSAF: https://localhost/.well-known/csaf/provider-metadata.json"))
            let metadata = try await client.call(.get, "/.well-known/csaf/provider-metadata.json")
            #expect(metadata.string("role") == "csaf_provider" && metadata.string("metadata_version") == "2.0")
            let index = try await client.call(.get, "/.well-known/csaf/white/index.txt").text
            let path = try #require(index.split(separator: "\n").first.map(String.init))
            #expect(path.hasSuffix("/\(advisoryID.lowercased()).json"))
            #expect(try await client.call(.get, "/.well-known/csaf/white/changes.csv").text.contains(path))
            let csaf = try await client.call(.get, "/.well-known/csaf/white/\(path)")
            #expect(csaf.status == 200 && csaf.text.contains("CVE-2026-12345") && csaf.text.contains("A. Researcher"))
            #expect(try await client.call(.get, "/.well-known/csaf/white/2026/nothing.json").status == 404)
            let osv = try await client.call(.get, "/api/v1/advisories/\(advisoryID)/osv")
            #expect(osv.string("id") == "CVE-2026-12345")

            // Against the official schemas; and the check can fail: a document without tracking is refused.
            let csafResult = try await Self.validate("csaf", csaf.text)
            #expect(csafResult.valid, "CSAF 2.0 schema: \(csafResult.output)")
            let osvResult = try await Self.validate("osv", osv.text)
            #expect(osvResult.valid, "OSV schema: \(osvResult.output)")
            let broken = csaf.text.replacingOccurrences(of: #""tracking""#, with: #""trackin""#)
            await #expect(!(try Self.validate("csaf", broken)).valid, "the validator catches a missing field")

            // Owners of affected devices get a notice with the update; others do not.
            let notices = try await client.call(.get, "/api/v1/notices", token: ann)
            #expect(
                notices.text.contains(advisoryID) && notices.text.contains(units[0].serial.rawValue)
                    && notices.text.contains("Install firmware 1.3.0"), "\(notices.text)")
            #expect(!notices.text.contains(units[1].serial.rawValue), "only the owner's own devices")
            #expect(try await client.call(.get, "/api/v1/notices", token: bob).text == #"{"notices":[]}"#)
            #expect(try await client.call(.get, "/api/v1/advisories").text.contains(advisoryID))

            // Notices are derived from what an owner has now (ARCHITECTURE 36): a device claimed after
            // the advisory shows it; one released stops showing it.
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: OwnershipTests.claim(units[1]), token: bob)
                    .status == 201)
            let later = try await client.call(.get, "/api/v1/notices", token: bob)
            #expect(
                later.text.contains(advisoryID) && later.text.contains(units[1].serial.rawValue), "\(later.text)")
            #expect(
                try await client.call(
                    .post, "/api/v1/devices/\(units[0].serial)/unclaim", body: #"{"history":"delete"}"#, token: ann
                ).status == 200)
            #expect(try await client.call(.get, "/api/v1/notices", token: ann).text == #"{"notices":[]}"#)
        }
    }
}

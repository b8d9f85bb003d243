import Foundation
import HTTPTypes
import HearthCore
import HearthServer
import HearthStorage
import HearthTestSupport
import Hummingbird
import HummingbirdTesting
import Testing

/// Guideline 8 / UK GDPR art. 15, 20: an owner downloads everything Hearth holds about them, as a
/// ZIP that a reader no one here wrote (Python's zipfile, CRCs checked) opens; another owner's time
/// with the same device is never in it.
@Suite struct ExportTests {
    /// What Python's zipfile finds in an archive: every entry's CRC checked, each JSON file parsed.
    static let reader = """
        import json, sys, zipfile
        z = zipfile.ZipFile(sys.argv[1])
        bad = z.testzip()
        assert bad is None, f"bad CRC in {bad}"
        out = {"names": sorted(z.namelist()), "readme": z.read("README.txt").decode()[:40]}
        for name in z.namelist():
            if name.endswith(".json"):
                out[name] = json.loads(z.read(name))
        print(json.dumps(out))
        """

    static func open(_ bytes: [UInt8], python: String) async throws -> [String: JSONValue] {
        let dir = temporaryFolder()
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let zip = dir.appendingPathComponent("export.zip")
        try Data(bytes).write(to: zip)
        let script = dir.appendingPathComponent("read.py")
        try reader.write(to: script, atomically: true, encoding: .utf8)
        let run = try await ChildProcess.run(python, [script.path, zip.path])
        #expect(run.status == 0, "\(run.output)")
        guard case .object(let o) = try JSONValue.parse(Array(run.output.utf8)) else {
            throw DevicePathTests.TestFailure("not an object: \(run.output.prefix(300))")
        }
        return o
    }

    @Test func anOwnersExportHoldsTheirDataAndNoOneElses() async throws {
        let python = try requiredPython(module: "zipfile", package: "python3")
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let units = try await d.provisionThermostats(3)
        let telemetry = try #require(d.hearth.telemetry)
        @Sendable func readings(_ unit: ProvisionedUnit, _ range: ClosedRange<Int64>, temperature: Double)
            -> [TelemetryReading]
        {
            range.map {
                TelemetryReading(
                    serial: unit.serial, sequence: $0, deviceTime: nil,
                    receivedAt: d.time.now().addingTimeInterval(Double($0) / 1000),
                    values: ["temperature": .number(temperature), "heating": false, "target": 21])
            }
        }
        try await d.application.test(.router) { client in
            let ann = try await client.owner("ann@example.com")
            for unit in units {
                #expect(
                    try await client.call(.post, "/api/v1/devices/claim", body: OwnershipTests.claim(unit), token: ann)
                        .status == 201)
            }
            let browser = try await PageTests.browser(client, token: ann)
            _ = try await PageTests.post(client, "/devices/\(units[0].serial)/name", "name=Hall", as: browser)
            _ = try await client.call(
                .put, "/api/v1/devices/\(units[0].serial)/consents", body: #"{"granted":["comfort"]}"#, token: ann)
            let annID = try #require(try await d.store.device(units[0].serial)?.owner)
            try await d.store.appendAudit(
                AuditEntry(
                    .commandSent, actor: annID.description, subject: units[0].serial.rawValue, detail: "set_target",
                    at: d.time.now()))
            d.time.advance(by: 1)
            // 2,500 readings: more than one page of the store.
            _ = try await telemetry.append(readings(units[0], 1...2500, temperature: 20.5), refusals: [])
            _ = try await telemetry.append(readings(units[1], 1...3, temperature: 18.5), refusals: [])
            _ = try await telemetry.append(readings(units[2], 1...3, temperature: 17.5), refusals: [])
            d.time.advance(by: 10)
            // Units 1 and 2 were Ann's before: one history kept, one deleted. Bob has unit 1 now.
            _ = try await client.call(
                .post, "/api/v1/devices/\(units[1].serial)/unclaim", body: #"{"history":"keep"}"#, token: ann)
            _ = try await client.call(
                .post, "/api/v1/devices/\(units[2].serial)/unclaim", body: #"{"history":"delete"}"#, token: ann)
            d.time.advance(by: 10)
            let bob = try await client.owner("bob@example.com")
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: OwnershipTests.claim(units[1]), token: bob)
                    .status == 201)
            d.time.advance(by: 1)
            _ = try await telemetry.append(readings(units[1], 4...6, temperature: 30.5), refusals: [])

            let reply = try await client.call(.get, "/api/v1/account/export", token: ann)
            #expect(reply.status == 200 && reply.headers[.contentType] == "application/zip")
            #expect(reply.headers[.contentDisposition]?.contains("attachment; filename=\"hearth-data-") == true)
            let files = try await Self.open(reply.bytes, python: python)
            guard case .array(let names)? = files["names"] else { throw DevicePathTests.TestFailure("no names") }
            let expected = [
                "README.txt", "account.json", "activity.json", "commands.json", "consents.json", "devices.json",
                "notices/thermostat-t1.json", "readings/\(units[0].serial).json", "readings/\(units[1].serial).json",
                "updates.json",
            ]
            #expect(
                names.compactMap { if case .string(let s) = $0 { s } else { nil } } == expected.sorted(), "\(names)")
            #expect(files["account.json"]?.text.contains(#""email":"ann@example.com""#) == true)
            #expect(files["account.json"]?.text.contains(#""recoveryCodeSet":true"#) == true)
            #expect(files["devices.json"]?.text.contains(#""name":"Hall""#) == true)
            #expect(files["devices.json"]?.text.contains("deleted at your request") == true)
            #expect(files["consents.json"]?.text.contains(#""purpose":"comfort""#) == true)
            #expect(files["commands.json"]?.text.contains(#""command":"set_target""#) == true)
            #expect(files["activity.json"]?.text.contains("device.claimed") == true)
            if case .array(let all)? = files["readings/\(units[0].serial).json"] {
                #expect(all.count == 2500, "every reading, across pages")
            } else {
                Issue.record("no readings for the current device")
            }
            let past = files["readings/\(units[1].serial).json"]?.text ?? ""
            #expect(past.contains("18.5") && !past.contains("30.5"), "Ann's time only, not Bob's: \(past.prefix(300))")
            let all = files.values.map(\.text).joined()
            #expect(!all.contains("bob@example.com") && !all.contains("17.5"), "nothing of Bob's, nothing deleted")

            // Bob's export has his readings of unit 1 and none of Ann's.
            let bobs = try await Self.open(
                try await client.call(.get, "/api/v1/account/export", token: bob).bytes, python: python)
            let bobReadings = bobs["readings/\(units[1].serial).json"]?.text ?? ""
            #expect(bobReadings.contains("30.5") && !bobReadings.contains("18.5"), "\(bobReadings.prefix(300))")
            #expect(!bobs.values.map(\.text).joined().contains("ann@example.com"))

            // From the account page, with the cookie; not without a session.
            let page = try await client.call(.get, "/account", headers: browser.headers)
            #expect(page.text.contains(#"href="/account/export""#))
            let download = try await client.call(.get, "/account/export", headers: browser.headers)
            #expect(download.status == 200 && download.text.hasPrefix("PK"))
            #expect(try await client.call(.get, "/api/v1/account/export").status == 401)
            #expect(try await client.call(.get, "/account/export").status == 303)
            let records = try await d.store.auditRecords()
            #expect(records.filter { $0.kind == AuditKind.dataExported.rawValue }.count == 3)
        }
    }
}

import Foundation
import GRDB
import HearthCore
import HearthStorage
import HearthTestSupport
import Testing

@testable import HearthServer

/// `hearth assess` (issue 19): the EN 303 645 ICS, IXIT, PSTI statements and gap list made from a
/// live deployment, signed; each live check shown failing when its condition is broken.
@Suite(.serialized) struct AssessmentTests {
    typealias Demo = DevicePathTests.Demo

    /// The parsed `assessment.json` of a folder `hearth assess` wrote.
    static func document(_ out: URL) throws -> [String: JSONValue] {
        let json = try JSONValue.parse(Array(try Data(contentsOf: out.appendingPathComponent("assessment.json"))))
        guard case .object(let o) = json else { throw DevicePathTests.TestFailure("not an object") }
        return o
    }

    static func array(_ value: JSONValue?) -> [[String: JSONValue]] {
        guard case .array(let items)? = value else { return [] }
        return items.map(\.objectMembers)
    }

    static func string(_ value: JSONValue?) -> String? { if case .string(let s)? = value { s } else { nil } }

    static func strings(_ value: JSONValue?) -> [String] {
        guard case .array(let items)? = value else { return [] }
        return items.compactMap { string($0) }
    }

    /// The live check `id` of a document: passed, and what it saw.
    static func check(_ document: [String: JSONValue], _ id: String) -> (passed: Bool, saw: String)? {
        guard let c = array(document["checks"]).first(where: { string($0["id"]) == id }) else { return nil }
        return (c["passed"] == .bool(true), strings(c["saw"]).joined(separator: "\n"))
    }

    @Test(.enabled(if: toolsPresentOrRequired("curl", "openssl") && pythonPresentOrRequired("jsonschema")))
    func theDemoMeetsEveryMandatoryProvisionAndItsSignedReportVerifies() async throws {
        let curl = try curlPath()
        let openssl = try requiredTool("openssl", package: "openssl")
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let demo = try await Demo(data: dir.appendingPathComponent("data"))
        defer { demo.process.signal(SIGKILL) }
        let out = dir.appendingPathComponent("out")
        let run = try await runTool(
            hearthBinary().path, ["assess", "report", "--data", demo.data.path, "--out", out.path, "--fail-on-gaps"])
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.contains("8 of 8 live checks passed"), "\(run.output)")

        let document = try Self.document(out)
        let provisions = Self.array(document["provisions"])
        #expect(provisions.count == Provision.all.count)
        let mandatory = provisions.filter { Self.string($0["status"]) == "mandatory" }
        #expect(mandatory.count > 25)
        for p in mandatory {
            #expect(Self.string(p["outcome"]) == "met", "\(Self.string(p["id"]) ?? "?"): \(p["why"] ?? .null)")
            let evidence = Self.strings(p["evidence"]) + Self.strings(p["tests"]) + Self.strings(p["checks"])
            #expect(!evidence.isEmpty, "\(Self.string(p["id"]) ?? "?") has no evidence")
        }
        for p in provisions where Self.string(p["outcome"]) == "not-applicable" {
            #expect((Self.string(p["justification"])?.count ?? 0) >= 10, "\(p)")
        }
        for id in LiveCheckID.allCases {
            let check = try #require(Self.check(document, id.rawValue), "\(id) not run")
            #expect(check.passed, "\(id): \(check.saw)")
        }
        #expect(Self.check(document, "listeners-tls")?.saw.contains("TLS 1.0–1.1 refused") == true)
        #expect(Self.array(document["psti"]).count == 2)
        #expect(!Self.array(document["gaps"]).contains { Self.string($0["level"]) == "mandatory" })

        // The document validates against the schema it ships with, which is the one in the build.
        let schemaFile = out.appendingPathComponent("assessment.schema.json")
        #expect(try String(contentsOf: schemaFile, encoding: .utf8) == Assessment.schema)
        let text = try String(contentsOf: out.appendingPathComponent("assessment.json"), encoding: .utf8)
        let valid = try await AdvisoryTests.validate(schemaFile.path, text)
        #expect(valid.valid, "\(valid.output)")
        // The schema is not vacuous: a document missing its gap list or with an unknown outcome fails it.
        let broken = text.replacingOccurrences(of: #""outcome":"met""#, with: #""outcome":"perhaps""#)
        await #expect(try AdvisoryTests.validate(schemaFile.path, broken).valid == false)

        // The signature verifies with OpenSSL and with `hearth assess verify`; an edited copy fails both.
        let json = out.appendingPathComponent("assessment.json").path
        let key = out.appendingPathComponent("assessment-key.pem").path
        let sig = json + ".sig"
        let openSSLVerify = try await runTool(openssl, ["dgst", "-sha256", "-verify", key, "-signature", sig, json])
        #expect(openSSLVerify.output.contains("Verified OK"), "\(openSSLVerify.output)")
        #expect(
            try await runTool(hearthBinary().path, ["assess", "verify", json, "--data", demo.data.path]).status == 0)
        let edited = dir.appendingPathComponent("edited.json").path
        try text.replacingOccurrences(of: #""outcome":"not-met""#, with: #""outcome":"met""#)
            .write(toFile: edited, atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(atPath: sig, toPath: edited + ".sig")
        #expect(try String(contentsOfFile: edited, encoding: .utf8) != text, "the edit changed something")
        #expect(
            !(try await runTool(openssl, ["dgst", "-sha256", "-verify", key, "-signature", sig, edited]).output)
                .contains("Verified OK"))
        let refused = try await runTool(hearthBinary().path, ["assess", "verify", edited, "--key", key])
        #expect(refused.status == 1 && refused.output.contains("NOT verified"), "\(refused.output)")

        // The same assessment through the API, for operators only, signed with the published key.
        let op = try await demo.operatorToken(curl)
        let owner = try await demo.owner(curl, "ann@example.com")
        await #expect(try demo.call(curl, "GET", "/api/v1/assessment").status == 401)
        await #expect(try demo.call(curl, "GET", "/api/v1/assessment", token: owner).status == 403)
        let api = try await demo.call(curl, "GET", "/api/v1/assessment?model=lock-l1", token: op)
        #expect(api.status == 200)
        let envelope = try #require(api.json)
        let assessment = try #require(envelope.objectMembers["assessment"])
        #expect(Self.array(assessment.objectMembers["psti"]).count == 1)
        await #expect(try AdvisoryTests.validate(schemaFile.path, assessment.text).valid)
        let published = try await demo.call(curl, "GET", "/api/v1/assessment-key")
        let publicKey = try #require(Self.string(published.json?.objectMembers["publicKey"]))
        #expect(publicKey == (try String(contentsOfFile: key, encoding: .utf8)))
        let keyFile = dir.appendingPathComponent("published.pem").path
        try publicKey.write(toFile: keyFile, atomically: true, encoding: .utf8)
        let envelopeFile = dir.appendingPathComponent("api.json").path
        try envelope.text.write(toFile: envelopeFile, atomically: true, encoding: .utf8)
        #expect(
            try await runTool(hearthBinary().path, ["assess", "verify", envelopeFile, "--key", keyFile]).status == 0)
        try envelope.text.replacingOccurrences(of: "lock-l1", with: "lock-l2")
            .write(toFile: envelopeFile, atomically: true, encoding: .utf8)
        #expect(
            try await runTool(hearthBinary().path, ["assess", "verify", envelopeFile, "--key", keyFile]).status == 1)
        await #expect(try demo.call(curl, "GET", "/api/v1/assessment?model=no-such", token: op).status == 404)

        // The default subcommand, one model: one PSTI statement; the HTML page prints on its own.
        let one = dir.appendingPathComponent("one")
        #expect(
            try await runTool(
                hearthBinary().path,
                ["assess", "--data", demo.data.path, "--model", "thermostat-t1", "--out", one.path]
            )
            .status == 0)
        let single = try Self.document(one)
        #expect(single["models"] == .array(["thermostat-t1"]))
        let html = try String(contentsOf: one.appendingPathComponent("assessment.html"), encoding: .utf8)
        #expect(html.hasPrefix("<!doctype html>") && html.contains("@media print") && html.contains("5.13-1"))
    }

    /// A server weakened on purpose, one weakening per check: each live check fails and says why,
    /// and the gap list gives the fix; with no server running, the checks that need it say so.
    @Test func eachLiveCheckFailsWhenItsConditionIsBroken() async throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("data").path
        // A model whose support ended, added with the CLI.
        var old = ProductModel.demoModels()[0].json.objectMembers
        old["id"] = "thermostat-t0"
        old["supportEnds"] = "2020-01-31"
        let modelFile = dir.appendingPathComponent("old.json")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try JSONValue.object(old).serialized().write(to: modelFile)
        let added = try await runTool(hearthBinary().path, ["model", "add", "--data", data, "--file", modelFile.path])
        #expect(added.status == 0, "\(added.output)")
        let server = try HearthProcess([
            "serve", "--data", data, "--listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", "--metrics-listen",
            "127.0.0.1:0", "--dev-listener", "127.0.0.1:0", "--test-only-weak-suite", "--test-only-extra-listener",
            "--test-only-expired-security-txt",
        ])
        defer { server.signal(SIGKILL) }
        #expect(try await server.wait(for: "Undeclared listener (test only)"))
        let serving = URL(fileURLWithPath: data).appendingPathComponent("serving.json")
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: serving.path) {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(FileManager.default.fileExists(atPath: serving.path), "\(server.text)")
        let extraPort = try #require(
            server.text.firstMatch(of: /Undeclared listener \(test only\): 127\.0\.0\.1:(\d+)/).map { String($0.1) })

        // An audit record edited behind the server's back (its triggers dropped first).
        let db = try DatabaseQueue(path: URL(fileURLWithPath: data).appendingPathComponent("hearth.sqlite").path)
        try await db.write {
            try $0.execute(sql: "DROP TRIGGER audit_log_no_update")
            try $0.execute(sql: "UPDATE audit_log SET detail = 'edited' WHERE seq = 2")
        }

        let out = dir.appendingPathComponent("out")
        let run = try await runTool(
            hearthBinary().path, ["assess", "--data", data, "--out", out.path, "--fail-on-gaps"])
        #expect(run.status == 1, "--fail-on-gaps fails on mandatory gaps: \(run.output)")
        let document = try Self.document(out)
        let tls = try #require(Self.check(document, "listeners-tls"))
        #expect(!tls.passed)
        #expect(tls.saw.contains("WEAK SUITES ACCEPTED: ECDHE-ECDSA-AES128-SHA"), "\(tls.saw)")
        #expect(tls.saw.contains("mqtt-development") && tls.saw.contains("PLAINTEXT"), "\(tls.saw)")
        #expect(tls.saw.contains("mqtt-devices") && tls.saw.contains("weak suites refused"), "\(tls.saw)")
        let ports = try #require(Self.check(document, "declared-ports"))
        #expect(!ports.passed && ports.saw.contains("UNDECLARED: \(extraPort)"), "\(ports.saw)")
        let securityTxt = try #require(Self.check(document, "security-txt"))
        #expect(!securityTxt.passed && securityTxt.saw.contains("EXPIRED"), "\(securityTxt.saw)")
        let audit = try #require(Self.check(document, "audit-chain"))
        #expect(!audit.passed && audit.saw.contains("TAMPERED"), "\(audit.saw)")
        let support = try #require(Self.check(document, "support-periods"))
        #expect(!support.passed && support.saw.contains("thermostat-t0: until 2020-01-31 — ENDED"), "\(support.saw)")
        // Nothing published yet: no update repository to check.
        #expect(Self.check(document, "update-repository")?.saw.contains("no root.json") == true)
        #expect(Self.check(document, "common-passwords")?.passed == true)

        // Every weakening is on the record, and the gap list says what to do.
        #expect(
            document["deployment"]?.objectMembers["settings"]?.objectMembers["testOnlyFlags"]
                == .array(["test-only-weak-suite", "test-only-extra-listener", "test-only-expired-security-txt"]))
        let gaps = Self.array(document["gaps"])
        let fixes = gaps.compactMap { Self.string($0["fix"]) }.joined(separator: "\n")
        #expect(fixes.contains("without --dev-listener"), "\(fixes)")
        #expect(fixes.contains("hearth model support thermostat-t0"), "\(fixes)")
        #expect(fixes.contains("hearth audit show"), "\(fixes)")
        for id in ["5.5-1", "5.6-1", "5.2-1", "5.3-13"] {
            #expect(
                gaps.contains { Self.string($0["provision"]) == id && Self.string($0["level"]) == "mandatory" }, "\(id)"
            )
        }
        // Mandatory gaps come first.
        let levels = gaps.compactMap { Self.string($0["level"]) }
        #expect(levels == levels.sorted { $0 == "mandatory" && $1 != "mandatory" })

        // Stopped (SIGTERM removes serving.json): the checks that need the server say so.
        server.signal(SIGTERM)
        _ = try await server.waitForExit(timeout: 30)
        #expect(!FileManager.default.fileExists(atPath: serving.path))
        let offline = try await runTool(hearthBinary().path, ["assess", "--data", data, "--out", out.path])
        #expect(offline.output.contains("No server is running"), "\(offline.output)")
        let stopped = try Self.document(out)
        #expect(Self.check(stopped, "listeners-tls")?.saw == "no server is running on this data folder")
        #expect(stopped["deployment"]?.objectMembers["serverRunning"] == .bool(false))

        // A mistyped data folder is refused, not created and assessed as a new deployment.
        let typo = dir.appendingPathComponent("dta").path
        let refused = try await HearthProcess.run(["assess", "--data", typo, "--out", out.path])
        #expect(refused.status == 1 && refused.output.contains("holds no Hearth deployment"), "\(refused.output)")
        #expect(!FileManager.default.fileExists(atPath: typo))
    }

    /// The rules on their own: a model that declares nothing of its data, a maker without an
    /// address, statements that cannot be read, and firmware behind a security release.
    @Test func gapsNameTheirFixAndStatementsAreChecked() async throws {
        var model = ProductModel.demoModels()[0]
        model = ProductModel(
            id: model.id, name: model.name, maker: "Nobody Ltd",
            telemetry: model.telemetry.map { DataField(name: $0.name, type: $0.type, unit: $0.unit) }, commands: [],
            supportEnds: model.supportEnds, purposes: model.purposes)
        let input = AssessmentInput(
            at: Date(), serving: nil, storage: "SQLite",
            models: [ModelFacts(model: model, devices: 0, firstSerial: nil, lastSerial: nil)],
            statements: MakerStatements(), reports: 0, overdueReports: 0, checks: [])
        let assessment = Assessment(input)
        for id in ["5.8-3", "6-1", "6-5"] {
            let gap = try #require(assessment.gaps.first { $0.provision == id }, "\(id)")
            #expect(gap.why.contains("declares nothing for telemetry field temperature"), "\(gap.why)")
            #expect(gap.fix.contains("\"data\" object"), "\(gap.fix)")
        }
        let address = try #require(assessment.gaps.first { $0.provision == nil })
        #expect(address.fix.contains(#""Nobody Ltd": {"address""#))
        // Two models of one maker without an address: one gap naming both. Every value the page
        // shows is escaped (a model named like markup stays text).
        let marked = ProductModel(
            id: try ProductModelID("lamp-x1"), name: "<script>alert(1)</script> Lamp", maker: "Nobody Ltd",
            telemetry: [], commands: [], supportEnds: model.supportEnds, purposes: model.purposes)
        let two = Assessment(
            AssessmentInput(
                at: Date(), serving: nil, storage: "SQLite",
                models: [model, marked].map { ModelFacts(model: $0, devices: 0, firstSerial: nil, lastSerial: nil) },
                statements: MakerStatements(), reports: 0, overdueReports: 0, checks: []))
        let addressGaps = two.gaps.filter { $0.provision == nil }
        #expect(addressGaps.count == 1 && addressGaps[0].what.contains("thermostat-t1, lamp-x1"), "\(addressGaps)")
        let page = try two.html
        #expect(!page.contains("<script>") && page.contains("&lt;script&gt;alert(1)&lt;/script&gt; Lamp"))
        #expect(page.contains("<h3>AuthMech: Authentication mechanisms</h3>"), "rendered from the template")
        // The maker's part, unstated, is a gap that says how to state it.
        #expect(assessment.gaps.contains { $0.provision == "5.4-2" && $0.fix.contains("maker-statements.json") })
        // Without the server, every check-backed provision says how to run it.
        #expect(assessment.gaps.contains { $0.provision == "5.5-1" && $0.fix.contains("hearth serve") })

        // A statement that a mandatory, unconditional provision does not apply changes nothing;
        // for a conditional one it does, with the maker's reason.
        let statements = try MakerStatements(
            json: try JSONValue.parse(
                Array(
                    #"{"provisions":{"5.5-1":{"applies":false,"why":"we would rather not say"},"5.6-4":{"applies":false,"why":"no debug port on the board"}}}"#
                        .utf8)))
        let stated = Assessment(
            AssessmentInput(
                at: Date(), serving: nil, storage: "SQLite", models: [], statements: statements, reports: 0,
                overdueReports: 0, checks: []))
        #expect(stated.findings.first { $0.provision.id == "5.5-1" }?.outcome == .notMet)
        #expect(stated.findings.first { $0.provision.id == "5.6-4" }?.justification == "no debug port on the board")
        for bad in [
            #"{"provisions":{"5.99-1":{"met":true,"how":"somehow or other"}}}"#,
            #"{"provisions":{"5.6-4":{"met":false,"how":"somehow or other"}}}"#,
            #"{"provisions":{"5.6-4":{"met":true,"how":"short"}}}"#, #"{"manufacturers":{"X":{"address":7}}}"#,
            #"{"provisions":{"5.6-4":{"met":true,"how":"somehow or other","applies":false,"why":"no port at all"}}}"#,
            #"{"provisions":{"5.6-4":{"met":true,"how":"somehow or other","why":"no port at all"}}}"#,
            #"{"other":1}"#, "[]",
        ] {
            #expect(throws: HearthError.self, "\(bad)") {
                try MakerStatements(json: try JSONValue.parse(Array(bad.utf8)))
            }
        }

        // security.txt as RFC 9116 asks: a Contact, one Expires, future and within a year.
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        func txt(_ expires: TimeInterval, contact: Bool = true) -> String {
            (contact ? "Contact: mailto:s@example.com\n" : "")
                + "Expires: \(Advisory.timestamp(now.addingTimeInterval(expires)))\n"
        }
        #expect(Assessor.checkSecurityTxt(txt(86_400), now: now).ok)
        #expect(!Assessor.checkSecurityTxt(txt(-1), now: now).ok)
        #expect(!Assessor.checkSecurityTxt(txt(400 * 86_400), now: now).ok)
        #expect(!Assessor.checkSecurityTxt(txt(86_400, contact: false), now: now).ok)
        #expect(!Assessor.checkSecurityTxt("Contact: x\nExpires: tomorrow\n", now: now).ok)
        #expect(!Assessor.checkSecurityTxt(txt(86_400) + txt(86_400), now: now).ok)
    }

    @Test func firmwareBehindASecurityReleaseNeedsARolloutAndCommonPasswordsNeedTheList() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let units = try await d.provisionThermostats(2)
        let model = try ProductModelID("thermostat-t1")
        let assessor = Assessor(folder: d.folder, store: d.store)
        func release(_ version: String, _ severity: String) -> ReleaseRecord {
            ReleaseRecord(
                target: "thermostat-t1-\(version).img", model: model, version: version, length: 1, sha256: "00",
                custom: #"{"release_notes":{"severity":"\#(severity)"}}"#, publishedAt: Date())
        }
        try await d.store.publish([], releases: [release("1.0.0", "none"), release("1.1.0", "high")], audit: [])
        for unit in units {
            _ = try await d.store.appendUpdateEvent(
                UpdateEventRecord(
                    serial: unit.serial, at: Date(), phase: "idle", version: "1.0.0", target: nil, reason: nil))
        }
        let behind = try await assessor.firmwareCurrent([try #require(try await d.store.model(model))])
        #expect(!behind.passed)
        #expect(behind.saw == ["thermostat-t1: 2 DEVICES BELOW 1.1.0 WITHOUT AN OFFERED UPDATE"], "\(behind.saw)")
        #expect(behind.fix?.contains("hearth rollout start thermostat-t1-1.1.0.img") == true)
        try await d.store.createRollout(
            RolloutRecord(
                id: "RO-1", target: "thermostat-t1-1.1.0.img", model: model, stages: [100], failureThreshold: 0.1,
                minimumSample: 1, state: "active", stage: 0, note: nil, createdAt: Date(), updatedAt: Date()),
            audit: AuditEntry(.rolloutCreated, at: Date()))
        let offered = try await assessor.firmwareCurrent([try #require(try await d.store.model(model))])
        #expect(offered.passed, "\(offered.saw)")

        #expect(assessor.commonPasswords().passed)
        var weak = assessor
        weak.passwords = PasswordPolicy(blocklist: ["password"])
        let refused = weak.commonPasswords()
        #expect(!refused.passed && refused.saw[0].contains("missing from the build"), "\(refused.saw)")
    }

    /// The catalogue is EN 303 645's clauses 5 and 6 (67 provisions), each with its rule, and every
    /// test it cites as evidence exists.
    @Test func theCatalogueIsEN303645AndItsTestsExist() throws {
        let ids = Provision.all.map(\.id)
        #expect(ids.count == 67 && Set(ids).count == 67)
        for (clause, count) in [
            ("5.1", 5), ("5.2", 3), ("5.3", 16), ("5.4", 4), ("5.5", 8), ("5.6", 9), ("5.7", 2), ("5.8", 3), ("5.9", 3),
            ("5.10", 1), ("5.11", 4), ("5.12", 3), ("5.13", 1), ("6", 5),
        ] {
            #expect(ids.filter { $0.hasPrefix(clause + "-") } == (1...count).map { "\(clause)-\($0)" }, "\(clause)")
        }
        #expect(Set(ProvisionRule.rules.keys) == Set(ids))
        let cited = ProvisionRule.rules.values.flatMap(\.tests).map { name -> EvidenceTests.Citation in
            let parts = name.split(separator: ".")
            return EvidenceTests.Citation(document: "Rules.swift", suite: String(parts[0]), test: String(parts[1]))
        }
        #expect(cited.count > 80)
        let declared = EvidenceTests.Declared(try EvidenceTests.testSources(includingChecks: true))
        #expect(declared.unresolved(cited).isEmpty, "cited, not found: \(declared.unresolved(cited))")
        let renamed = EvidenceTests.Citation(document: "Rules.swift", suite: "AccountTests", test: "noSuchTest")
        #expect(declared.unresolved([renamed]) == [renamed])
    }
}

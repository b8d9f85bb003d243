import Crypto
import Foundation
import HTTPTypes
import HearthCore
import HearthCrypto
import HearthTestSupport
import Hummingbird
import HummingbirdTesting
import Testing

@testable import HearthServer

/// The defects of the security review (issue 12), each as it was found, and the sweeps that keep
/// the class from coming back. Every test here failed on the code before the fix.
@Suite struct SecurityDefectTests {
    static let owner = #"{"email":"ann@example.com","password":"a long and unusual passphrase"}"#
    static let wrong = #"{"email":"ann@example.com","password":"not the right passphrase"}"#

    /// Runs `count` calls at once and returns each one's outcome.
    static func parallel<T: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) async -> T) async -> [T] {
        await withTaskGroup(of: T.self) { group in
            for i in 0..<count { group.addTask { await body(i) } }
            return await group.reduce(into: []) { $0.append($1) }
        }
    }

    /// Parallel throttle tests give password hashing a queue that never sheds, so that the
    /// throttles alone decide what is evaluated (shedding has its own test).
    static func unshed(_ settings: inout HearthSettings) { settings.hashQueue = 10_000 }

    static func code(_ body: () async throws -> Void) async -> HearthError.Code? {
        do {
            try await body()
            return nil
        } catch let e as HearthError { return e.code } catch { return .internal }
    }

    // MARK: 1. A Range header crashed the process

    @Test func rangeHeadersFromTheNetworkNeverTrapAndNeverOverreach() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        _ = try await d.provisionThermostats(1)
        let repo = try await makerRepository(for: d)
        let name = try repo.addImage(model: "thermostat-t1", version: "1.1.0", minFrom: "1.0.0", size: 4096)
        repo.targetsVersion = 1
        try await d.importPublication(repo)
        let path = "/tuf/targets/\(Data(SHA256.hash(data: repo.images[name]!.bytes)).hex).\(name)"
        try await d.application.test(.router) { client in
            let extremes = [
                "bytes=-9223372036854775807-", "bytes=-9223372036854775808-", "bytes=-5-", "bytes=-0-",
                "bytes=9223372036854775807-",
                "bytes=99999999999999999999999999999999-", "bytes=+5-", "bytes= 5-", "bytes=4096-", "bytes=0-4095",
                "bytes=0-,1-", "bytes=", "bytes=-",
                "bytes=\u{0660}-", String(repeating: "bytes=1-", count: 500),
            ]
            for header in extremes {
                var headers = HTTPFields()
                headers[.range] = header
                let r = try await client.call(.get, path, headers: headers)
                #expect(r.status == 416, "\(header.prefix(40)): \(r.status)")
                #expect(r.headers[.contentRange] == "bytes */4096")
                #expect(try await client.call(.get, "/healthz").status == 200)
            }
            var headers = HTTPFields()
            headers[.range] = "bytes=4095-"
            let last = try await client.call(.get, path, headers: headers)
            #expect(
                last.status == 206 && last.headers[.contentRange] == "bytes 4095-4095/4096"
                    && last.headers[.contentLength] == "1")
        }
    }

    /// Every header and query parameter the server parses, with extremes: a 4xx, never a 5xx, and
    /// the server still answers afterwards.
    @Test func everyParsedValueWithExtremesGetsA4xxAndTheServerLives() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try await d.provisionThermostats(1)[0]
        try await d.application.test(.router) { client in
            let token = try await client.owner("ann@example.com")
            let claim = try await client.call(
                .post, "/api/v1/devices/claim",
                body: #"{"serial":"\#(unit.serial)","setupCode":"\#(unit.setupCode.digits)"}"#, token: token)
            #expect(claim.status == 201)
            let extremes = [
                "-1", "-9223372036854775808", "9223372036854775807", "9223372036854775808",
                String(repeating: "9", count: 400), "", "1e3", "0x10", "+1",
                " 1", "1.5", "NaN", "%00", "١", "99999-12-31T23:59:59Z", "-271821-04-20T00:00:00Z",
                "275760-09-13T00:00:00Z", "0000-00-00T00:00:00Z",
            ]
            let base = "/api/v1/devices/\(unit.serial)/telemetry"
            for parameter in ["limit", "after", "from", "to"] {
                for value in extremes {
                    let encoded = value.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
                    let r = try await client.call(.get, "\(base)?\(parameter)=\(encoded)", token: token)
                    #expect(
                        (200..<500).contains(r.status) && r.status != 404,
                        "\(parameter)=\(value.prefix(30)): \(r.status) \(r.text.prefix(120))")
                    if ["-1", "1e3", "", "NaN"].contains(value) { #expect(r.status == 400, "\(parameter)=\(value)") }
                }
                // Repeated parameters: one answer, no crash.
                #expect(try await client.call(.get, "\(base)?\(parameter)=1&\(parameter)=2", token: token).status < 500)
            }
            // Content-Length extremes go to the real server from the raw fuzzer's fixed list
            // (`HTTPFuzzTests`): this in-process client sets Content-Length itself.
            for value in [
                "Bearer", "Bearer ", "Bearer \(String(repeating: "A", count: 5000))", "Basic YWRtaW46YWRtaW4=",
                "bearer x",
            ] {
                var headers = HTTPFields()
                headers[.authorization] = value
                #expect(
                    try await client.call(.get, "/api/v1/me", headers: headers).status == 401, "\(value.prefix(20))")
            }
            #expect(try await client.call(.get, "/healthz").status == 200)
        }
    }

    // MARK: 2. Throttles were check-then-act

    @Test func parallelWrongSignInsFromOneSourceAreEvaluatedExactlyFiveTimes() async throws {
        let d = try TestDeployment(Self.unshed)
        defer { d.cleanUp() }
        let hearth = d.hearth
        _ = try await hearth.signUp(
            email: "ann@example.com", password: "a long and unusual passphrase", source: "10.0.0.9")
        let codes = await Self.parallel(30) { _ in
            await Self.code {
                _ = try await hearth.signIn(
                    email: "ann@example.com", password: "not the right passphrase", source: "10.0.0.1")
            }
        }
        #expect(codes.filter { $0 == .unauthorized }.count == 5, "\(codes)")
        #expect(codes.filter { $0 == .throttled }.count == 25)
        #expect(try await d.store.auditRecords().filter { $0.kind == "sign_in.failed" }.count == 5)
    }

    @Test func parallelSignInsFromOneSourceToManyAccountsAreEvaluatedExactlyTwentyTimes() async throws {
        let d = try TestDeployment(Self.unshed)
        defer { d.cleanUp() }
        let hearth = d.hearth
        let codes = await Self.parallel(40) { i in
            await Self.code {
                _ = try await hearth.signIn(
                    email: "user\(i)@example.com", password: "not the right passphrase", source: "10.0.0.1")
            }
        }
        #expect(codes.filter { $0 == .unauthorized }.count == 20, "\(codes)")
    }

    /// 8. The lockout: a stranger's wrong passwords no longer lock the owner out; guessing spread
    /// over many addresses meets the per-account ceiling.
    @Test func wrongPasswordsFromElsewhereNeverLockTheOwnerOutButManySourcesMeetACeiling() async throws {
        let d = try TestDeployment(Self.unshed)
        defer { d.cleanUp() }
        let hearth = d.hearth
        _ = try await hearth.signUp(
            email: "ann@example.com", password: "a long and unusual passphrase", source: "10.0.0.9")
        for _ in 0..<8 {
            _ = await Self.code {
                _ = try await hearth.signIn(
                    email: "ann@example.com", password: "not the right passphrase", source: "203.0.113.7")
            }
        }
        #expect(
            await Self.code {
                _ = try await hearth.signIn(
                    email: "ann@example.com", password: "not the right passphrase", source: "203.0.113.7")
            } == .throttled)
        #expect(
            await Self.code {
                _ = try await hearth.signIn(
                    email: "ann@example.com", password: "a long and unusual passphrase", source: "198.51.100.4")
            } == nil, "the owner signs in from home")
        // 130 sources at once: the per-account ceiling (100 failures) lets no more through.
        let codes = await Self.parallel(130) { i in
            await Self.code {
                _ = try await hearth.signIn(
                    email: "ann@example.com", password: "not the right passphrase", source: "192.0.2.\(i)")
            }
        }
        #expect(
            codes.filter { $0 == .unauthorized }.count == 100 - 5,
            "\(codes.filter { $0 == .unauthorized }.count) evaluated")
    }

    @Test func parallelWrongSetupCodesAreEvaluatedOnlyAsOftenAsAllowed() async throws {
        let d = try TestDeployment(Self.unshed)
        defer { d.cleanUp() }
        let hearth = d.hearth
        let units = try await d.provisionThermostats(12)
        let mallory = try await hearth.signUp(
            email: "mallory@example.com", password: "a long and unusual passphrase", source: "10.0.0.9")
        let identity = Identity(account: mallory, email: try EmailAddress("mallory@example.com"), tokenHash: "")
        @Sendable func wrong(_ unit: ProvisionedUnit) -> String {
            unit.setupCode.digits == "1357924680" ? "2468013579" : "1357924680"
        }
        // One device, 20 wrong codes at once from one account: 5 evaluated.
        let one = await Self.parallel(20) { i in
            await Self.code {
                _ = try await hearth.claim(
                    serial: units[0].serial.rawValue, setupCode: wrong(units[0]), by: identity, source: "10.0.1.\(i)")
            }
        }
        #expect(one.filter { $0 == .claimRejected }.count == 5, "\(one)")
        // Eleven other devices at once: the per-account limit (10) leaves 5 more.
        let many = await Self.parallel(11) { i in
            await Self.code {
                _ = try await hearth.claim(
                    serial: units[i + 1].serial.rawValue, setupCode: wrong(units[i + 1]), by: identity,
                    source: "10.0.2.\(i)")
            }
        }
        #expect(many.filter { $0 == .claimRejected }.count == 5, "\(many)")
        // The label's holder, from another account and address, is not blocked by any of it.
        let owner = try await hearth.signUp(
            email: "owner@example.com", password: "a long and unusual passphrase", source: "10.0.0.8")
        let claimed = try await hearth.claim(
            serial: units[0].serial.rawValue, setupCode: units[0].setupCode.digits,
            by: Identity(account: owner, email: try EmailAddress("owner@example.com"), tokenHash: ""),
            source: "198.51.100.4")
        #expect(claimed.owner == owner.id)
    }

    /// Guessing spread over many accounts meets the per-device ceiling: 24 accounts × 5 wrong codes
    /// at once, from 24 addresses, and exactly 100 are evaluated.
    @Test func parallelGuessesFromManyAccountsMeetThePerDeviceCeiling() async throws {
        let d = try TestDeployment(Self.unshed)
        defer { d.cleanUp() }
        let hearth = d.hearth
        let unit = try await d.provisionThermostats(1)[0]
        var identities: [Identity] = []
        for i in 0..<24 {
            let account = try await hearth.signUp(
                email: "m\(i)@example.com", password: "a long and unusual passphrase", source: "10.1.0.\(i)")
            identities.append(Identity(account: account, email: try EmailAddress("m\(i)@example.com"), tokenHash: ""))
        }
        let code = unit.setupCode.digits == "1357924680" ? "2468013579" : "1357924680"
        let all = identities
        let codes = await Self.parallel(120) { i in
            await Self.code {
                _ = try await hearth.claim(
                    serial: unit.serial.rawValue, setupCode: code, by: all[i % 24], source: "10.2.0.\(i % 24)")
            }
        }
        #expect(
            codes.filter { $0 == .claimRejected }.count == 100,
            "\(codes.filter { $0 == .claimRejected }.count) evaluated")
    }

    /// The per-account claim book: one account probing 20 different labels at once, from 20
    /// addresses, gets 10 wrong codes evaluated (it bounds how many serials one account can probe).
    @Test func parallelGuessesFromOneAccountAtManyDevicesMeetThePerAccountCeiling() async throws {
        let d = try TestDeployment(Self.unshed)
        defer { d.cleanUp() }
        let hearth = d.hearth
        let units = try await d.provisionThermostats(20)
        let account = try await hearth.signUp(
            email: "prober@example.com", password: "a long and unusual passphrase", source: "10.3.0.1")
        let prober = Identity(account: account, email: try EmailAddress("prober@example.com"), tokenHash: "")
        let codes = await Self.parallel(20) { i in
            await Self.code {
                let wrong = units[i].setupCode.digits == "1357924680" ? "2468013579" : "1357924680"
                _ = try await hearth.claim(
                    serial: units[i].serial.rawValue, setupCode: wrong, by: prober, source: "10.4.0.\(i)")
            }
        }
        #expect(
            codes.filter { $0 == .claimRejected }.count == 10,
            "\(codes.filter { $0 == .claimRejected }.count) evaluated: \(codes)")
    }

    /// The per-source book behind set-up links and report status tokens: 30 wrong ones at once
    /// from one address, 20 evaluated.
    @Test func parallelWrongSetupLinksAndStatusTokensAreEvaluatedTwentyTimes() async throws {
        let d = try TestDeployment(Self.unshed)
        defer { d.cleanUp() }
        let hearth = d.hearth
        _ = try await hearth.issueSetupLinkIfNeeded(baseURL: "https://x")
        let links = await Self.parallel(30) { _ in
            await Self.code {
                _ = try await hearth.redeemSetupLink(
                    token: SecureToken.generate(), email: "op@example.com",
                    password: "operator passphrase that is long", source: "10.0.0.1")
            }
        }
        #expect(links.filter { $0 == .expired }.count == 20, "\(links)")
        let statuses = await Self.parallel(30) { _ in
            await Self.code { _ = try await hearth.reportStatus(token: SecureToken.generate(), source: "10.0.0.2") }
        }
        #expect(statuses.filter { $0 == .notFound }.count == 20, "\(statuses)")
    }

    @Test func parallelReportsAndSignUpsCountEveryAttempt() async throws {
        let d = try TestDeployment(Self.unshed)
        defer { d.cleanUp() }
        let hearth = d.hearth
        let fields = try ReportSubmission.schema.validate([
            "title": "A flaw", "description": "Steps to reproduce the flaw in detail.",
        ])
        let reports = await Self.parallel(12) { _ in
            await Self.code { _ = try await hearth.submitReport(fields, source: "10.0.0.1") }
        }
        #expect(reports.filter { $0 == nil }.count == 5, "\(reports)")
        let signUps = await Self.parallel(15) { i in
            await Self.code {
                _ = try await hearth.signUp(
                    email: "u\(i)@example.com", password: "a long and unusual passphrase", source: "10.0.0.1")
            }
        }
        #expect(signUps.filter { $0 == nil }.count == 10, "\(signUps)")
    }

    /// Password hashing is bounded: past the running and queued slots a request is shed at once
    /// with 503 and Retry-After instead of waiting behind everyone else's.
    @Test func passwordHashingIsBoundedAndShedsLoadWith503() async throws {
        let d = try TestDeployment {
            $0.hashConcurrency = 1
            $0.hashQueue = 0
        }
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            _ = try await client.owner("ann@example.com")
            try await d.hearth.hashGate.enter()
            let shed = try await client.call(.post, "/api/v1/sessions", body: Self.owner)
            #expect(shed.status == 503 && shed.headers[.retryAfter] == "1", "\(shed.status) \(shed.text)")
            await d.hearth.hashGate.leave()
            #expect(
                try await client.call(.post, "/api/v1/sessions", body: Self.owner).status == 201,
                "shedding does not count as a failure")
        }
        let gate = HashGate(running: 2, queued: 2)
        try await gate.enter()
        try await gate.enter()
        async let third: Void = gate.enter()
        async let fourth: Void = gate.enter()
        while await gate.load.waiting < 2 { await Task.yield() }
        await #expect(throws: HearthError.self) { try await gate.enter() }
        await gate.leave()
        await gate.leave()
        try await third
        try await fourth
        #expect(await gate.load == (2, 0))
    }

    // MARK: 5, 6, 9, 10

    @Test func commandNamesMustBeTopicSafeIdentifiers() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let token = try await makeOperator(d, client)
            for name in ["#", "+", "a/b", "<b>x</b>", "set target", "ümlaut", "1abc", "a#"] {
                let model: JSONValue = [
                    "id": "bad-model", "name": "Bad", "maker": "Acme", "supportEnds": "2030-01-01", "telemetry": [],
                    "purposes": [["id": "run", "essential": true, "description": "What the device is for."]],
                    "commands": [
                        [
                            "name": .string(name), "parameters": [],
                            "data": [
                                "category": "usage", "purpose": "run", "personal": true, "recipients": ["you"],
                                "retentionDays": 30,
                            ],
                        ]
                    ],
                ]
                let r = try await client.call(.post, "/api/v1/models", body: model.text, token: token)
                #expect(r.status == 400 && r.field == "commands[0].name", "\(name): \(r.status) \(r.text)")
            }
            #expect(try await d.store.model(try ProductModelID("bad-model")) == nil)
        }
    }

    @Test func commonSequentialKeyboardAndRepeatedPasswordsAreRefused() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            for password in [
                "123456789012345", "qwertyuiopasdfgh", "abcdefghijklmnop", "correcthorsebatterystaple",
                "iloveyou iloveyou", "jenniferjennifer", "monkeybaseballdragon",
            ] {
                let r = try await client.call(
                    .post, "/api/v1/accounts", body: #"{"email":"ann@example.com","password":"\#(password)"}"#)
                #expect(r.status == 422 && r.error == "weak_password", "\(password): \(r.status) \(r.text)")
            }
            #expect(
                try await client.call(
                    .post, "/api/v1/accounts",
                    body: #"{"email":"ann@example.com","password":"lantern orbit velvet puzzle"}"#
                ).status == 201)
        }
    }

    /// 9. Through the real server and curl: only the certificate's names are answered; a Host
    /// an attacker chose is refused (421) and never reflected; every link uses the server's name.
    @Test(.enabled(if: toolsPresentOrRequired("curl"))) func onlyTheServersOwnHostNamesAreAnswered() async throws {
        let curl = try curlPath()
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("data").path
        let server = try HearthProcess([
            "serve", "--data", data, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--mqtt-listen",
            "127.0.0.1:0",
        ])
        #expect(try await server.wait(for: "Clients verify it"), "\(server.text)")
        let base = try #require(server.baseURL)
        let port = base.split(separator: ":").last!
        func get(_ path: String, host: String?) async throws -> (status: String, body: String) {
            let out = try await runTool(
                curl,
                ["-s", "-w", "\n%{http_code}", "--cacert", data + "/root-ca.pem"]
                    + (host.map { ["-H", "Host: \($0)"] } ?? []) + [base + path]
            ).output
            let lines = out.split(separator: "\n", omittingEmptySubsequences: false)
            return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"))
        }
        for host in [
            "evil.example", "localhost.evil.example", "127.0.0.1:99999", "127.0.0.1:-1", "[::2]", "localhost:1:2",
            "@localhost", "evil.example:\(port)",
        ] {
            for path in ["/.well-known/security.txt", "/.well-known/csaf/provider-metadata.json", "/healthz"] {
                let r = try await get(path, host: host)
                #expect(r.status == "421" || r.status == "400", "\(host) \(path): \(r.status)")
                #expect(!r.body.contains("evil"))
            }
        }
        let ok = try await get("/.well-known/security.txt", host: nil)
        #expect(
            ok.status == "200" && ok.body.contains("Canonical: https://127.0.0.1:\(port)/.well-known/security.txt"),
            "\(ok.status) \(ok.body.prefix(300))")
        let named = try await get("/.well-known/security.txt", host: "LOCALHOST:\(port)")
        #expect(
            named.status == "200" && named.body.contains("https://localhost:\(port)/security/report"),
            "\(named.body.prefix(300))")
        await #expect(try get("/healthz", host: nil).status == "200")
        server.signal(SIGTERM)
        _ = try await server.waitForExit()
    }

    @Test func onlyJSONInUTF8IsReadAsJSON() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            for type in [
                "application/jsonx", "application/json; charset=utf-16", "application/json-seq", "text/json",
                "application/json; charset=latin1",
            ] {
                let r = try await client.call(.post, "/api/v1/accounts", body: Self.owner, contentType: type)
                #expect(r.status == 415, "\(type): \(r.status)")
            }
            #expect(
                try await client.call(
                    .post, "/api/v1/accounts", body: Self.owner, contentType: "application/json; charset=UTF-8"
                ).status == 201)
        }
    }

    /// A method a documented path does not take: 405 with `Allow` (issue 13 found 404).
    @Test func undeclaredMethodsGet405WithAllow() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let cases: [(HTTPRequest.Method, String, String)] = [
                (.delete, "/api/v1/models", "GET, POST"), (.put, "/healthz", "GET"),
                (.patch, "/api/v1/sessions", "POST"),
                (.get, "/api/v1/devices/claim", "POST"), (.post, "/api/v1/models/thermostat-t1", "GET"),
            ]
            for (method, path, allow) in cases {
                let r = try await client.call(method, path)
                #expect(
                    r.status == 405 && r.headers[.allow] == allow && r.error == "method_not_allowed",
                    "\(method) \(path): \(r.status) \(r.headers[.allow] ?? "-")")
            }
            #expect(try await client.call(.get, "/api/v1/nothing").status == 404, "an unknown path stays 404")
            #expect(try await client.call(.get, "/api/v1/models").status == 200)
        }
    }

    // MARK: 7. Update reports without bound

    @Test func updateReportsAreRateLimitedPerDeviceAndRepeatsAddNoRows() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try await d.provisionThermostats(1)[0]
        let model = try ProductModelID("thermostat-t1")
        var refused = 0
        for i in 0..<200 {
            let phase = i % 2 == 0 ? "idle" : "downloading"
            let payload = Array(
                #"{"phase":"\#(phase)","version":"1.0.0"\#(phase == "idle" ? "" : #","target":"thermostat-t1-1.1.0.img""#)}"#
                    .utf8)
            do { _ = try await d.updates.received(report: payload, from: unit.serial, model: model) } catch let e
                as HearthError where e.code == .throttled
            { refused += 1 }
            d.time.advance(by: 0.01)
        }
        #expect(refused == 180, "a burst of 20, then one per 30 s")
        #expect(d.updates.reportsRateLimited == 180)
        #expect(try await d.store.updateEvents(unit.serial, limit: 1000).count == 20)
        d.time.advance(by: 30)
        let idle = Array(#"{"phase":"idle","version":"1.0.0"}"#.utf8)
        _ = try await d.updates.received(report: idle, from: unit.serial, model: model)
        #expect(try await d.store.updateEvents(unit.serial, limit: 1000).count == 21)
        d.time.advance(by: 30)
        _ = try await d.updates.received(report: idle, from: unit.serial, model: model)
        #expect(try await d.store.updateEvents(unit.serial, limit: 1000).count == 21, "a repeat adds no row")
    }
}

import Foundation
import HearthCore
import HearthCrypto
import Hummingbird
import HummingbirdTesting
import Logging
import Testing

@testable import HearthServer

@Suite struct AccountTests {
    @Test func theSetupLinkCreatesTheOperatorExactlyOnce() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let old = try await d.hearth.issueSetupLinkIfNeeded(baseURL: "https://x")!
        let link = try await d.hearth.issueSetupLinkIfNeeded(baseURL: "https://x")!
        let token = String(link.split(separator: "/").last!)
        let oldToken = String(old.split(separator: "/").last!)
        try await d.application.test(.router) { client in
            let body = { (t: String, email: String) in
                #"{"token":"\#(t)","email":"\#(email)","password":"\#(operatorPassword)"}"#
            }
            #expect(
                try await client.call(.post, "/api/v1/setup", body: body(oldToken, "old@example.com")).status == 410,
                "a replaced link is dead")
            let first = try await client.call(.post, "/api/v1/setup", body: body(token, "op@example.com"))
            #expect(first.status == 201)
            #expect(first.string("role") == "operator")
            let second = try await client.call(.post, "/api/v1/setup", body: body(token, "op2@example.com"))
            #expect(second.status == 410)
            #expect(second.error == "expired")
            // The page form of the same link is dead too.
            let page = try await client.postForm(
                "/setup/\(token)", "email=op3%40example.com&password=another+long+passphrase+here",
                pass: try await client.formPass("/setup/\(token)"))
            #expect(page.status == 410)
        }
        #expect(
            try await d.hearth.issueSetupLinkIfNeeded(baseURL: "https://x") == nil, "no link once an operator exists")
    }

    @Test func theSetupLinkExpiresAfterAnHour() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let link = try await d.hearth.issueSetupLinkIfNeeded(baseURL: "https://x")!
        d.time.advance(by: 3601)
        try await d.application.test(.router) { client in
            let r = try await client.call(
                .post, "/api/v1/setup",
                body:
                    #"{"token":"\#(link.split(separator: "/").last!)","email":"op@example.com","password":"\#(operatorPassword)"}"#
            )
            #expect(r.status == 410)
        }
        #expect(try await !d.store.hasOperator())
    }

    @Test func nothingAcceptsADefaultCredential() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            _ = try await makeOperator(d, client)
            for (user, password) in [
                ("admin", "admin"), ("admin@localhost", "password"), ("root@localhost", "root"),
                ("admin@example.com", "admin"), ("", ""), ("op@example.com", ""),
            ] {
                let r = try await client.call(
                    .post, "/api/v1/sessions", body: #"{"email":"\#(user)","password":"\#(password)"}"#)
                #expect([400, 401].contains(r.status), "\(user)")
            }
            for path in ["/api/v1/me", "/api/v1/devices"] {
                #expect(try await client.call(.get, path).status == 401)
                #expect(try await client.call(.get, path, token: "").status == 401)
                #expect(try await client.call(.get, path, token: String(repeating: "A", count: 43)).status == 401)
            }
            #expect(try await client.call(.post, "/api/v1/models", body: "{}").status == 401)
        }
    }

    @Test func signUpSignInAndSignOut() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let token = try await client.owner("ann@example.com")
            let me = try await client.call(.get, "/api/v1/me", token: token)
            #expect(me.status == 200)
            #expect(me.string("email") == "ann@example.com")
            #expect(me.string("role") == "owner")
            let dup = try await client.call(
                .post, "/api/v1/accounts", body: #"{"email":"ANN@example.com","password":"another long passphrase"}"#)
            #expect(dup.status == 409)
            let weak = try await client.call(
                .post, "/api/v1/accounts", body: #"{"email":"bob@example.com","password":"password123456789"}"#)
            #expect(weak.status == 422, "well-formed, refused for what it is")
            #expect(weak.error == "weak_password")
            #expect(weak.field == "password")
            #expect(
                try await client.call(.post, "/api/v1/models", body: "{}", token: token).status == 403,
                "owners cannot define models")
            #expect(try await client.call(.delete, "/api/v1/sessions/current", token: token).status == 204)
            #expect(try await client.call(.get, "/api/v1/me", token: token).status == 401)
        }
    }

    @Test func sessionsExpire() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let token = try await client.owner("ann@example.com")
            d.time.advance(by: d.hearth.settings.sessionLifetime + 1)
            #expect(try await client.call(.get, "/api/v1/me", token: token).status == 401)
        }
    }

    @Test func signInIsThrottledPerAccount() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            _ = try await client.owner("ann@example.com")
            let wrong = #"{"email":"ann@example.com","password":"not the right passphrase"}"#
            var statuses: [Int] = []
            for _ in 0..<8 { statuses.append(try await client.call(.post, "/api/v1/sessions", body: wrong).status) }
            #expect(statuses.prefix(5).allSatisfy { $0 == 401 })
            #expect(statuses.suffix(3).allSatisfy { $0 == 429 })
            let right = #"{"email":"ann@example.com","password":"a long and unusual passphrase"}"#
            let blocked = try await client.call(.post, "/api/v1/sessions", body: right)
            #expect(blocked.status == 429, "even the right password waits")
            #expect(blocked.headers[.retryAfter] != nil)
            d.time.advance(by: 901)
            #expect(try await client.call(.post, "/api/v1/sessions", body: right).status == 201)
            let failures = try await d.store.auditRecords().filter { $0.kind == "sign_in.failed" }
            #expect(failures.count == 5, "each checked failure is audited")
        }
    }
}

@Suite struct SessionSweeperTests {
    @Test func expiredSessionsAreSweptAndTheSweeperStopsWhenCancelled() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let (token, _, _) = try await {
            _ = try await d.hearth.signUp(
                email: "ann@example.com", password: "a long and unusual passphrase", source: "test")
            return try await d.hearth.signIn(
                email: "ann@example.com", password: "a long and unusual passphrase", source: "test")
        }()
        let hash = SecureToken.storageHash(token)
        d.time.advance(by: d.hearth.settings.sessionLifetime + 1)
        let sweeper = Periodic.sessionSweeper(
            store: d.store, time: d.time, interval: .milliseconds(20), logger: Logger(label: "test"))
        let task = Task { try await sweeper.run() }
        var gone = false
        for _ in 0..<200 where !gone {
            gone = try await d.store.session(tokenHash: hash) == nil
            try await Task.sleep(for: .milliseconds(10))
        }
        task.cancel()
        try await task.value
        #expect(gone)
    }
}

import Foundation
import HTTPTypes
import HearthCore
import HearthServer
import HearthStorage
import Hummingbird
import HummingbirdTesting
import Testing

/// EN 303 645 5.1-4: an owner changes their password (other sessions end) and recovers a
/// forgotten one with a recovery code that works once.
@Suite struct CredentialTests {
    static let password = "a long and unusual passphrase"
    static let newPassword = "another quite different passphrase"

    static func signUp(_ client: some TestClientProtocol, _ email: String) async throws -> String {
        let created = try await client.call(
            .post, "/api/v1/accounts", body: #"{"email":"\#(email)","password":"\#(password)"}"#)
        #expect(created.status == 201, "\(created.text)")
        return try #require(created.string("recoveryCode"))
    }

    static func signIn(_ client: some TestClientProtocol, _ email: String, _ password: String) async throws -> Reply {
        try await client.call(.post, "/api/v1/sessions", body: #"{"email":"\#(email)","password":"\#(password)"}"#)
    }

    @Test func changingThePasswordNeedsTheCurrentOneAndEndsEveryOtherSession() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            _ = try await Self.signUp(client, "ann@example.com")
            let here = try #require(try await Self.signIn(client, "ann@example.com", Self.password).string("token"))
            let phone = try #require(try await Self.signIn(client, "ann@example.com", Self.password).string("token"))
            let audit = try await d.store.auditRecords().count
            let refusals: [(String, Int, String)] = [
                (
                    #"{"currentPassword":"wrong but long enough","newPassword":"\#(Self.newPassword)"}"#, 401,
                    "currentPassword"
                ),
                (#"{"currentPassword":"\#(Self.password)","newPassword":"password123"}"#, 422, "newPassword"),
                (#"{"currentPassword":"\#(Self.password)","newPassword":"\#(Self.password)"}"#, 422, "newPassword"),
                (#"{"currentPassword":"\#(Self.password)"}"#, 400, "newPassword"),
                (#"{"currentPassword":"\#(Self.password)","newPassword":7}"#, 400, "newPassword"),
            ]
            for (body, status, field) in refusals {
                let reply = try await client.call(.post, "/api/v1/account/password", body: body, token: here)
                #expect(reply.status == status && reply.field == field, "\(body): \(reply.status) \(reply.text)")
            }
            #expect(
                try await client.call(.get, "/api/v1/devices", token: phone).status == 200, "refusals end nothing")
            let afterRefusals = try await d.store.auditRecords()
            #expect(
                !afterRefusals.contains { $0.kind == AuditKind.passwordChanged.rawValue }
                    && afterRefusals.count >= audit)
            let changed = try await client.call(
                .post, "/api/v1/account/password",
                body: #"{"currentPassword":"\#(Self.password)","newPassword":"\#(Self.newPassword)"}"#, token: here)
            #expect(changed.status == 200, "\(changed.text)")
            #expect(changed.text.contains(#""otherSessionsEnded":1"#), "the phone's: \(changed.text)")
            #expect(
                try await client.call(.get, "/api/v1/devices", token: phone).status == 401, "the phone is signed out")
            #expect(try await client.call(.get, "/api/v1/devices", token: here).status == 200, "this one stays")
            #expect(try await Self.signIn(client, "ann@example.com", Self.password).status == 401)
            #expect(try await Self.signIn(client, "ann@example.com", Self.newPassword).status == 201)
            let records = try await d.store.auditRecords()
            #expect(records.contains { $0.kind == AuditKind.passwordChanged.rawValue })
            #expect(
                try await client.call(
                    .post, "/api/v1/account/password",
                    body:
                        #"{"currentPassword":"\#(Self.newPassword)","newPassword":"yet another long passphrase here"}"#
                ).status == 401, "no session, no change")
        }
    }

    @Test func aRecoveryCodeResetsThePasswordOnceAndEndsEverySession() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let code = try await Self.signUp(client, "ann@example.com")
            #expect(code.wholeMatch(of: /[0-9A-Z]{4}(-[0-9A-Z]{4}){5}/) != nil, "\(code)")
            _ = try await Self.signUp(client, "bob@example.com")
            let session = try #require(try await Self.signIn(client, "ann@example.com", Self.password).string("token"))
            func recover(_ email: String, _ code: String, _ password: String = Self.newPassword) async throws -> Reply {
                try await client.call(
                    .post, "/api/v1/account/recover",
                    body: #"{"email":"\#(email)","recoveryCode":"\#(code)","newPassword":"\#(password)"}"#)
            }
            // Wrong code, another account's code shape, unknown address: one answer, nothing changes.
            let wrong = try await recover("ann@example.com", "0000-0000-0000-0000-0000-0000")
            let unknown = try await recover("nobody@example.com", code)
            let garbage = try await recover("ann@example.com", "not a code at all")
            for reply in [wrong, unknown, garbage] {
                #expect(reply.status == 401 && reply.field == "recoveryCode", "\(reply.text)")
            }
            #expect(wrong.text == unknown.text)
            let weak = try await recover("ann@example.com", code, "password123")
            #expect(weak.status == 422 && weak.field == "newPassword", "\(weak.text)")
            #expect(try await client.call(.get, "/api/v1/devices", token: session).status == 200, "nothing changed")
            #expect(try await Self.signIn(client, "ann@example.com", Self.password).status == 201)

            // As typed by a person: lower case, spaces for dashes, O for 0.
            let typed = code.lowercased().replacingOccurrences(of: "-", with: " ").replacingOccurrences(
                of: "0", with: "o")
            let done = try await recover("ann@example.com", typed)
            #expect(done.status == 200, "\(done.text)")
            let next = try #require(done.string("recoveryCode"))
            #expect(next != code)
            #expect(try await client.call(.get, "/api/v1/devices", token: session).status == 401, "every session ended")
            #expect(try await Self.signIn(client, "ann@example.com", Self.newPassword).status == 201)
            let again = try await recover("ann@example.com", code, "a third passphrase that is long")
            #expect(again.status == 401, "the used code works no more: \(again.text)")
            #expect(try await Self.signIn(client, "bob@example.com", Self.password).status == 201, "Bob untouched")
            let records = try await d.store.auditRecords()
            #expect(records.contains { $0.kind == AuditKind.accountRecovered.rawValue })

            // A new code on request needs the password; the one it replaces stops working.
            let fresh = try #require(try await Self.signIn(client, "ann@example.com", Self.newPassword).string("token"))
            let refused = try await client.call(
                .post, "/api/v1/account/recovery-code", body: #"{"password":"not the password at all"}"#, token: fresh)
            #expect(refused.status == 401 && refused.field == "password", "\(refused.text)")
            let renewed = try await client.call(
                .post, "/api/v1/account/recovery-code", body: #"{"password":"\#(Self.newPassword)"}"#, token: fresh)
            let third = try #require(renewed.string("recoveryCode"), "\(renewed.text)")
            #expect(renewed.status == 201 && third != next)
            #expect(try await recover("ann@example.com", next, "a fourth passphrase that is long").status == 401)
            #expect(try await recover("ann@example.com", third, "a fourth passphrase that is long").status == 200)
        }
    }

    /// A code raced from many requests at once still works once.
    @Test func aRecoveryCodeUsedInParallelWorksOnce() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let code = try await Self.signUp(client, "ann@example.com")
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<8 {
                    group.addTask {
                        try await client.call(
                            .post, "/api/v1/account/recover",
                            body:
                                #"{"email":"ann@example.com","recoveryCode":"\#(code)","newPassword":"racing passphrase number \#(i) here"}"#
                        ).status
                    }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == 200 }.count == 1, "\(statuses)")
            #expect(statuses.allSatisfy { [200, 401, 429, 503].contains($0) }, "\(statuses)")
        }
    }

    @Test func ownersChangeAndRecoverThroughThePages() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let pass = try await client.formPass("/signup")
            let signedUp = try await client.postForm(
                "/signup", "email=ann%40example.com&password=a+long+and+unusual+passphrase", pass: pass)
            #expect(signedUp.status == 200 && signedUp.text.contains("recovery code"), "\(signedUp.text)")
            let code = try #require(
                signedUp.text.firstMatch(of: /class="secret">([0-9A-Z-]{29})</).map { String($0.1) })
            let cookie = String((signedUp.headers[.setCookie] ?? "").split(separator: ";")[0])
            #expect(cookie.hasPrefix("__Host-hearth_session=") || cookie.contains("="), "signed in: \(cookie)")
            let token = String(cookie.split(separator: "=", maxSplits: 1).last ?? "")
            let browser = try await PageTests.browser(client, token: token)
            let account = try await client.call(.get, "/account", headers: browser.headers)
            #expect(account.text.contains(#"action="/account/password""#))
            #expect(account.text.contains(#"action="/account/recovery-code""#))
            #expect(account.text.contains("You have a recovery code"))

            let wrong = try await PageTests.post(
                client, "/account/password",
                "currentPassword=not+my+password+at+all&newPassword=another+quite+different+passphrase", as: browser)
            #expect(wrong.status == 401 && wrong.text.contains("the current password is wrong"), "\(wrong.status)")
            #expect(!wrong.text.contains("another quite different"), "a password is never sent back")
            let changed = try await PageTests.post(
                client, "/account/password",
                "currentPassword=a+long+and+unusual+passphrase&newPassword=another+quite+different+passphrase",
                as: browser)
            #expect(changed.status == 200 && changed.text.contains("Your password is changed"), "\(changed.text)")
            let fresh = try await PageTests.post(
                client, "/account/recovery-code", "password=another+quite+different+passphrase", as: browser)
            let newCode = try #require(
                fresh.text.firstMatch(of: /class="secret">([0-9A-Z-]{29})</).map { String($0.1) })
            #expect(newCode != code)

            #expect(try await client.call(.get, "/signin").text.contains(#"href="/recover""#))
            let recoverPass = try await client.formPass("/recover")
            let old = try await client.postForm(
                "/recover", "email=ann%40example.com&recoveryCode=\(code)&newPassword=a+third+long+passphrase+here",
                pass: recoverPass)
            #expect(old.status == 401, "the replaced code no longer works: \(old.status)")
            let recovered = try await client.postForm(
                "/recover",
                "email=ann%40example.com&recoveryCode=\(newCode)&newPassword=a+third+long+passphrase+here",
                pass: try await client.formPass("/recover"))
            #expect(recovered.status == 200 && recovered.text.contains("new recovery code"), "\(recovered.text)")
            #expect(
                try await Self.signIn(client, "ann@example.com", "a third long passphrase here").status == 201)
        }
    }
}

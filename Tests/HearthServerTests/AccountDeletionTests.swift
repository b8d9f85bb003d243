import Crypto
import Foundation
import HTTPTypes
import HearthCore
import HearthSQLite
import HearthServer
import HearthStorage
import Hummingbird
import HummingbirdTesting
import Testing

/// Guideline 11 / 5.11-2, UK GDPR art. 17: an owner deletes their account; after a cancellable
/// grace period their readings are gone from the database files (searched byte by byte, the
/// write-ahead logs included), their devices are free, and a receipt signed by the deployment says
/// what was deleted and when.
@Suite struct AccountDeletionTests {
    static let password = "a long and unusual passphrase"

    /// Whether any of the deployment's SQLite files (and their -wal) holds `text`.
    static func filesHold(_ d: TestDeployment, _ text: String) -> Bool { filesHold(d, Data(text.utf8)) }

    static func filesHold(_ d: TestDeployment, _ needle: Data) -> Bool {
        [d.folder.databasePath, d.folder.telemetryPath].flatMap { [$0, $0 + "-wal"] }.contains { path in
            FileManager.default.contents(atPath: path).map { $0.range(of: needle) != nil } ?? false
        }
    }

    @Test func aDeletedAccountLeavesNoReadingOnDiskAndItsReceiptVerifies() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let units = try await d.provisionThermostats(3)
        let telemetry = try #require(d.hearth.telemetry)
        @Sendable func reading(_ unit: ProvisionedUnit, _ seq: Int64, _ temperature: Double) -> TelemetryReading {
            TelemetryReading(
                serial: unit.serial, sequence: seq, deviceTime: nil, receivedAt: d.time.now(),
                values: ["temperature": .number(temperature), "heating": false, "target": 21])
        }
        try await d.application.test(.router) { client in
            let ann = try await client.owner("ann@example.com")
            let bob = try await client.owner("bob@example.com")
            for unit in units.prefix(2) {
                #expect(
                    try await client.call(.post, "/api/v1/devices/claim", body: OwnershipTests.claim(unit), token: ann)
                        .status == 201)
            }
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: OwnershipTests.claim(units[2]), token: bob)
                    .status == 201)
            _ = try await client.call(
                .put, "/api/v1/devices/\(units[0].serial)/consents", body: #"{"granted":["comfort"]}"#, token: ann)
            d.time.advance(by: 1)
            // Distinctive values: Ann's now, Ann's from a device she kept the history of, Bob's.
            _ = try await telemetry.append(
                (1...50).map { reading(units[0], $0, 17.3829) } + (1...50).map { reading(units[1], $0, 16.2837) }
                    + (1...50).map { reading(units[2], $0, 15.1234) }, refusals: [])
            d.time.advance(by: 1)
            _ = try await client.call(
                .post, "/api/v1/devices/\(units[1].serial)/unclaim", body: #"{"history":"keep"}"#, token: ann)
            // Sealed under each owner's data key from the start: no value is on disk in clear (the
            // search does find what is there: the serial numbers are kept in clear).
            #expect(Self.filesHold(d, units[0].serial.rawValue), "the search finds what is there")
            for value in ["17.3829", "16.2837", "15.1234"] { #expect(!Self.filesHold(d, value), "\(value) sealed") }
            #expect(
                try await telemetry.readings(
                    units[0].serial, from: .distantPast, to: .distantFuture, after: nil, limit: 100
                ).first?.reading.values["temperature"] == .number(17.3829), "and read back whole")
            let annID = try #require(try await d.store.device(units[0].serial)?.owner)
            let annKey = try #require(try await d.store.dataKey(owner: annID))
            #expect(Self.filesHold(d, annKey.wrapped), "her wrapped data key is in the database")
            // A backup of the readings, taken now: after the deletion, her part of it is unreadable.
            let backup = d.dir.appendingPathComponent("backup-telemetry.sqlite")
            for suffix in ["", "-wal"] where FileManager.default.fileExists(atPath: d.folder.telemetryPath + suffix) {
                try FileManager.default.copyItem(
                    atPath: d.folder.telemetryPath + suffix, toPath: backup.path + suffix)
            }

            // Requests: wrong password, then a real one; twice is a conflict; cancel; again.
            let delete = "/api/v1/account/delete"
            let wrong = try await client.call(
                .post, delete, body: #"{"password":"not the password at all"}"#, token: ann)
            #expect(wrong.status == 401 && wrong.field == "password", "\(wrong.text)")
            let first = try await client.call(.post, delete, body: #"{"password":"\#(Self.password)"}"#, token: ann)
            #expect(first.status == 202, "\(first.text)")
            #expect(
                try await client.call(.post, delete, body: #"{"password":"\#(Self.password)"}"#, token: ann).status
                    == 409)
            let page = try await client.call(
                .get, "/account", headers: try await PageTests.browser(client, token: ann).headers)
            #expect(page.text.contains("Your account will be deleted on"), "the account page says so")
            #expect(try await client.call(.post, "/api/v1/account/delete/cancel", token: ann).status == 200)
            #expect(try await client.call(.post, "/api/v1/account/delete/cancel", token: ann).status == 409)
            d.time.advance(by: 8 * 86_400)
            #expect(try await d.hearth.carryOutDeletions() == 0, "a cancelled request is not carried out")
            // Sessions last 12 hours: sign in again after the days that passed.
            @Sendable func session(_ email: String) async throws -> String {
                try #require(
                    try await client.call(
                        .post, "/api/v1/sessions", body: #"{"email":"\#(email)","password":"\#(Self.password)"}"#
                    ).string("token"))
            }
            let annNow = try await session("ann@example.com")
            let again = try await client.call(.post, delete, body: #"{"password":"\#(Self.password)"}"#, token: annNow)
            #expect(again.status == 202)
            let token = try #require(again.string("receiptToken"))
            #expect(try await client.call(.get, "/api/v1/deletion-receipts/\(token)").status == 404, "pending")

            // The grace period: nothing before it ends.
            d.time.advance(by: 6 * 86_400)
            #expect(try await d.hearth.carryOutDeletions() == 0)
            #expect(try await d.store.device(units[0].serial)?.owner != nil)
            d.time.advance(by: 86_400 + 1)
            #expect(try await d.hearth.carryOutDeletions() == 1)

            #expect(try await client.call(.get, "/api/v1/devices", token: annNow).status == 401, "every session ended")
            let signIn = try await client.call(
                .post, "/api/v1/sessions", body: #"{"email":"ann@example.com","password":"\#(Self.password)"}"#)
            #expect(signIn.status == 401, "the account is gone")
            #expect(try await d.store.device(units[0].serial)?.owner == nil, "her device is free")
            #expect(try await d.store.device(units[2].serial)?.owner != nil, "Bob's is not touched")
            #expect(!Self.filesHold(d, "17.3829"), "her readings are not on disk, WAL included")
            #expect(!Self.filesHold(d, "16.2837"), "nor those of the device she had before")
            #expect(try await d.store.dataKey(owner: annID) == nil, "her data key is destroyed")
            #expect(!Self.filesHold(d, annKey.wrapped), "and gone from the files, WAL included")
            let bobs = try await telemetry.readings(
                units[2].serial, from: .distantPast, to: .distantFuture, after: nil, limit: 100)
            #expect(bobs.count == 50)
            // Crypto-shredded: the backup still holds her sealed readings, and they cannot be read.
            let restored = try SQLiteTelemetryStore(path: backup.path, keys: try #require(d.hearth.readingKeys))
            #expect(try await restored.readingCount() == 150, "the backup has every row")
            for unit in units.prefix(2) {
                #expect(
                    try await restored.readings(
                        unit.serial, from: .distantPast, to: .distantFuture, after: nil, limit: 100
                    ).isEmpty, "hers cannot be opened")
            }
            #expect(
                try await restored.readings(
                    units[2].serial, from: .distantPast, to: .distantFuture, after: nil, limit: 100
                ).count == 50, "Bob's can")

            // The receipt, checked with the deployment's published key; an edited one fails.
            let receipt = try await client.call(.get, "/api/v1/deletion-receipts/\(token)")
            #expect(receipt.status == 200, "\(receipt.text)")
            let published = try await client.call(.get, "/api/v1/deletion-receipt-key")
            guard case .object(let signed)? = receipt.json, let body = signed["receipt"],
                case .string(let signature)? = signed["signature"], case .object(let keyJSON)? = published.json,
                case .string(let pem)? = keyJSON["publicKey"]
            else { throw DevicePathTests.TestFailure("no receipt: \(receipt.text)") }
            let key = try P256.Signing.PublicKey(pemRepresentation: pem)
            let ecdsa = try P256.Signing.ECDSASignature(derRepresentation: try #require(Data(base64Encoded: signature)))
            #expect(key.isValidSignature(ecdsa, for: body.serialized()), "the receipt verifies")
            let edited = Data(
                body.text.replacingOccurrences(of: "\"devicesReleased\":1", with: "\"devicesReleased\":0").utf8)
            #expect(
                edited != body.serialized() && !key.isValidSignature(ecdsa, for: edited), "an edited receipt does not")
            #expect(
                body.text.contains(#""devicesReleased":1"#) && body.text.contains(#""deviceHoldsWithReadings":2"#),
                "\(body.text)")
            #expect(try await client.call(.get, "/api/v1/deletion-receipts/not-a-token").status == 404)

            // Bob claims the freed device and sees nothing of Ann's.
            let bobNow = try await session("bob@example.com")
            #expect(
                try await client.call(
                    .post, "/api/v1/devices/claim", body: OwnershipTests.claim(units[0]), token: bobNow
                ).status == 201)
            let bobSees = try await client.call(.get, "/api/v1/devices/\(units[0].serial)/telemetry", token: bobNow)
            #expect(bobSees.status == 200 && !bobSees.text.contains("17.38"))
        }
    }

    @Test func operatorsCannotDeleteThemselvesAndPagesAskForThePassword() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let op = try await makeOperator(d, client)
            let refused = try await client.call(
                .post, "/api/v1/account/delete", body: #"{"password":"\#(operatorPassword)"}"#, token: op)
            #expect(refused.status == 403, "\(refused.text)")
            let ann = try await client.owner("ann@example.com")
            let browser = try await PageTests.browser(client, token: ann)
            let account = try await client.call(.get, "/account", headers: browser.headers)
            #expect(account.text.contains(#"action="/account/delete""#))
            let wrong = try await PageTests.post(
                client, "/account/delete", "password=wrong+but+long+enough", as: browser)
            #expect(wrong.status == 401 && wrong.text.contains("the password is wrong"), "\(wrong.status)")
            let done = try await PageTests.post(
                client, "/account/delete", "password=a+long+and+unusual+passphrase", as: browser)
            #expect(done.status == 200 && done.text.contains("/api/v1/deletion-receipts/"), "\(done.text)")
            let pending = try await client.call(.get, "/account", headers: browser.headers)
            #expect(pending.text.contains("Cancel the deletion"))
            let cancelled = try await PageTests.post(client, "/account/delete/cancel", "", as: browser)
            #expect(cancelled.status == 303)
            #expect(try await d.store.deletionsDue(now: .distantFuture, limit: 10).isEmpty)
        }
    }
}

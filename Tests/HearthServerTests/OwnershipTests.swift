import Foundation
import HTTPTypes
import HearthCore
import HearthServer
import HearthStorage
import Hummingbird
import HummingbirdTesting
import Testing

/// Guideline 11 / EN 303 645 5.11-2..4: an owner removes, hands on or disposes of a device, and
/// readings are kept no longer than declared (guideline 8).
@Suite struct OwnershipTests {
    static func claim(_ unit: ProvisionedUnit) -> String {
        #"{"serial":"\#(unit.serial)","setupCode":"\#(unit.setupCode.formatted)"}"#
    }

    static func reading(_ unit: ProvisionedUnit, _ seq: Int64, at: Date, humidity: Bool = true) -> TelemetryReading {
        var values: [String: JSONValue] = ["temperature": 19.25, "heating": true, "target": 21]
        if humidity { values["humidity"] = 47 }
        return TelemetryReading(serial: unit.serial, sequence: seq, deviceTime: nil, receivedAt: at, values: values)
    }

    /// The transfer test the issue asks for: Ann's history is invisible to Bob, in the API and on
    /// his pages, and nobody but Bob can take the device meanwhile (not even Ann, who knows the code).
    @Test func aTransferredDeviceShowsItsNewOwnerNothingOfThePreviousOne() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try await d.provisionThermostats(1)[0]
        let serial = unit.serial.rawValue
        let telemetry = try #require(d.hearth.telemetry)
        try await d.application.test(.router) { client in
            let ann = try await client.owner("ann@example.com")
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: Self.claim(unit), token: ann).status == 201)
            let annBrowser = try await PageTests.browser(client, token: ann)
            _ = try await PageTests.post(client, "/devices/\(serial)/name", "name=Ann%27s+bedroom", as: annBrowser)
            _ = try await client.call(
                .put, "/api/v1/devices/\(serial)/consents", body: #"{"granted":["comfort"]}"#, token: ann)
            d.time.advance(by: 60)
            _ = try await telemetry.append([Self.reading(unit, 1, at: d.time.now())], refusals: [])
            #expect(
                try await client.call(.get, "/api/v1/devices/\(serial)/telemetry", token: ann).text.contains(
                    #""seq":1"#))

            let annID = try #require(try await d.store.device(unit.serial)?.owner)
            let transfer = try await client.call(
                .post, "/api/v1/devices/\(serial)/transfer", body: #"{"to":"Bob@Example.com","history":"keep"}"#,
                token: ann)
            #expect(transfer.status == 200 && transfer.string("reason") == "transferred", "\(transfer.text)")
            #expect(try await client.call(.get, "/api/v1/devices/\(serial)/consents", token: ann).status == 404)
            d.time.advance(by: 60)
            let carl = try await client.owner("carl@example.com")
            for (who, token) in [("Carl", carl), ("Ann, who knows the code", ann)] {
                let taken = try await client.call(.post, "/api/v1/devices/claim", body: Self.claim(unit), token: token)
                #expect(taken.status == 422, "\(who) cannot claim it while it waits for Bob: \(taken.text)")
            }
            let bob = try await client.owner("bob@example.com")
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: Self.claim(unit), token: bob).status == 201)

            let bobSees = try await client.call(.get, "/api/v1/devices/\(serial)/telemetry", token: bob)
            #expect(bobSees.status == 200 && !bobSees.text.contains(#""seq":1"#), "\(bobSees.text)")
            let latest = try await client.call(.get, "/api/v1/devices/\(serial)/telemetry/latest", token: bob)
            #expect(latest.text == #"{"reading":null}"#, "\(latest.text)")
            let consents = try await client.call(.get, "/api/v1/devices/\(serial)/consents", token: bob)
            #expect(consents.text.contains(#""granted":false"#) && !consents.text.contains(#""granted":true"#))
            let bobBrowser = try await PageTests.browser(client, token: bob)
            let page = try await client.call(.get, "/devices/\(serial)", headers: bobBrowser.headers)
            #expect(page.status == 200)
            #expect(!page.text.contains("19.25") && !page.text.contains("19.3"), "Ann's reading is not on Bob's page")
            #expect(!page.text.contains("bedroom"), "nor Ann's name for the device")
            #expect(page.text.contains("No readings of temperature"), "nor her readings in the history charts")
            #expect(
                !page.text.contains("Renamed") && !page.text.contains("Privacy choices changed")
                    && !page.text.contains("Released by its owner"), "nor her logbook")
            // Bob's own first reading, in the chart slice the claim fell in, is drawn; Ann's is not.
            d.time.advance(by: 30)
            _ = try await telemetry.append(
                [
                    TelemetryReading(
                        serial: unit.serial, sequence: 2, deviceTime: nil, receivedAt: d.time.now(),
                        values: ["temperature": 26.75, "heating": false, "target": 21])
                ], refusals: [])
            d.time.advance(by: 1)
            let drawn = try await client.call(.get, "/devices/\(serial)", headers: bobBrowser.headers)
            #expect(!drawn.text.contains("No readings of temperature"), "Bob's reading is charted")
            #expect(drawn.text.contains("26.8") && !drawn.text.contains("19.3"), "only Bob's values on the chart")
            let devices = try await client.call(.get, "/devices", headers: bobBrowser.headers)
            #expect(!devices.text.contains("bedroom") && !devices.text.contains("19.3"))

            // Ann kept her history: it is still stored, and hers.
            #expect(try await telemetry.readingCount() == 2, "Ann's reading and Bob's")
            let past = try await d.store.ownerships(of: annID)
            #expect(past.map(\.reason) == [.transferred] && past.first?.historyKept == true)
        }
    }

    @Test func removingADeviceDeletesOrKeepsItsHistoryAsTheOwnerChooses() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let units = try await d.provisionThermostats(2)
        let telemetry = try #require(d.hearth.telemetry)
        try await d.application.test(.router) { client in
            let ann = try await client.owner("ann@example.com")
            for unit in units {
                #expect(
                    try await client.call(.post, "/api/v1/devices/claim", body: Self.claim(unit), token: ann).status
                        == 201)
            }
            // A reading from before Ann's claim (a previous owner's, kept by them) is not hers to delete.
            _ = try await telemetry.append([Self.reading(units[0], 1, at: d.time.now() - 10)], refusals: [])
            d.time.advance(by: 10)
            _ = try await telemetry.append(
                (2...4).map { Self.reading(units[0], $0, at: d.time.now()) }
                    + (1...3).map { Self.reading(units[1], $0, at: d.time.now()) }, refusals: [])
            let deleted = try await client.call(
                .post, "/api/v1/devices/\(units[0].serial)/unclaim", body: #"{"history":"delete"}"#, token: ann)
            #expect(deleted.status == 200 && deleted.string("history") == "deleted", "\(deleted.text)")
            let kept = try await client.call(
                .post, "/api/v1/devices/\(units[1].serial)/unclaim", body: #"{"history":"keep"}"#, token: ann)
            #expect(kept.status == 200 && kept.string("history") == "kept", "\(kept.text)")
            let left = try await telemetry.readings(
                units[0].serial, from: .distantPast, to: .distantFuture, after: nil, limit: 10)
            #expect(left.map(\.reading.sequence) == [1], "only Ann's readings went: \(left.map(\.reading.sequence))")
            #expect(
                try await telemetry.readings(
                    units[1].serial, from: .distantPast, to: .distantFuture, after: nil, limit: 10
                )
                .count == 3)
            #expect(try await d.store.pendingPurges(limit: 10).isEmpty, "the deletion is finished and recorded")
            #expect(try await client.call(.get, "/api/v1/devices", token: ann).text.contains(#""devices":[]"#))
            let again = try await client.call(
                .post, "/api/v1/devices/\(units[0].serial)/unclaim", body: #"{"history":"delete"}"#, token: ann)
            #expect(again.status == 404, "a second removal: \(again.text)")
            let bob = try await client.owner("bob@example.com")
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: Self.claim(units[0]), token: bob).status
                    == 201)
        }
    }

    @Test func aDisposedDeviceIsRevokedItsHistoryDeletedAndNobodyCanClaimIt() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try await d.provisionThermostats(1)[0]
        let serial = unit.serial.rawValue
        let telemetry = try #require(d.hearth.telemetry)
        try await d.application.test(.router) { client in
            let ann = try await client.owner("ann@example.com")
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: Self.claim(unit), token: ann).status == 201)
            _ = try await telemetry.append([Self.reading(unit, 1, at: d.time.now())], refusals: [])
            let unconfirmed = try await client.call(
                .post, "/api/v1/devices/\(serial)/dispose", body: #"{"confirm":"AAAA0000BBBB"}"#, token: ann)
            #expect(unconfirmed.status == 422 && unconfirmed.field == "confirm", "\(unconfirmed.text)")
            #expect(try await d.store.device(unit.serial)?.revokedAt == nil)
            let disposed = try await client.call(
                .post, "/api/v1/devices/\(serial)/dispose", body: #"{"confirm":"\#(serial)"}"#, token: ann)
            #expect(disposed.status == 200 && disposed.string("reason") == "disposed", "\(disposed.text)")
            let device = try #require(try await d.store.device(unit.serial))
            #expect(device.revokedAt != nil && device.owner == nil)
            #expect(try await telemetry.readingCount() == 0)
            let bob = try await client.owner("bob@example.com")
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: Self.claim(unit), token: bob).status == 422)
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: Self.claim(unit), token: ann).status == 422)
        }
    }

    /// Every refusal names its field and leaves the device, the audit log and the history as they were.
    @Test func badInputOnTheOwnershipRoutesChangesNothing() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let units = try await d.provisionThermostats(2)
        let serial = units[0].serial.rawValue
        try await d.application.test(.router) { client in
            let ann = try await client.owner("ann@example.com")
            let bob = try await client.owner("bob@example.com")
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: Self.claim(units[0]), token: ann).status
                    == 201)
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: Self.claim(units[1]), token: bob).status
                    == 201)
            let audit = try await d.store.auditRecords().count
            let cases: [(String, String, String?, Int, String?)] = [
                ("transfer", #"{"to":"ann@example.com","history":"keep"}"#, ann, 422, "to"),
                ("transfer", #"{"to":"ANN@example.com","history":"keep"}"#, ann, 422, "to"),
                ("transfer", #"{"to":"not an address","history":"keep"}"#, ann, 400, "to"),
                ("transfer", #"{"to":"bob@example.com"}"#, ann, 400, "history"),
                ("transfer", #"{"to":"bob@example.com","history":"maybe"}"#, ann, 400, "history"),
                ("transfer", #"{"to":"bob@example.com","history":"keep","extra":1}"#, ann, 400, "extra"),
                ("transfer", #"{"to":["bob@example.com"],"history":"keep"}"#, ann, 400, "to"),
                ("unclaim", #"{"history":true}"#, ann, 400, "history"),
                ("unclaim", #"{"history":"keep""#, ann, 400, nil),
                ("unclaim", #"{"history":"keep"}"#, bob, 404, "serial"),
                ("unclaim", #"{"history":"keep"}"#, nil, 401, nil),
                ("dispose", #"{"confirm":"\#(units[1].serial)"}"#, ann, 422, "confirm"),
                ("dispose", #"{"confirm":"\#(serial)"}"#, bob, 404, "serial"),
                ("dispose", #"{}"#, ann, 400, "confirm"),
            ]
            for (action, body, token, status, field) in cases {
                let reply = try await client.call(
                    .post, "/api/v1/devices/\(serial)/\(action)", body: body, token: token)
                #expect(reply.status == status, "\(action) \(body): \(reply.text)")
                if let field { #expect(reply.field == field, "\(action) \(body): \(reply.text)") }
            }
            let device = try #require(try await d.store.device(units[0].serial))
            #expect(device.owner != nil && device.reservation == nil && device.revokedAt == nil)
            #expect(try await d.store.auditRecords().count == audit, "nothing recorded")
            #expect(try await d.store.device(units[1].serial)?.revokedAt == nil)
        }
    }

    @Test func theOwnerRemovesHandsOnOrDisposesFromTheDevicePage() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let units = try await d.provisionThermostats(2)
        try await d.application.test(.router) { client in
            let ann = try await client.owner("ann@example.com")
            for unit in units {
                #expect(
                    try await client.call(.post, "/api/v1/devices/claim", body: Self.claim(unit), token: ann).status
                        == 201)
            }
            let browser = try await PageTests.browser(client, token: ann)
            let serial = units[0].serial.rawValue
            let device = try await client.call(.get, "/devices/\(serial)", headers: browser.headers)
            #expect(device.text.contains(#"href="/devices/\#(serial)/remove""#))
            #expect(device.text.contains(#"href="/devices/\#(serial)/privacy""#), "the privacy link has no query in it")
            let page = try await client.call(.get, "/devices/\(serial)/remove", headers: browser.headers)
            #expect(page.status == 200)
            for action in ["unclaim", "transfer", "dispose"] {
                #expect(page.text.contains(#"action="/devices/\#(serial)/\#(action)""#), "\(action)")
            }
            let own = try await PageTests.post(
                client, "/devices/\(serial)/transfer", "to=ann%40example.com&history=keep", as: browser)
            #expect(own.status == 400 && own.text.contains("your own address"), "\(own.status) \(own.text)")
            let wrong = try await PageTests.post(
                client, "/devices/\(serial)/dispose", "confirm=\(units[1].serial)", as: browser)
            #expect(wrong.status == 400 && wrong.text.contains("type the serial"), "\(wrong.status) \(wrong.text)")
            let forged = try await client.call(
                .post, "/devices/\(serial)/unclaim", body: "history=delete&csrf=forged",
                contentType: "application/x-www-form-urlencoded", headers: browser.headers)
            #expect(forged.status == 403)
            #expect(try await d.store.device(units[0].serial)?.owner != nil, "nothing changed so far")
            let done = try await PageTests.post(client, "/devices/\(serial)/unclaim", "history=keep", as: browser)
            #expect(done.status == 200 && done.text.contains("no longer yours"), "\(done.text)")
            #expect(try await d.store.device(units[0].serial)?.owner == nil)
            let other = units[1].serial.rawValue
            let gone = try await PageTests.post(client, "/devices/\(other)/dispose", "confirm=\(other)", as: browser)
            #expect(gone.status == 200 && gone.text.contains("can never connect again"), "\(gone.text)")
        }
    }

    /// Each field is deleted when its declared period is up (humidity 90 days, the others 365),
    /// and the device page says so.
    @Test func readingsPastTheirPeriodAreDeletedAndTheOwnerIsTold() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try await d.provisionThermostats(1)[0]
        let telemetry = try #require(d.hearth.telemetry)
        try await d.application.test(.router) { client in
            let ann = try await client.owner("ann@example.com")
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: Self.claim(unit), token: ann).status == 201)
            d.time.advance(by: 1)
            let start = d.time.now()
            _ = try await telemetry.append(
                [
                    Self.reading(unit, 1, at: start), Self.reading(unit, 2, at: start + 100 * 86_400),
                    Self.reading(unit, 3, at: start + 300 * 86_400),
                ], refusals: [])
            d.time.advance(by: 366 * 86_400)
            let swept = try await d.hearth.enforceRetention()
            #expect(swept.readings == 2 && swept.devices == 1, "\(swept)")
            let left = try await telemetry.readings(
                unit.serial, from: .distantPast, to: .distantFuture, after: nil, limit: 10
            ).map(\.reading)
            #expect(left.map(\.sequence) == [2, 3], "the year-old reading went")
            #expect(left.first?.values["humidity"] == nil && left.first?.values["temperature"] == 19.25)
            #expect(left.last?.values["humidity"] == 47, "a reading within 90 days keeps its humidity")
            #expect(try await d.store.auditRecords().last?.kind == AuditKind.readingsExpired.rawValue)
            #expect(try await d.hearth.enforceRetention().readings == 0, "nothing more to do")
            // A year on, Ann signs in afresh.
            let again = try await client.call(
                .post, "/api/v1/sessions",
                body: #"{"email":"ann@example.com","password":"a long and unusual passphrase"}"#)
            let browser = try await PageTests.browser(client, token: try #require(again.string("token")))
            let page = try await client.call(.get, "/devices/\(unit.serial)", headers: browser.headers)
            #expect(page.text.contains("humidity after 90 days") && page.text.contains("temperature after 365 days"))
            #expect(page.text.contains("The oldest one kept is from"), "\(page.text)")
        }
    }

    /// The server's side of a device's factory reset (the device side: `FactoryResetTests`): the
    /// claim ends once per reset, the label's code claims it again, and malformed or replayed
    /// messages change nothing.
    @Test func aDeviceResetEndsTheClaimOnceAndBadMessagesChangeNothing() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try await d.provisionThermostats(1)[0]
        try await d.application.test(.router) { client in
            let ann = try await client.owner("ann@example.com")
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: Self.claim(unit), token: ann).status == 201)
            let annID = try #require(try await d.store.device(unit.serial)?.owner)
            let audit = try await d.store.auditRecords().count
            for bad in [
                "", "null", "[]", "{}", #"{"reset":"short"}"#, #"{"reset":"\#(String(repeating: "a", count: 65))"}"#,
                #"{"reset":"has spaces in it"}"#, #"{"reset":12345678}"#, #"{"reset":"abcdefgh","more":1}"#,
                #"{"reset":"abcdefgh""#, String(repeating: " ", count: 300) + #"{"reset":"abcdefgh"}"#,
            ] {
                await #expect(throws: HearthError.self, "\(bad.prefix(40))") {
                    try await d.hearth.deviceReset(Array(bad.utf8), from: unit.serial)
                }
            }
            #expect(try await d.store.device(unit.serial)?.owner == annID)
            #expect(try await d.store.auditRecords().count == audit, "nothing recorded")
            let reset = Array(#"{"reset":"7f3e-reset-0001"}"#.utf8)
            try await d.hearth.deviceReset(reset, from: unit.serial)
            #expect(try await d.store.device(unit.serial)?.owner == nil)
            #expect(try await d.store.ownerships(of: annID).map(\.reason) == [.factoryReset])
            let bob = try await client.owner("bob@example.com")
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: Self.claim(unit), token: bob).status == 201)
            try await d.hearth.deviceReset(reset, from: unit.serial)
            #expect(try await d.store.device(unit.serial)?.owner != nil, "the same reset again ends nothing")
            #expect(try await client.call(.get, "/api/v1/devices/\(unit.serial)/consents", token: bob).status == 200)
        }
    }

    /// Re-keying is the owner's to ask for: others get 404, a signed-out caller 401, a deployment
    /// with no gateway 503 (nothing audited). The device side is `RekeyTests`.
    @Test func rekeyIsTheOwnersAndNeedsTheGateway() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try await d.provisionThermostats(1)[0]
        try await d.application.test(.router) { client in
            let ann = try await client.owner("ann@example.com")
            let bob = try await client.owner("bob@example.com")
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: Self.claim(unit), token: ann).status == 201)
            let path = "/api/v1/devices/\(unit.serial)/rekey"
            #expect(try await client.call(.post, path).status == 401)
            #expect(try await client.call(.post, path, token: bob).status == 404)
            #expect(try await client.call(.post, "/api/v1/devices/NOT-A-SERIAL/rekey", token: ann).status == 404)
            let unavailable = try await client.call(.post, path, token: ann)
            #expect(unavailable.status == 503, "\(unavailable.text)")
            let audit = try await d.store.auditRecords(subject: unit.serial.rawValue, limit: 50).map(\.kind)
            #expect(!audit.contains(AuditKind.deviceRekeyRequested.rawValue))
        }
    }
}

import Foundation
import HTTPTypes
import HearthCore
import HearthServer
import HearthStorage
import Hummingbird
import HummingbirdTesting
import Testing

/// Guideline 8 / EN 303 645 6-1..6-3: the notice before purchase, consent recorded and withdrawable,
/// and what a new owner may see.
@Suite struct PrivacyTests {
    @Test func theNoticeIsPublicAndShowsEveryDeclaredFieldAndPurpose() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try await d.provisionThermostats(1)[0]
        let model = ProductModel.demoModels()[0]
        #expect(unit.label.text.contains("https://localhost:8443/models/thermostat-t1/privacy"), "\(unit.label.text)")
        try await d.application.test(.router) { client in
            let page = try await client.call(.get, "/models/thermostat-t1/privacy")
            #expect(page.status == 200)
            for field in model.telemetry { #expect(page.text.contains(">\(field.name) <"), "\(field.name)") }
            for command in model.commands { #expect(page.text.contains(">\(command.name) <"), "\(command.name)") }
            for purpose in model.purposes { #expect(page.text.contains(purpose.description), "\(purpose.id)") }
            #expect(page.text.contains("90 days, then deleted") && page.text.contains("365 days, then deleted"))
            let api = try await client.call(.get, "/api/v1/models/thermostat-t1/privacy")
            #expect(api.status == 200 && api.string("version")?.count == 16, "\(api.text)")
            #expect(try await client.call(.get, "/models/nothing-here/privacy").status == 404)
            #expect(try await client.call(.get, "/api/v1/models/%00/privacy").status == 404)
            let products = try await client.call(.get, "/models")
            #expect(products.text.contains("href=\"/models/thermostat-t1/privacy\""))
        }
    }

    @Test func consentIsTheOwnersRecordedWithdrawableAndBadInputChangesNothing() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try await d.provisionThermostats(1)[0]
        let serial = unit.serial.rawValue
        try await d.application.test(.router) { client in
            let ann = try await client.owner("ann@example.com")
            let bob = try await client.owner("bob@example.com")
            let claim = #"{"serial":"\#(serial)","setupCode":"\#(unit.setupCode.formatted)"}"#
            #expect(try await client.call(.post, "/api/v1/devices/claim", body: claim, token: ann).status == 201)
            let path = "/api/v1/devices/\(serial)/consents"

            let fresh = try await client.call(.get, path, token: ann)
            #expect(fresh.status == 200, "\(fresh.text)")
            #expect(
                fresh.json?.text.contains(#""granted":false"#) == true, "optional purposes start off: \(fresh.text)")
            #expect(fresh.json?.text.contains(#""withheld":["humidity"]"#) == true, "\(fresh.text)")

            let audits = try await d.store.auditRecords().count
            for (body, status) in [
                // Well-formed but meaningless for this device: 422; malformed: 400.
                (#"{"granted":["marketing"]}"#, 422), (#"{"granted":["operation"]}"#, 422),
                (#"{"granted":["comfort","comfort"]}"#, 422), (#"{"granted":"comfort"}"#, 400),
                (#"{"granted":[1]}"#, 400), (#"{}"#, 400), (#"{"granted":[],"x":1}"#, 400), ("garbage", 400),
                (#"{"granted":["\#(String(repeating: "a", count: 33))"]}"#, 400),
            ] {
                let r = try await client.call(.put, path, body: body, token: ann)
                #expect(r.status == status, "\(body): \(r.status) \(r.text)")
            }
            #expect(try await client.call(.put, path, body: #"{"granted":["comfort"]}"#, token: bob).status == 404)
            #expect(try await client.call(.put, path, body: #"{"granted":["comfort"]}"#).status == 401)
            #expect(try await d.store.auditRecords().count == audits, "nothing recorded")
            #expect(try await d.store.consents(unit.serial, owner: try ownerID(d, unit.serial)).isEmpty)

            let agreed = try await client.call(.put, path, body: #"{"granted":["comfort"]}"#, token: ann)
            #expect(agreed.status == 200 && agreed.text.contains(#""withheld":[]"#), "\(agreed.text)")
            d.time.advance(by: 60)
            let again = try await client.call(.put, path, body: #"{"granted":["comfort"]}"#, token: ann)
            #expect(again.status == 200)
            let withdrawn = try await client.call(.put, path, body: #"{"granted":[]}"#, token: ann)
            #expect(withdrawn.text.contains(#""withheld":["humidity"]"#), "\(withdrawn.text)")
            let history = try await d.store.consents(unit.serial, owner: try ownerID(d, unit.serial))
            #expect(history.map(\.granted) == [true, false], "only changes are recorded")
            #expect(history.allSatisfy { $0.noticeVersion.count == 16 && $0.purpose == "comfort" })
            let kinds = try await d.store.auditRecords().suffix(2).map(\.kind)
            #expect(kinds == ["device.consent_changed", "device.consent_changed"])
        }
    }

    /// The page flow: claim leads to the choices; a form post changes them; garbage changes nothing.
    @Test func theOwnerChoosesOnTheirDevicesPrivacyPage() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try await d.provisionThermostats(1)[0]
        let serial = unit.serial.rawValue
        try await d.application.test(.router) { client in
            let browser = try await PageTests.browser(client, token: try await client.owner("ann@example.com"))
            let (cookie, csrf) = (browser.cookie, browser.csrf)
            let claimed = try await client.call(
                .post, "/claim",
                body: "csrf=\(csrf)&serial=\(serial)&setupCode=\(unit.setupCode.digits)",
                contentType: "application/x-www-form-urlencoded", headers: [.cookie: cookie])
            #expect(
                claimed.status == 303 && claimed.headers[.location] == "/devices/\(serial)/privacy", "\(claimed.text)")
            let page = try await client.call(.get, "/devices/\(serial)/privacy", headers: [.cookie: cookie])
            #expect(page.status == 200 && page.text.contains("name=\"consent-comfort\""), "\(page.text)")
            for bad in ["consent-comfort=maybe", "consent-operation=yes", "consent-comfort=yes&evil=1"] {
                let r = try await client.call(
                    .post, "/devices/\(serial)/privacy", body: "csrf=\(csrf)&\(bad)",
                    contentType: "application/x-www-form-urlencoded", headers: [.cookie: cookie])
                #expect(r.status == 400, "\(bad): \(r.status)")
            }
            #expect(try await d.store.consents(unit.serial, owner: try ownerID(d, unit.serial)).isEmpty)
            let saved = try await client.call(
                .post, "/devices/\(serial)/privacy", body: "csrf=\(csrf)&consent-comfort=yes",
                contentType: "application/x-www-form-urlencoded", headers: [.cookie: cookie])
            #expect(saved.status == 303 && saved.headers[.location] == "/devices/\(serial)/privacy?saved=1")
            #expect(try await d.store.consents(unit.serial, owner: try ownerID(d, unit.serial)).granted == ["comfort"])
            let crossSite = try await client.call(
                .post, "/devices/\(serial)/privacy", body: "csrf=wrong&consent-comfort=no",
                contentType: "application/x-www-form-urlencoded", headers: [.cookie: cookie])
            #expect(crossSite.status == 403)
            #expect(try await d.store.consents(unit.serial, owner: try ownerID(d, unit.serial)).granted == ["comfort"])
        }
    }

    func ownerID(_ d: TestDeployment, _ serial: DeviceSerial) async throws -> AccountID {
        try #require(try await d.store.device(serial)?.owner)
    }
}

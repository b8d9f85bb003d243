import Foundation
import HTTPTypes
import HearthCore
import HearthStorage
import Hummingbird
import HummingbirdTesting
import Testing

@testable import HearthServer

/// The owner's pages and the operator console, in process (issue 13). Chromium drives the same
/// pages in `BrowserTests`; these check what a page must contain and every refusal.
@Suite struct PageTests {
    /// A signed-in owner as a browser: the session cookie and the form token of their pages.
    struct Browser {
        let cookie: String
        let csrf: String
        var headers: HTTPFields { [.cookie: cookie] }
    }

    static func browser(_ client: some TestClientProtocol, token: String) async throws -> Browser {
        let cookie = "\(Pages.cookieName)=\(token)"
        let page = try await client.call(.get, "/claim", headers: [.cookie: cookie])
        let csrf =
            page.text.components(separatedBy: "name=\"csrf\" value=\"").dropFirst().first.map {
                String($0.prefix { $0 != "\"" })
            } ?? ""
        return Browser(cookie: cookie, csrf: csrf)
    }

    static func post(_ client: some TestClientProtocol, _ path: String, _ body: String, as browser: Browser)
        async throws -> Reply
    {
        try await client.call(
            .post, path, body: body + "&csrf=\(browser.csrf)", contentType: "application/x-www-form-urlencoded",
            headers: browser.headers)
    }

    /// A thermostat claimed by Ann with a day of readings, one a minute, the temperature rising
    /// from 18 to 22.8 °C.
    static func claimedWithHistory(_ d: TestDeployment, _ client: some TestClientProtocol) async throws -> (
        serial: String, ann: String
    ) {
        let unit = try await d.provisionThermostats(1)[0]
        let ann = try await client.owner("ann@example.com")
        // Claimed a day ago, so the day of history below is Ann's (an owner sees only what
        // arrived since they claimed the device).
        d.time.advance(by: -86_460)
        let claimed = try await client.call(
            .post, "/api/v1/devices/claim",
            body: #"{"serial":"\#(unit.serial)","setupCode":"\#(unit.setupCode.formatted)"}"#, token: ann)
        d.time.advance(by: 86_460)
        #expect(claimed.status == 201)
        let now = d.time.now()
        var readings: [TelemetryReading] = []
        for i in 0..<1440 {
            let at: Date = now.addingTimeInterval(Double(i - 1440) * 60 + 30)
            let temperature: Double = 18 + Double(i) / 300
            let values: [String: JSONValue] = [
                "temperature": .number(temperature), "humidity": .number(40), "heating": .bool(i % 2 == 0),
                "target": .number(21),
            ]
            readings.append(
                TelemetryReading(
                    serial: unit.serial, sequence: Int64(i + 1), deviceTime: nil, receivedAt: at, values: values))
        }
        try await d.hearth.telemetry!.append(readings, refusals: [])
        return (unit.serial.rawValue, ann)
    }

    @Test func anOwnerSeesCardsReadingsChartsControlsAndTheLogbook() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let (serial, ann) = try await Self.claimedWithHistory(d, client)
            let me = try await Self.browser(client, token: ann)
            let list = try await client.call(.get, "/devices", headers: me.headers)
            #expect(list.status == 200)
            for part in [
                "Hearth Thermostat T1", serial, "Offline", "22.8 °C", "40.0 %", "Last seen", "class=\"card\"",
                "href=\"/devices/\(serial)\"",
            ] {
                #expect(list.text.contains(part), "device card shows \(part)")
            }
            #expect(!list.text.contains(">Sign in<"), "signed in: the header offers sign-out, not sign-in")

            let page = try await client.call(.get, "/devices/\(serial)", headers: me.headers)
            #expect(page.status == 200)
            for part in [
                "<title>Hearth Thermostat T1 · Hearth</title>", "<svg class=\"chart\"",
                "<polyline class=\"line\" points=\"", "Temperature (°C)", "Humidity (%)",
                "over the last 24 hours: from 18.0 to 22.8 °C", "min=\"5\"", "max=\"30\"",
                "action=\"/devices/\(serial)/commands/setTarget\"", "Set target",
                "Security updates until 31 December 2031", "Set up (claimed) by its owner",
                "data-events=\"/devices/\(serial)/events\"", "/static/live.js",
            ] {
                #expect(page.text.contains(part), "device page shows \(part)")
            }
            // The line has one point a ten-minute slice of the day (slices are whole ten minutes, so
            // the first may begin before the window: 145 when now is not on the ten minutes).
            let points =
                page.text.components(separatedBy: "points=\"").dropFirst().first?.prefix { $0 != "\"" }.split(
                    separator: " "
                ).count ?? 0
            #expect((144...145).contains(points), "\(points) points")
            let hour = try await client.call(.get, "/devices/\(serial)?range=1h", headers: me.headers)
            #expect(hour.text.contains("over the last hour") && hour.text.contains("aria-current=\"page\">Last hour"))
            let week = try await client.call(.get, "/devices/\(serial)?range=7d", headers: me.headers)
            #expect(week.text.contains("over the last 7 days"))
            // An unknown range is the default, not an error.
            #expect(try await client.call(.get, "/devices/\(serial)?range=%00%FF", headers: me.headers).status == 200)

            // This in-process server runs no gateway: the page says nothing was sent (BrowserTests
            // sends a command to a real device through a real gateway).
            let sent = try await Self.post(client, "/devices/\(serial)/commands/setTarget", "target=23.5", as: me)
            #expect(sent.status == 503 && sent.text.contains("Nothing was sent"), "\(sent.text.prefix(300))")
        }
    }

    @Test func anotherOwnersDeviceIsA404LikeAnUnknownOne() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let (serial, _) = try await Self.claimedWithHistory(d, client)
            let bob = try await Self.browser(client, token: try await client.owner("bob@example.com"))
            let theirs = try await client.call(.get, "/devices/\(serial)", headers: bob.headers)
            let unknown = try await client.call(.get, "/devices/ZZZZ00000000", headers: bob.headers)
            #expect(theirs.status == 404 && unknown.status == 404)
            #expect(theirs.text == unknown.text, "the same answer: nothing confirms the device exists")
            for path in ["/devices/\(serial)/commands/setTarget", "/devices/\(serial)/name"] {
                let before = try d.snapshot()
                #expect(try await Self.post(client, path, "target=22&name=x", as: bob).status == 404)
                #expect(try d.snapshot() == before)
            }
            #expect(try await client.call(.get, "/devices/\(serial)/events", headers: bob.headers).status == 404)
            #expect(try await client.call(.get, "/devices/\(serial)").status == 303, "signed out: to the sign-in page")
        }
    }

    @Test func badInputOnEachPageGetsAMessageNextToItsFieldAndChangesNothing() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let (serial, ann) = try await Self.claimedWithHistory(d, client)
            let me = try await Self.browser(client, token: ann)
            let cases: [(path: String, body: String, field: String)] = [
                ("/devices/\(serial)/commands/setTarget", "target=99", "target"),
                ("/devices/\(serial)/commands/setTarget", "target=", "target"),
                ("/devices/\(serial)/commands/setTarget", "target=warm", "target"),
                ("/devices/\(serial)/commands/setTarget", "target=1e400", "target"),
                ("/devices/\(serial)/commands/setTarget", "target=" + String(repeating: "9", count: 5000), "target"),
                ("/devices/\(serial)/name", "name=" + String(repeating: "x", count: 41), "name"),
                ("/devices/\(serial)/name", "name=a%07b", "name"),
                ("/claim", "serial=&setupCode=", "serial"),
                ("/claim", "serial=" + String(repeating: "A", count: 33) + "&setupCode=1", "serial"),
            ]
            for c in cases {
                let before = try d.snapshot()
                let r = try await Self.post(client, c.path, c.body, as: me)
                #expect(r.status == 400, "\(c.path) \(c.body.prefix(40)): \(r.status)")
                #expect(
                    r.text.contains("id=\"f-\(c.field)-error\""),
                    "\(c.path) \(c.body.prefix(40)): the message sits by its field")
                #expect(r.text.contains("aria-invalid=\"true\""), "\(c.path): the field is marked invalid")
                #expect(
                    r.text.contains("aria-describedby=\"") && r.text.contains("f-\(c.field)-error\""),
                    "\(c.path): the field points at its message")
                #expect(try d.snapshot() == before, "\(c.path) \(c.body.prefix(40)) changed nothing")
            }
            // A wrong setup code: the serial typed is kept; the code is refused with a message.
            let wrong = try await Self.post(client, "/claim", "serial=\(serial)&setupCode=1234567890", as: me)
            #expect(
                wrong.status == 422 && wrong.text.contains("value=\"\(serial)\"")
                    && wrong.text.contains("role=\"alert\""))
            // Sign-up: the e-mail is kept, the password never echoed.
            let pass = try await client.formPass("/signup")
            let weak = try await client.postForm(
                "/signup", "email=new%40example.com&password=password123456789", pass: pass)
            #expect(
                weak.status == 422 && weak.text.contains("value=\"new@example.com\"")
                    && !weak.text.contains("password123456789"))
            #expect(weak.text.contains("id=\"f-password-error\""))
        }
    }

    @Test func namesAreStoredSealedAndShownEscaped() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let (serial, ann) = try await Self.claimedWithHistory(d, client)
            let me = try await Self.browser(client, token: ann)
            let named = try await Self.post(
                client, "/devices/\(serial)/name", "name=%3Cscript%3Ealert(1)%3C%2Fscript%3E+Emma%27s+room", as: me)
            #expect(named.status == 303)
            let page = try await client.call(.get, "/devices/\(serial)", headers: me.headers)
            #expect(
                page.text.contains("&lt;script&gt;alert(1)&lt;/script&gt; Emma&#39;s room")
                    && !page.text.contains("<script>alert"))
            #expect(!(try d.snapshot()).contains("Emma"), "the name is stored sealed")
            #expect(page.text.contains("Renamed"), "the logbook has it")
        }
    }

    @Test func theAccountPageListsSessionsAndSignsOutEverywhere() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let ann = try await client.owner("ann@example.com")
            let other = try await client.call(
                .post, "/api/v1/sessions",
                body: #"{"email":"ann@example.com","password":"a long and unusual passphrase"}"#
            ).string("token")!
            let me = try await Self.browser(client, token: ann)
            let page = try await client.call(.get, "/account", headers: me.headers)
            #expect(
                page.status == 200 && page.text.contains("ann@example.com")
                    && page.text.components(separatedBy: "<tr><td data-label=\"Signed in\">").count == 3)
            let out = try await Self.post(client, "/account/sign-out-everywhere", "", as: me)
            #expect(out.status == 303)
            #expect(try await client.call(.get, "/api/v1/me", token: other).status == 401, "the API token ended too")
            #expect(try await client.call(.get, "/account", headers: me.headers).status == 303)
        }
    }

    @Test func theConsoleIsForOperatorsAndPagesAFleetWithoutOwnersDetails() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let (serial, ann) = try await Self.claimedWithHistory(d, client)
            _ = try await d.provisioner().provision(
                modelID: ProductModel.demoModels()[0].id, count: 119, outDirectory: nil)
            let owner = try await Self.browser(client, token: ann)
            for path in [
                "/console", "/console/rollouts", "/console/audit", "/console/devices/\(serial)", "/console/models",
                "/console/reports",
            ] {
                #expect(
                    try await client.call(.get, path, headers: owner.headers).status == 403, "\(path) is not for owners"
                )
            }
            let op = try await Self.browser(client, token: try await makeOperator(d, client))
            let first = try await client.call(.get, "/console", headers: op.headers)
            #expect(
                first.status == 200 && first.text.contains("120 devices match")
                    && !first.text.contains("ann@example.com"))
            let rows = { (r: Reply) in r.text.components(separatedBy: "<td data-label=\"Serial\">").count - 1 }
            #expect(rows(first) == 50)
            var seen = Set<String>()
            var page = first
            var pages = 0
            while true {
                pages += 1
                for part in page.text.components(separatedBy: "href=\"/console/devices/").dropFirst() {
                    seen.insert(String(part.prefix { $0 != "\"" }))
                }
                guard
                    let next = page.text.components(separatedBy: "rel=\"next\"").first?.components(
                        separatedBy: "<a href=\""
                    ).last?.prefix(while: { $0 != "\"" }), page.text.contains("rel=\"next\"")
                else { break }
                page = try await client.call(
                    .get, String(next).replacingOccurrences(of: "&amp;", with: "&"), headers: op.headers)
            }
            #expect(
                pages == 3 && seen.count == 120,
                "three pages cover every device once: \(pages), \(seen.count) \(first.text.components(separatedBy: "pager").last?.prefix(200) ?? "")"
            )
            let claimed = try await client.call(.get, "/console?claimed=yes", headers: op.headers)
            #expect(rows(claimed) == 1 && claimed.text.contains(serial))
            let prefix = try await client.call(.get, "/console?serial=\(serial.prefix(6))", headers: op.headers)
            #expect(prefix.text.contains(serial))
            for bad in [
                "serial=%27%3B--", "claimed=maybe", "model=nope", "serial=" + String(repeating: "A", count: 33),
            ] {
                let r = try await client.call(.get, "/console?\(bad)", headers: op.headers)
                #expect(
                    r.status == 400 && r.text.contains("-error\"") && r.text.contains("aria-invalid=\"true\""), "\(bad)"
                )
            }
            #expect(
                try await client.call(.get, "/console?after=%00&serial=", headers: op.headers).status == 200,
                "a garbage cursor starts at the beginning")
            let audit = try await client.call(.get, "/console/audit", headers: op.headers)
            #expect(audit.text.contains("Intact: all"))
            let detail = try await client.call(.get, "/console/devices/\(serial)", headers: op.headers)
            #expect(detail.status == 200 && detail.text.contains("/console/devices/\(serial)/revoke"))
            // Quarantine by hand with the reason the owner reads, then release; a blank reason changes nothing.
            let blank = try await Self.post(client, "/console/devices/\(serial)/quarantine", "reason=+", as: op)
            #expect(blank.status == 200 && blank.text.contains("Not changed"), "\(blank.status)")
            #expect(try await d.store.device(DeviceSerial(serial))?.quarantine == nil)
            let held = try await Self.post(
                client, "/console/devices/\(serial)/quarantine", "reason=Seen+from+two+places", as: op)
            #expect(held.status == 200 && held.text.contains("Quarantined:"), "\(held.status)")
            #expect(try await d.store.device(DeviceSerial(serial))?.quarantine != nil)
            let freed = try await Self.post(client, "/console/devices/\(serial)/release", "", as: op)
            #expect(freed.status == 200 && freed.text.contains("Released from quarantine"), "\(freed.status)")
            #expect(try await d.store.device(DeviceSerial(serial))?.quarantine == nil)
            let revoked = try await Self.post(client, "/console/devices/\(serial)/revoke", "", as: op)
            #expect(revoked.status == 200 && revoked.text.contains("Revoked"))
            #expect(try await d.store.device(DeviceSerial(serial))?.revokedAt != nil)
            // The disclosure queue needs the security-team grant.
            #expect(try await client.call(.get, "/console/reports", headers: op.headers).status == 403)
        }
    }

    @Test func theSmallThingsAFirstVisitorMeets() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            // The style sheet and the one script are served with their types, cached for an hour.
            let css = try await client.call(.get, "/static/hearth.css")
            let script = try await client.call(.get, "/static/live.js")
            for (asset, type, sample) in [
                (css, "text/css; charset=utf-8", "{"), (script, "text/javascript; charset=utf-8", "EventSource"),
            ] {
                #expect(asset.status == 200 && asset.headers[.contentType] == type, "\(type): \(asset.status)")
                #expect(
                    asset.headers[.cacheControl] == "public, max-age=3600" && asset.text.contains(sample), "\(type)")
            }
            // The CSAF metadata is dated now, not 1970, while there is no advisory.
            let metadata = try await client.call(.get, "/.well-known/csaf/provider-metadata.json")
            let updated = try #require(
                metadata.string("last_updated").flatMap { try? Date.ISO8601FormatStyle().parse($0) })
            #expect(abs(updated.timeIntervalSince(d.time.now())) < 5, "\(metadata.text)")
            // A favicon, one title suffix, and a header that knows who is signed in.
            let icon = try await client.call(.get, "/favicon.ico")
            #expect(icon.status == 200 && icon.headers[.contentType] == "image/svg+xml" && icon.text.contains("<svg"))
            let home = try await client.call(.get, "/")
            #expect(home.text.contains("<title>Hearth</title>") && home.text.contains(">Sign in<"))
            let signin = try await client.call(.get, "/signin")
            #expect(signin.text.contains("<title>Sign in · Hearth</title>") && !signin.text.contains("Hearth · Hearth"))
            let (serial, token) = try await Self.claimedWithHistory(d, client)
            let ann = try await Self.browser(client, token: token)
            for path in [
                "/", "/models", "/security/policy", "/security/report", "/security/status", "/security/acknowledgments",
                "/devices", "/account", "/claim",
            ] {
                let page = try await client.call(.get, path, headers: ann.headers)
                #expect(
                    page.status == 200 && page.text.contains("action=\"/signout\"") && !page.text.contains(">Sign in<"),
                    "\(path) shows the signed-in header")
            }
            #expect(
                try await client.call(.get, "/signin", headers: ann.headers).status == 303,
                "signed in: no second sign-in form")
            // Only the site's own script file; no page has inline script or style (the CSP would
            // block them, as it once blocked the report form's style).
            for path in ["/", "/security/report", "/claim", "/devices", "/devices/\(serial)", "/account"] {
                let text = try await client.call(.get, path, headers: ann.headers).text
                let scripts = text.components(separatedBy: "<script").count - 1
                let own = text.components(separatedBy: "<script src=\"/static/live.js\" defer></script>").count - 1
                let handlers = text.range(of: #"<[^>]*\son[a-z]+="#, options: .regularExpression)
                #expect(
                    scripts == own && !text.contains("<style") && !text.contains("style=\"") && handlers == nil,
                    "\(path): inline code")
            }
        }
    }

    @Test func theSecurityTeamMovesAReportAndPublishesItsAdvisoryFromTheConsole() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        _ = try await d.provisionThermostats(1)
        try await d.application.test(.router) { client in
            let sent = try await client.call(.post, "/api/v1/reports", body: DisclosureTests.report)
            let id = try #require(sent.string("id"))
            let op = try await Self.browser(client, token: try await makeOperator(d, client))
            #expect(
                try await client.call(.get, "/console/reports/\(id)", headers: op.headers).status == 403,
                "the queue needs the grant")
            try await d.hearth.setSecurityTeam(email: "op@example.com", member: true)
            let page = "/console/reports/\(id)"
            for state in ["acknowledged", "valid", "fix_in_progress", "fixed"] {
                let moved = try await Self.post(
                    client, page + "/transition", "state=\(state)&note=Step+\(state)", as: op)
                #expect(moved.status == 200 && moved.text.contains("Moved to"), "\(state): \(moved.status)")
            }
            let queue = try await client.call(.get, "/console/reports", headers: op.headers)
            #expect(queue.text.contains(id) && queue.text.contains("Acknowledge by") && queue.text.contains("Overdue"))
            let form = try await client.call(.get, page, headers: op.headers)
            #expect(form.text.contains("action=\"\(page)/advisory\""), "a fixed report offers the advisory form")
            let good =
                "title=Setup+codes+could+be+guessed&summary=Claim+attempts+were+not+throttled.+Install+the+update.&severity=important&models=thermostat-t1&affectedBelow=1.3.0&fixedVersion=1.3.0&cve=CVE-2026-12345"
            for (bad, field) in [
                (good.replacingOccurrences(of: "CVE-2026-12345", with: "CVE-26-1"), "cve"),
                (good.replacingOccurrences(of: "models=thermostat-t1", with: "models=nope-x1"), "models"),
                (good.replacingOccurrences(of: "title=Setup+codes+could+be+guessed", with: "title="), "title"),
                (good.replacingOccurrences(of: "severity=important", with: "severity=meh"), "severity"),
            ] {
                let before = try d.snapshot()
                let r = try await Self.post(client, page + "/advisory", bad, as: op)
                #expect(
                    r.status == 400 && r.text.contains("id=\"f-\(field)-error\"") && r.text.contains("Not published"),
                    "\(field): \(r.status)")
                #expect(try d.snapshot() == before, "\(field): nothing changed")
            }
            let published = try await Self.post(client, page + "/advisory", good, as: op)
            #expect(
                published.status == 200 && published.text.contains("Published advisory"),
                "\(published.text.prefix(400))")
            #expect(try await client.call(.get, "/api/v1/advisories").text.contains("Setup codes could be guessed"))
        }
    }

    @Test func liveStreamsAreCappedPerAccountAndSlotsComeBackByThemselves() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try await d.provisionThermostats(1)[0]
        let device = try #require(try await d.store.device(unit.serial))
        let streams = LiveStreams()
        let ann = AccountID()
        let bob = AccountID()
        // Four open; the fifth is refused. (These bodies never run, as when a client leaves
        // before its stream starts.)
        for _ in 0..<4 { _ = try await streams.open(device, account: ann, hearth: d.hearth) }
        await #expect(throws: HearthError.self) { _ = try await streams.open(device, account: ann, hearth: d.hearth) }
        _ = try await streams.open(device, account: bob, hearth: d.hearth)
        // Ten at once from one account: exactly four get a stream.
        let carol = AccountID()
        let admitted = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<10 {
                group.addTask { (try? await streams.open(device, account: carol, hearth: d.hearth)) != nil }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(admitted == LiveStreams.perAccount, "\(admitted) admitted")
        // A stream lasts a minute: after 70 s its slot is free even if its body never ended it.
        d.time.advance(by: 71)
        for _ in 0..<4 { _ = try await streams.open(device, account: ann, hearth: d.hearth) }
    }

    @Test func templatesNeverSkipEscaping() throws {
        let folder = URL(fileURLWithPath: Views.folder)
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter {
            $0.hasSuffix(".mustache")
        }
        #expect(files.count >= 10)
        for file in files {
            let text = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8)
            #expect(!text.contains("{{{") && !text.contains("{{&"), "\(file) renders a value unescaped")
        }
    }

    @Test func chartAxesAreNiceAndEmptyHistoryIsSaidInWords() {
        #expect(
            Chart.niceStep(0.3) == 0.5 && Chart.niceStep(1.2) == 2 && Chart.niceStep(2.1) == 2.5
                && Chart.niceStep(7) == 10 && Chart.niceStep(.nan) == 1 && Chart.niceStep(-1) == 1)
        let empty = Chart(field: "temperature", unit: "°C", buckets: [], window: .day, now: Date())
        #expect(!empty.hasData && empty.summary == "No readings of temperature in the last 24 hours.")
        let flat = Chart(
            field: "battery", unit: "%",
            buckets: [TelemetryBucket(start: Date().addingTimeInterval(-60), count: 1, min: 50, max: 50, mean: 50)],
            window: .hour, now: Date())
        #expect(flat.hasData && flat.yTicks.count >= 2, "a flat line still has an axis")
        let wild = Chart(
            field: "x", unit: nil,
            buckets: [
                TelemetryBucket(start: Date(), count: 1, min: -1e300, max: 1e300, mean: 1e300),
                TelemetryBucket(start: Date(), count: 1, min: 0, max: 0, mean: -1e300),
            ], window: .week, now: Date())
        #expect(wild.yTicks.count < 20, "extreme values do not make an endless axis")
    }
}

import Foundation
import HTTPTypes
import HearthCore
import Hummingbird
import HummingbirdTesting
import Logging
import Testing

@testable import HearthServer

@Suite struct HTTPConventionTests {
    /// The served OpenAPI document against the live router: every documented operation is routed
    /// (called with real path values and the right token it is neither 401, 405 nor "no such
    /// resource"), needs its token (401 without; 403 for an owner where it says operators only),
    /// and refuses undocumented fields; every API route the router has that the document does not
    /// list answers 405.
    @Test func theOpenAPIDocumentMatchesTheRealRoutes() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let serial = try await d.provisionThermostats(1)[0].serial.rawValue
        try await d.application.test(.router) { client in
            let op = try await makeOperator(d, client)
            let owner = try await client.owner("owner@example.com")
            let doc = try await client.call(.get, "/api/v1/openapi.json")
            #expect(doc.status == 200)
            guard case .object(let root) = doc.json, case .object(let paths) = root["paths"] else {
                Issue.record("no paths in \(doc.text.prefix(200))")
                return
            }
            #expect(root["openapi"] == "3.1.0")
            var documented: Set<String> = []
            // Signing out ends the token the others use: last.
            for (path, item) in paths.sorted(by: {
                ($0.key == "/api/v1/sessions/current" ? 1 : 0, $0.key) < (
                    $1.key == "/api/v1/sessions/current" ? 1 : 0, $1.key
                )
            }) {
                guard case .object(let operations) = item else { continue }
                let concrete = path.replacingOccurrences(of: "{serial}", with: serial)
                    .replacingOccurrences(of: "{id}", with: "thermostat-t1").replacingOccurrences(
                        of: "{token}", with: "x")
                for (method, operation) in operations {
                    documented.insert("\(method.uppercased()) \(path)")
                    let verb = try #require(HTTPRequest.Method(method.uppercased()))
                    let secured = operation["security"] != nil
                    #expect(
                        (operation["x-hearth-access"] == "public") == !secured,
                        "\(method) \(path): public exactly when it needs no token")
                    let operatorsOnly = operation["x-hearth-access"] == "operator"
                    let body = operation["requestBody"] != nil ? "{}" : nil
                    let r = try await client.call(verb, concrete, body: body, token: secured ? op : nil)
                    #expect(
                        ![401, 405].contains(r.status) && !r.text.contains("no such resource"),
                        "\(method) \(path) with its token: \(r.status) \(r.text.prefix(200))")
                    if secured {
                        #expect(
                            try await client.call(verb, concrete, body: body).status == 401,
                            "\(method) \(path) without a token")
                    }
                    if operatorsOnly {
                        let asOwner = try await client.call(verb, concrete, body: body, token: owner)
                        #expect(
                            asOwner.status == 403, "\(method) \(path) as an owner: \(asOwner.status) \(asOwner.text)")
                    }
                    if body != nil {
                        let unknown = try await client.call(
                            verb, concrete, body: #"{"undocumented":1}"#, token: secured ? op : nil)
                        #expect([400, 403, 404].contains(unknown.status), "\(path) accepts undocumented fields")
                        #expect(unknown.status != 400 || unknown.field == "undocumented", "\(path): \(unknown.text)")
                    }
                }
            }
            #expect(documented.count > 50, "\(documented.count) operations documented")
            // The router's own list: an API route the document does not give answers 405 (the
            // methods a documented path does not take), and none is missing from the document.
            let router = HTTPSServer.router(hearth: d.hearth, logger: Logger(label: "routes"))
            for route in router.routes where route.path.description.hasPrefix("/api/") {
                let key = "\(route.method.rawValue) \(route.path.description)"
                guard !documented.contains(key) else { continue }
                let concrete = route.path.description.replacingOccurrences(of: "{serial}", with: serial)
                    .replacingOccurrences(of: "{id}", with: "thermostat-t1").replacingOccurrences(
                        of: "{token}", with: "x")
                let r = try await client.call(route.method, concrete, token: op)
                #expect(r.status == 405 && r.headers[.allow] != nil, "\(key) is routed but not documented: \(r.status)")
            }
            // Routes not in the document do not exist.
            for path in ["/api/v1/admin", "/api/v1/users", "/api/v1/devices/claim/x", "/api/v2/models"] {
                let r = try await client.call(.get, path)
                #expect(r.status == 404, "\(path)")
                #expect(r.error == "not_found")
            }
            #expect(try await client.call(.get, "/").text.contains("<title>Hearth</title>"), "no 'Hearth · Hearth'")
            #expect(try await client.call(.get, "/signin").text.contains("<title>Sign in · Hearth</title>"))
            let put = try await client.call(.put, "/api/v1/models")
            #expect(
                put.status == 405 && put.headers[.allow] == "GET, POST",
                "a documented path with another method: 405 and Allow")
        }
    }

    @Test func everyResponseCarriesTheSecurityHeaders() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            for path in ["/healthz", "/", "/signin", "/api/v1/nothing", "/api/v1/models"] {
                let r = try await client.call(.get, path)
                #expect(
                    r.headers[HTTPField.Name("Strict-Transport-Security")!]?.contains("max-age=") == true, "\(path)")
                #expect(
                    r.headers[HTTPField.Name("Content-Security-Policy")!]?.contains("default-src 'none'") == true,
                    "\(path)")
                #expect(r.headers[HTTPField.Name("X-Content-Type-Options")!] == "nosniff", "\(path)")
                #expect(r.headers[HTTPField.Name("X-Frame-Options")!] == "DENY", "\(path)")
            }
            #expect(try await client.call(.get, "/healthz").text == #"{"status":"ok"}"#)
        }
    }

    @Test func operatorsDefineModelsThatArePublishedWithTheirSupportPeriod() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let op = try await makeOperator(d, client)
            var model = ProductModel.demoModels()[0].json
            if case .object(var o) = model {
                o["name"] = "<script>alert(1)</script> Plug"
                o["id"] = "plug-p1"
                model = .object(o)
            }
            let created = try await client.call(
                .post, "/api/v1/models", body: String(decoding: model.serialized(), as: UTF8.self), token: op)
            #expect(created.status == 201)
            #expect(created.string("supportEndsText") == "Security updates until 31 December 2031")
            #expect(
                try await client.call(
                    .post, "/api/v1/models", body: String(decoding: model.serialized(), as: UTF8.self), token: op
                ).status == 409)
            #expect(try await client.call(.get, "/api/v1/models/plug-p1").status == 200)
            #expect(try await client.call(.get, "/api/v1/models/nope").status == 404)
            let page = try await client.call(.get, "/models")
            #expect(page.text.contains("&lt;script&gt;alert(1)&lt;/script&gt; Plug"))
            #expect(!page.text.contains("<script>"))
            #expect(page.text.contains("31 December 2031"))
        }
    }

    @Test func thePagesWorkWithoutJavaScript() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try await d.provisionThermostats(1)[0]
        try await d.application.test(.router) { client in
            let form = "application/x-www-form-urlencoded"
            let credentials = "email=ann%40example.com&password=a+long+and+unusual+passphrase"
            let pass = try await client.formPass("/signup")
            #expect(pass.cookie.hasPrefix("__Host-hearth_form=") && pass.csrf.count == 64)
            // Without the form's token, or with another browser's, nothing happens.
            #expect(try await client.call(.post, "/signup", body: credentials, contentType: form).status == 403)
            #expect(
                try await client.postForm(
                    "/signup", credentials, pass: (pass.cookie, String(repeating: "0", count: 64))
                ).status == 403)
            #expect(
                try await client.postForm(
                    "/signup", credentials, pass: (try await client.formPass("/signup").cookie, pass.csrf)
                ).status == 403)
            // A browser's post from another site, even with a valid pass, is refused.
            #expect(
                try await client.postForm(
                    "/signup", credentials, pass: pass, headers: [HTTPField.Name("Sec-Fetch-Site")!: "cross-site"]
                ).status == 403)
            #expect(
                try await client.postForm("/signup", credentials, pass: pass, headers: [.origin: "null"]).status == 403)
            #expect(
                try await d.store.auditRecords().filter { $0.kind == "account.created" }.isEmpty,
                "none of those created an account")
            let signup = try await client.postForm(
                "/signup", credentials, pass: pass,
                headers: [HTTPField.Name("Sec-Fetch-Site")!: "same-origin", .origin: "https://localhost"])
            #expect(
                signup.status == 200 && signup.text.contains("recovery code"), "signed up, shown the recovery code once"
            )
            let cookie = signup.headers[.setCookie] ?? ""
            #expect(cookie.hasPrefix("__Host-hearth_session="))
            for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
                #expect(cookie.contains(flag), "cookie lacks \(flag)")
            }
            let session = String(cookie.split(separator: ";")[0])
            let claimPage = try await client.call(.get, "/claim", headers: [.cookie: session])
            #expect(claimPage.status == 200)
            let csrf = claimPage.text.components(separatedBy: "name=\"csrf\" value=\"")[1].prefix(64)
            let noCSRF = try await client.call(
                .post, "/claim", body: "serial=\(unit.serial)&setupCode=\(unit.setupCode.digits)&csrf=0",
                contentType: form, headers: [.cookie: session])
            #expect(noCSRF.status == 403)
            let claimed = try await client.call(
                .post, "/claim", body: "serial=\(unit.serial)&setupCode=\(unit.setupCode.formatted)&csrf=\(csrf)",
                contentType: form, headers: [.cookie: session])
            #expect(claimed.status == 303)
            #expect(
                try await client.call(.get, "/devices", headers: [.cookie: session]).text.contains(unit.serial.rawValue)
            )
            #expect(try await client.call(.get, "/devices").status == 303, "signed out visitors are sent to sign in")
            let crossSite = try await client.postForm(
                "/signin", credentials, pass: try await client.formPass("/signin"),
                headers: [.origin: "https://evil.example"])
            #expect(crossSite.status == 403)
            let noFetchMetadata = try await client.call(
                .post, "/claim", body: "serial=\(unit.serial)&setupCode=\(unit.setupCode.digits)&csrf=\(csrf)",
                contentType: form, headers: [.cookie: session, HTTPField.Name("Sec-Fetch-Site")!: "same-site"])
            #expect(noFetchMetadata.status == 403, "a signed-in form from a sibling site is refused too")
        }
    }
}

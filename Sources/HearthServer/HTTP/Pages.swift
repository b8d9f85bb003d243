import Crypto
import Foundation
import HTTPTypes
import HearthCore
import HearthCrypto
import HearthStorage
import Hummingbird

/// Server-rendered pages that work without JavaScript (the CSP forbids all script). Every value
/// shown is HTML-escaped. Forms post back to the same origin; signed-in forms carry a CSRF token
/// bound to the session, and the session cookie is `__Host-`, Secure, HttpOnly, SameSite=Strict.
struct Pages {
    let hearth: Hearth
    static let cookieName = "__Host-hearth_session"

    func register(on router: Router<HearthRequestContext>) {
        let hearth = self.hearth
        let limit = hearth.settings.maxBodyBytes

        router.get("/static/hearth.css") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/css; charset=utf-8", .cacheControl: "public, max-age=3600"], body: .init(byteBuffer: ByteBuffer(string: Self.css)))
        }
        router.get("/") { request, _ in
            let identity = try await Self.cookieIdentity(request, hearth: hearth)
            return Self.page("Hearth", identity: identity, body: """
                <h1>Hearth</h1>
                <p>Your connected devices, set up securely. Every device has its own identity and its own setup code;
                nothing here has a default password.</p>
                <ul>
                <li><a href="/claim">Set up a device</a> with the serial and setup code on its label</li>
                <li><a href="/devices">Your devices</a></li>
                <li><a href="/models">Products and how long they get security updates</a></li>
                <li><a href="/security/policy">Report a security vulnerability</a> (no account needed)</li>
                <li><a href="/signup">Create an account</a> or <a href="/signin">sign in</a></li>
                </ul>
                """)
        }
        router.get("/models") { request, _ in
            let identity = try await Self.cookieIdentity(request, hearth: hearth)
            let now = hearth.time.now()
            let rows = try await hearth.store.models().map {
                Updates.ended($0.supportEnds, now: now)
                    ? "<tr><td>\(esc($0.name))</td><td>\(esc($0.maker))</td><td>Security updates <strong>ended on \(esc($0.supportEnds.plainEnglish))</strong>: no more fixes</td></tr>"
                    : "<tr><td>\(esc($0.name))</td><td>\(esc($0.maker))</td><td>Security updates until <strong>\(esc($0.supportEnds.plainEnglish))</strong></td></tr>"
            }
            return Self.page("Products", identity: identity, body: """
                <h1>Products</h1>
                <table><tr><th>Product</th><th>Maker</th><th>Support period</th></tr>\(rows.joined())</table>
                """)
        }

        registerDisclosure(on: router)

        // Sign-up and sign-in.
        for kind in ["signup", "signin"] {
            let title = kind == "signup" ? "Create an account" : "Sign in"
            router.get(RouterPath("/\(kind)")) { request, _ in
                let formGuard = FormGuard(request, hearth: hearth)
                return formGuard.attach(Self.credentialsForm(kind, title: title, message: nil, csrf: formGuard.token))
            }
            router.post(RouterPath("/\(kind)")) { request, context in
                let formGuard = FormGuard(request, hearth: hearth)
                do {
                    let form = try await formGuard.fields(request, limit: limit, schema: API.credentials)
                    let email = form.string("email")!, password = form.string("password")!
                    if kind == "signup" { _ = try await hearth.signUp(email: email, password: password, source: context.source) }
                    let session = try await hearth.signIn(email: email, password: password, source: context.source)
                    return Self.redirect("/devices", cookie: "\(Self.cookieName)=\(session.token); Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=\(Int(hearth.settings.sessionLifetime))")
                } catch let error as HearthError {
                    if error.code == .forbidden || error.code == .throttled || error.code == .unavailable { return Self.errorPage(error) }
                    return formGuard.attach(Self.credentialsForm(kind, title: title, message: error, csrf: formGuard.token))
                }
            }
        }
        router.post("/signout") { request, _ in
            if let identity = try await Self.cookieIdentity(request, hearth: hearth) {
                _ = try await FormGuard(session: identity).fields(request, limit: limit, schema: ObjectSchema([]))
                try await hearth.signOut(identity)
            }
            return Self.redirect("/", cookie: "\(Self.cookieName)=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
        }

        // Devices and set-up.
        router.get("/devices") { request, _ in
            guard let identity = try await Self.cookieIdentity(request, hearth: hearth) else { return Self.redirect("/signin") }
            let rows = try await hearth.devices(of: identity).map { "<tr><td><code>\(esc($0.serial.rawValue))</code></td><td>\(esc($0.model.rawValue))</td></tr>" }
            return Self.page("Your devices", identity: identity, body: """
                <h1>Your devices</h1>
                \(rows.isEmpty ? "<p>No devices yet.</p>" : "<table><tr><th>Serial</th><th>Model</th></tr>\(rows.joined())</table>")
                <p><a href="/claim">Set up a device</a></p>
                """)
        }
        router.get("/claim") { request, _ in
            guard let identity = try await Self.cookieIdentity(request, hearth: hearth) else { return Self.redirect("/signin") }
            return Self.claimForm(identity, message: nil)
        }
        router.post("/claim") { request, context in
            guard let identity = try await Self.cookieIdentity(request, hearth: hearth) else { return Self.redirect("/signin") }
            do {
                let form = try await FormGuard(session: identity).fields(request, limit: limit, schema: API.claim)
                _ = try await hearth.claim(serial: form.string("serial")!, setupCode: form.string("setupCode")!, by: identity, source: context.source)
                return Self.redirect("/devices")
            } catch let error as HearthError {
                return Self.claimForm(identity, message: error)
            }
        }

        // The first operator's one-time set-up link.
        router.get("/setup/:token") { request, context in
            let formGuard = FormGuard(request, hearth: hearth)
            return formGuard.attach(Self.setupForm(token: context.parameters.get("token") ?? "", message: nil, csrf: formGuard.token))
        }
        router.post("/setup/:token") { request, context in
            let token = context.parameters.get("token") ?? ""
            let formGuard = FormGuard(request, hearth: hearth)
            do {
                let form = try await formGuard.fields(request, limit: limit, schema: API.credentials)
                _ = try await hearth.redeemSetupLink(token: token, email: form.string("email")!, password: form.string("password")!, source: context.source)
                return Self.page("Operator account created", identity: nil, body: "<h1>Operator account created</h1><p>This set-up link no longer works. <a href=\"/signin\">Sign in</a>.</p>")
            } catch let error as HearthError {
                if error.code == .forbidden || error.code == .throttled || error.code == .unavailable { return Self.errorPage(error) }
                return formGuard.attach(Self.setupForm(token: token, message: error, csrf: formGuard.token))
            }
        }
    }

    // MARK: Vulnerability disclosure (Code of Practice guideline 2): no account, no JavaScript

    func registerDisclosure(on router: Router<HearthRequestContext>) {
        let hearth = self.hearth
        let limit = hearth.settings.maxBodyBytes
        router.get("/.well-known/security.txt") { request, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: hearth.securityTxt(base: Self.base(request)))))
        }
        // CSAF 2.0 directory-based distribution (TLP:WHITE) and provider metadata.
        router.get("/.well-known/csaf/provider-metadata.json") { request, _ in
            JSON.response(try await hearth.providerMetadata(base: Self.base(request)))
        }
        router.get("/.well-known/csaf/white/index.txt") { _, _ in
            let lines = try await hearth.advisories().map { Self.csafPath($0) }
            return Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: lines.map { $0 + "\n" }.joined())))
        }
        router.get("/.well-known/csaf/white/changes.csv") { _, _ in
            let lines = try await hearth.advisories().map { "\"\(Self.csafPath($0))\",\"\(ISO8601DateFormatter().string(from: $0.publishedAt))\"" }
            return Response(status: .ok, headers: [.contentType: "text/csv; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: lines.map { $0 + "\n" }.joined())))
        }
        router.get("/.well-known/csaf/white/:year/:file") { _, context in
            let path = "\(context.parameters.get("year") ?? "")/\(context.parameters.get("file") ?? "")"
            guard let advisory = try await hearth.advisories().first(where: { Self.csafPath($0) == path }) else { throw HearthError(.notFound, "no advisory here") }
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: advisory.csaf)))
        }
        router.get("/security/policy") { request, _ in
            let policy = hearth.settings.disclosure.policy
            return Self.page("Vulnerability disclosure policy", identity: try await Self.cookieIdentity(request, hearth: hearth), body: """
                <h1>Vulnerability disclosure policy</h1>
                <p>If you find a security problem in this service or in any device that uses it, please tell us. Reporting is free,
                needs no account, and you do not have to give your name.</p>
                <h2>How to report</h2>
                <p>Use the <a href="/security/report">report form</a> (it works without JavaScript), the API
                (<code>POST /api/v1/reports</code>), or a contact in <a href="/.well-known/security.txt">security.txt</a>.
                Tell us what is affected, how to reproduce the problem and what an attacker could do. Contact details are optional.</p>
                <h2>What happens next</h2>
                <ul>
                <li>You get a tracking id and a private status token at once. Keep the token: with it you can follow the report at
                <a href="/security/status">the status page</a>.</li>
                <li>We acknowledge every report within <strong>\(policy.acknowledgeDays) days</strong>.</li>
                <li>You see every change of status, with our notes, until the report is resolved: acknowledged, assessed, fix in
                progress, fixed, disclosed.</li>
                <li>We aim to fix confirmed vulnerabilities and disclose them publicly within <strong>\(policy.discloseDays) days</strong>
                of your report, and we agree the disclosure date with you. We credit you if you wish.</li>
                </ul>
                <h2>Safe harbour</h2>
                <p>We will not take legal action against, or ask anyone to take legal action against, research done in good faith
                under this policy: avoid harm to people, their privacy and their data, use only devices and accounts you own or
                have permission to test, do not degrade the service for others, and give us a reasonable time to fix a problem
                before you make it public.</p>
                """)
        }
        router.get("/security/report") { request, _ in
            let formGuard = FormGuard(request, hearth: hearth)
            return formGuard.attach(Self.reportForm(message: nil, csrf: formGuard.token))
        }
        router.post("/security/report") { request, context in
            let formGuard = FormGuard(request, hearth: hearth)
            do {
                let form = try await formGuard.fields(request, limit: limit, schema: ReportSubmission.schema)
                let submitted = try await hearth.submitReport(form, source: context.source)
                return Self.page("Report received", identity: nil, status: .created, body: """
                    <h1>Thank you: your report is received</h1>
                    <p>Tracking id: <strong>\(esc(submitted.id.rawValue))</strong></p>
                    <p>Your private status token (keep it; it is shown only once and is the only way to follow the report):</p>
                    <p><code>\(esc(submitted.statusToken))</code></p>
                    <p>Follow the report at <a href="/security/status">the status page</a>.</p>
                    """)
            } catch let error as HearthError {
                if error.code == .forbidden || error.code == .throttled { return Self.errorPage(error) }
                return formGuard.attach(Self.reportForm(message: error, csrf: formGuard.token))
            }
        }
        router.get("/security/status") { request, _ in
            let formGuard = FormGuard(request, hearth: hearth)
            return formGuard.attach(Self.statusForm(message: nil, csrf: formGuard.token))
        }
        router.post("/security/status") { request, context in
            let formGuard = FormGuard(request, hearth: hearth)
            do {
                let form = try await formGuard.fields(request, limit: limit, schema: API.statusToken)
                let report = try await hearth.reportStatus(token: form.string("token")!, source: context.source)
                let rows = report.history.map { step in
                    "<tr><td>\(esc(step.at.formatted(.iso8601)))</td><td>\(esc(step.state.plainEnglish))</td><td>\(esc(step.note ?? ""))</td></tr>"
                }
                return Self.page("Report status", identity: nil, body: """
                    <h1>Report \(esc(report.id.rawValue))</h1>
                    <p>\(esc(report.text("title") ?? ""))</p>
                    <p>Status: <strong>\(esc(report.state.plainEnglish))</strong></p>
                    <p>Acknowledgement due by \(esc(report.acknowledgeBy.formatted(.iso8601))); fix and disclosure targeted by \(esc(report.discloseBy.formatted(.iso8601))).</p>
                    <table><tr><th>When</th><th>Status</th><th>Note from the security team</th></tr>\(rows.joined())</table>
                    """)
            } catch let error as HearthError {
                if error.code == .forbidden || error.code == .throttled { return Self.errorPage(error) }
                return formGuard.attach(Self.statusForm(message: error, csrf: formGuard.token))
            }
        }
        router.get("/security/acknowledgments") { request, _ in
            let rows = try await hearth.acknowledgments().map { "<li>\(esc($0.credit)) (\(esc($0.id.rawValue)))</li>" }
            return Self.page("Acknowledgments", identity: try await Self.cookieIdentity(request, hearth: hearth), body: """
                <h1>Thank you</h1><p>People who reported vulnerabilities that were fixed and disclosed, and asked to be credited:</p>
                <ul>\(rows.isEmpty ? "<li>None yet.</li>" : rows.joined())</ul>
                """)
        }
    }

    static func reportForm(message: HearthError?, csrf: String) -> Response {
        page("Report a vulnerability", identity: nil, status: message == nil ? .ok : ErrorMiddleware.status(for: message!.code), body: """
            <h1>Report a vulnerability</h1>
            <p>No account needed; your contact details are optional. Read the <a href="/security/policy">disclosure policy</a>.</p>
            \(errorBox(message))
            <form method="post" action="/security/report">
            <input type="hidden" name="csrf" value="\(esc(csrf))">
            <label>Summary (one line) <input name="title" required minlength="3" maxlength="200"></label>
            <label>What is affected, how to reproduce it, and what an attacker gains
            <textarea name="description" required minlength="10" maxlength="10000" rows="12"></textarea></label>
            <label>Product or component (optional) <input name="product" maxlength="200"></label>
            <label>How to reach you (optional) <input name="contact" maxlength="254"></label>
            <label>Name to credit in the advisory (optional) <input name="credit" maxlength="120"></label>
            <button>Send report</button>
            </form>
            """)
    }

    static func statusForm(message: HearthError?, csrf: String) -> Response {
        page("Report status", identity: nil, status: message == nil ? .ok : ErrorMiddleware.status(for: message!.code), body: """
            <h1>Follow your report</h1>
            \(errorBox(message))
            <form method="post" action="/security/status">
            <input type="hidden" name="csrf" value="\(esc(csrf))">
            <label>Status token <input name="token" required maxlength="128" autocomplete="off"></label>
            <button>Show status</button>
            </form>
            """)
    }

    static func csafPath(_ a: AdvisoryRecord) -> String { Advisory.csafPath(id: a.id, publishedAt: a.publishedAt) }

    /// `https://host[:port]` as the client addressed this server (only host characters kept).
    /// The server's own URL as the client named it: the Host header has already been checked
    /// against the server's names (``HostCheckMiddleware``), so it is never an attacker's choice.
    static func base(_ request: Request) -> String {
        let authority = (request.head.authority ?? "localhost").lowercased().filter { $0.isASCII && ($0.isLetter || $0.isNumber || ".-:[]".contains($0)) }
        return "https://\(authority.isEmpty ? "localhost" : authority)"
    }

    // MARK: Helpers

    /// A browser sends every field of a form, optional ones left blank as empty strings: those
    /// count as not given. A required field left blank is still refused, naming the field.
    static func validate(_ form: [String: String], schema: ObjectSchema) throws -> ValidatedObject {
        let optional = Set(schema.fields.filter { !$0.required }.map(\.name))
        return try schema.validate(.object(form.filter { !($0.value.isEmpty && optional.contains($0.key)) }.mapValues { .string($0) }))
    }

    static func cookieIdentity(_ request: Request, hearth: Hearth) async throws -> Identity? {
        guard let token = request.cookies[cookieName]?.value else { return nil }
        return try await hearth.authenticate(token: token)
    }

    static func csrfToken(_ identity: Identity) -> String {
        Data(SHA256.hash(data: Data("csrf|\(identity.tokenHash)".utf8))).hex
    }

    static func redirect(_ location: String, cookie: String? = nil) -> Response {
        var headers: HTTPFields = [.location: location]
        if let cookie { headers[.setCookie] = cookie }
        return Response(status: .seeOther, headers: headers)
    }

    static func credentialsForm(_ kind: String, title: String, message: HearthError?, csrf: String) -> Response {
        page(title, identity: nil, status: message.map { ErrorMiddleware.status(for: $0.code) } ?? .ok, body: """
            <h1>\(esc(title))</h1>
            \(errorBox(message))
            <form method="post" action="/\(kind)">
            <input type="hidden" name="csrf" value="\(esc(csrf))">
            <label>E-mail <input type="email" name="email" required maxlength="254" autocomplete="email"></label>
            <label>Password <input type="password" name="password" required minlength="15" maxlength="256" autocomplete="\(kind == "signup" ? "new-password" : "current-password")"></label>
            \(kind == "signup" ? "<p class=\"hint\">At least 15 characters. A few unrelated words make a strong passphrase; common passwords are refused.</p>" : "")
            <button type="submit">\(esc(title))</button>
            </form>
            """)
    }

    static func claimForm(_ identity: Identity, message: HearthError?) -> Response {
        page("Set up a device", identity: identity, status: message.map { ErrorMiddleware.status(for: $0.code) } ?? .ok, body: """
            <h1>Set up a device</h1>
            <p>Type the serial and the setup code printed on the device's label.</p>
            \(errorBox(message))
            <form method="post" action="/claim">
            <input type="hidden" name="csrf" value="\(csrfToken(identity))">
            <label>Serial <input name="serial" required maxlength="32" autocomplete="off"></label>
            <label>Setup code <input name="setupCode" required maxlength="32" inputmode="numeric" autocomplete="off"></label>
            <button type="submit">Set up</button>
            </form>
            """)
    }

    static func setupForm(token: String, message: HearthError?, csrf: String) -> Response {
        page("Create the operator account", identity: nil, status: message.map { ErrorMiddleware.status(for: $0.code) } ?? .ok, body: """
            <h1>Create the operator account</h1>
            <p>This one-time link creates the first operator. It works once and expires an hour after it was printed.</p>
            \(errorBox(message))
            <form method="post" action="/setup/\(esc(token))">
            <input type="hidden" name="csrf" value="\(esc(csrf))">
            <label>E-mail <input type="email" name="email" required maxlength="254"></label>
            <label>Password <input type="password" name="password" required minlength="15" maxlength="256" autocomplete="new-password"></label>
            <button type="submit">Create operator</button>
            </form>
            """)
    }

    static func errorBox(_ error: HearthError?) -> String {
        guard let error else { return "" }
        return "<p class=\"error\" role=\"alert\">\(esc(error.message))\(error.field.map { " (\(esc($0)))" } ?? "")</p>"
    }

    static func errorPage(_ error: HearthError) -> Response {
        var response = page("Error", identity: nil, status: ErrorMiddleware.status(for: error.code), body: "<h1>Sorry</h1>\(errorBox(error))<p><a href=\"/\">Home</a></p>")
        if let retry = error.retryAfter { response.headers[.retryAfter] = String(retry) }
        return response
    }

    static func page(_ title: String, identity: Identity?, status: HTTPResponse.Status = .ok, body: String) -> Response {
        let nav = identity.map {
            "<form method=\"post\" action=\"/signout\" class=\"nav\"><span>\(esc($0.email.rawValue))</span><input type=\"hidden\" name=\"csrf\" value=\"\(csrfToken($0))\"><button>Sign out</button></form>"
        } ?? "<a href=\"/signin\">Sign in</a>"
        let html = """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(title == "Hearth" ? "Hearth" : "\(esc(title)) · Hearth")</title><link rel="stylesheet" href="/static/hearth.css"></head>
            <body><header><a href="/">Hearth</a> \(nav)</header><main>
            \(body)
            </main></body></html>
            """
        return Response(status: status, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    static let css = """
        body{font-family:system-ui,sans-serif;max-width:42rem;margin:0 auto;padding:1rem;line-height:1.5}
        header{display:flex;justify-content:space-between;border-bottom:1px solid #ccc;margin-bottom:1rem}
        label{display:block;margin:.5rem 0}input{display:block;width:100%;padding:.4rem;font-size:1rem}
        .error{background:#fee;border:1px solid #c00;padding:.5rem}.hint{color:#555}
        table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
        .nav{display:inline}.nav span{margin-right:.5rem}
        """
}

/// HTML-escapes text for element content and quoted attributes.
func esc(_ text: String) -> String {
    var out = ""
    out.reserveCapacity(text.utf8.count)
    for c in text {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        default: out.append(c)
        }
    }
    return out
}

/// Cross-site request forgery defence for every form, signed in or not (issue 13):
/// - the browser's own word first: `Sec-Fetch-Site` must be `same-origin` when the browser sends it
///   (every current browser does); without it, an `Origin` must be this server's (`null` is refused);
///   a client that sends neither (curl, scripts) is no browser and carries no ambient credentials;
/// - and a synchronizer token: public forms carry HMAC(key, `__Host-hearth_form` cookie), a random
///   per-browser value set with the form (Secure, HttpOnly, SameSite=Strict); signed-in forms carry
///   a token bound to the session. A post without the matching pair is refused (403).
/// One check for both kinds: ``fields(_:limit:schema:)``.
/// The pages send `Referrer-Policy: same-origin`, so a browser's same-origin form post carries its
/// real Origin (`no-referrer` made Chromium send `Origin: null`, which broke every form).
struct FormGuard {
    static let cookieName = "__Host-hearth_form"
    /// The hidden field's value for this browser.
    let token: String
    /// The cookie to set with the page, when the browser had none (or a malformed one).
    let setCookie: String?
    private let expected: String?

    /// A signed-in form: the token is bound to the session (``Pages/csrfToken(_:)``).
    init(session identity: Identity) {
        token = Pages.csrfToken(identity)
        expected = token
        setCookie = nil
    }

    /// A public form: the token is bound to this browser's form cookie, set now if it had none.
    init(_ request: Request, hearth: Hearth) {
        if let value = request.cookies[Self.cookieName]?.value, SecureToken.isWellFormed(value) {
            token = hearth.formToken(cookie: value)
            expected = token
            setCookie = nil
        } else {
            let value = SecureToken.generate()
            token = hearth.formToken(cookie: value)
            expected = nil
            setCookie = "\(Self.cookieName)=\(value); Path=/; Secure; HttpOnly; SameSite=Strict"
        }
    }

    func attach(_ response: Response) -> Response {
        guard let setCookie else { return response }
        var response = response
        response.headers[.setCookie] = setCookie
        return response
    }

    /// Checks the post's origin and token, then reads the form (the token field removed) against
    /// `schema`.
    func fields(_ request: Request, limit: Int, schema: ObjectSchema) async throws -> ValidatedObject {
        try Self.requireSameOrigin(request)
        var form = try await Body.form(request, limit: limit)
        let sent = form.removeValue(forKey: "csrf")
        guard let expected, Self.equal(sent, expected) else {
            throw HearthError(.forbidden, "this form has expired or came from another site; reload the page and send it again")
        }
        return try Pages.validate(form, schema: schema)
    }

    static func requireSameOrigin(_ request: Request) throws {
        let refused = HearthError(.forbidden, "cross-site form posts are refused")
        if let site = request.headers[HTTPField.Name("Sec-Fetch-Site")!] {
            guard site == "same-origin" else { throw refused }
            return
        }
        guard let origin = request.headers[.origin] else { return }
        guard let authority = request.head.authority, origin.lowercased() == "https://\(authority.lowercased())" else { throw refused }
    }

    /// Constant-time comparison of two tokens.
    static func equal(_ a: String?, _ b: String) -> Bool {
        guard let a else { return false }
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

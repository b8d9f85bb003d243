import Crypto
import Foundation
import HTTPTypes
import HearthCore
import HearthCrypto
import HearthStorage
import Hummingbird

/// Server-rendered pages that work without JavaScript, drawn from templates (``Views``). Forms
/// post back to the same origin and carry a synchronizer token (``FormGuard``); the session cookie
/// is `__Host-`, Secure, HttpOnly, SameSite=Strict. Handlers only gather data into page models.
struct Pages {
    let hearth: Hearth
    let views = Views.shipped
    static let cookieName = "__Host-hearth_session"

    struct Link {
        let href: String
        let text: String
    }

    /// A page with one form (`form-page.mustache`).
    struct FormPage {
        let heading: String
        var intro: [String] = []
        var steps: [String] = []
        var form: FormModel
        var links: [Link] = []
    }

    /// A page of text (`message.mustache`).
    struct Message {
        let heading: String
        var alert: String?
        var paragraphs: [String] = []
        var secret: String?
        var links: [Link] = []
    }

    func register(on router: Router<HearthRequestContext>) {
        let hearth = self.hearth
        let views = self.views

        for (path, type) in [
            ("/static/hearth.css", "text/css; charset=utf-8"), ("/static/live.js", "text/javascript; charset=utf-8"),
            ("/favicon.ico", "image/svg+xml"),
        ] {
            let body = Self.asset(String(path.split(separator: "/").last!))
            router.get(RouterPath(path)) { _, _ in
                Response(
                    status: .ok, headers: [.contentType: type, .cacheControl: "public, max-age=3600"],
                    body: .init(byteBuffer: ByteBuffer(bytes: body)))
            }
        }
        router.get("/") { request, _ in
            let identity = try await Self.cookieIdentity(request, hearth: hearth)
            return views.render(
                "home", title: "Hearth", nav: identity.map(Views.Nav.init), page: ["signedIn": identity != nil])
        }
        router.get("/models") { request, _ in
            let identity = try await Self.cookieIdentity(request, hearth: hearth)
            let now = hearth.time.now()
            let models = try await hearth.store.models().map { model in
                [
                    "name": model.name, "maker": model.maker, "ends": model.supportEnds.plainEnglish,
                    "privacy": "/models/\(model.id.rawValue)/privacy",
                    "ended": Updates.ended(model.supportEnds, now: now),
                ] as [String: Any]
            }
            return views.render(
                "models", title: "Products", nav: identity.map(Views.Nav.init), page: ["models": models])
        }

        registerDisclosure(on: router)
        registerAccounts(on: router)
        OwnerPages(hearth: hearth, views: views).register(on: router)
        PrivacyPages(hearth: hearth, views: views).register(on: router)
        OwnershipPages(hearth: hearth, views: views).register(on: router)
        ConsolePages(hearth: hearth, views: views).register(on: router)
    }

    /// A file from `Resources/Static`, read once at start.
    static func asset(_ name: String) -> [UInt8] {
        guard let url = Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Static"),
            let data = try? Data(contentsOf: url)
        else { return [] }
        return Array(data)
    }

    // MARK: Accounts: sign-up, sign-in, sign-out, the first operator's set-up link

    static func credentialsForm(_ kind: String, csrf: String) -> FormModel {
        let signUp = kind == "signup"
        return FormModel(
            action: "/\(kind)", csrf: csrf, button: signUp ? "Create account" : "Sign in",
            [
                FormField("email", "E-mail", type: "email", maxLength: 254, autocomplete: "email"),
                FormField(
                    "password", "Password", type: "password", minLength: signUp ? 15 : nil, maxLength: 256,
                    autocomplete: signUp ? "new-password" : "current-password",
                    hint: signUp
                        ? "At least 15 characters. A few unrelated words make a strong passphrase; common passwords are refused."
                        : nil
                ),
            ])
    }

    func registerAccounts(on router: Router<HearthRequestContext>) {
        let hearth = self.hearth
        let views = self.views
        let limit = hearth.settings.maxBodyBytes
        for kind in ["signup", "signin"] {
            let title = kind == "signup" ? "Create an account" : "Sign in"
            @Sendable func page(_ csrf: String) -> FormPage {
                FormPage(
                    heading: title, form: Self.credentialsForm(kind, csrf: csrf),
                    links: [
                        kind == "signup"
                            ? Link(href: "/signin", text: "Have an account? Sign in")
                            : Link(href: "/signup", text: "New here? Create an account")
                    ]
                        + (kind == "signin"
                            ? [Link(href: "/recover", text: "Forgot your password? Use your recovery code")] : [])
                )
            }
            router.get(RouterPath("/\(kind)")) { request, _ in
                if let identity = try await Self.cookieIdentity(request, hearth: hearth) {
                    return Self.redirect(identity.role == .operator ? "/console" : "/devices")
                }
                let formGuard = FormGuard(request, hearth: hearth)
                return formGuard.attach(views.render("form-page", title: title, nav: nil, page: page(formGuard.token)))
            }
            router.post(RouterPath("/\(kind)")) { request, context in
                let formGuard = FormGuard(request, hearth: hearth)
                return try await Self.submit(
                    request, formGuard, limit: limit, schema: API.credentials, views: views, title: title, nav: nil,
                    page: page(formGuard.token)
                ) { form in
                    let email = form.string("email")!
                    let password = form.string("password")!
                    let code =
                        kind == "signup"
                        ? try await hearth.register(email: email, password: password, source: context.source)
                            .recoveryCode : nil
                    let session = try await hearth.signIn(email: email, password: password, source: context.source)
                    let cookie = Self.sessionCookie(session.token, maxAge: Int(hearth.settings.sessionLifetime))
                    guard let code else {
                        // Operators land on their console; owners on their devices.
                        return Self.redirect(
                            session.identity.role == .operator ? "/console" : "/devices", cookie: cookie)
                    }
                    var response = views.render(
                        "message", title: "Your account is ready", nav: Views.Nav(session.identity),
                        page: Self.recoveryMessage(
                            code, heading: "Your account is ready",
                            next: Link(href: "/devices", text: "Continue to your devices")))
                    response.headers[.setCookie] = cookie
                    return response
                }
            }
        }
        @Sendable func recoverPage(_ csrf: String) -> FormPage {
            FormPage(
                heading: "Set a new password with your recovery code",
                intro: [
                    "Your recovery code was shown when you created your account (or made a new one). It works once: you get a new one here."
                ],
                form: FormModel(
                    action: "/recover", csrf: csrf, button: "Set new password",
                    [
                        FormField("email", "E-mail", type: "email", maxLength: 254, autocomplete: "email"),
                        FormField(
                            "recoveryCode", "Recovery code", maxLength: 64, autocomplete: "off",
                            hint: "Six groups of four letters and digits; dashes are optional."),
                        FormField(
                            "newPassword", "New password", type: "password", minLength: 15, maxLength: 256,
                            autocomplete: "new-password", hint: "At least 15 characters; common passwords are refused."),
                    ]),
                links: [Link(href: "/signin", text: "Remembered it? Sign in")])
        }
        router.get("/recover") { request, _ in
            let formGuard = FormGuard(request, hearth: hearth)
            return formGuard.attach(
                views.render("form-page", title: "Forgot your password", nav: nil, page: recoverPage(formGuard.token)))
        }
        router.post("/recover") { request, context in
            let formGuard = FormGuard(request, hearth: hearth)
            return try await Self.submit(
                request, formGuard, limit: limit, schema: API.recovery, views: views, title: "Forgot your password",
                nav: nil, page: recoverPage(formGuard.token)
            ) { form in
                let code = try await hearth.recover(
                    email: form.string("email")!, recoveryCode: form.string("recoveryCode")!,
                    newPassword: form.string("newPassword")!, source: context.source)
                return views.render(
                    "message", title: "Your password is set", nav: nil,
                    page: Self.recoveryMessage(
                        code, heading: "Your password is set; here is your new recovery code",
                        next: Link(href: "/signin", text: "Sign in")))
            }
        }
        router.post("/signout") { request, _ in
            if let identity = try await Self.cookieIdentity(request, hearth: hearth) {
                _ = try await FormGuard(session: identity).read(request, limit: limit)
                try await hearth.signOut(identity)
            }
            return Self.redirect("/", cookie: Self.sessionCookie("", maxAge: 0))
        }

        // The first operator's one-time set-up link.
        @Sendable func setupPage(_ token: String, csrf: String) -> FormPage {
            FormPage(
                heading: "Create the operator account",
                intro: [
                    "This one-time link creates the first operator. It works once and expires an hour after it was printed."
                ],
                form: FormModel(
                    action: "/setup/\(token)", csrf: csrf, button: "Create operator",
                    Self.credentialsForm("signup", csrf: csrf).fields)
            )
        }
        router.get("/setup/:token") { request, context in
            let formGuard = FormGuard(request, hearth: hearth)
            return formGuard.attach(
                views.render(
                    "form-page", title: "Create the operator account", nav: nil,
                    page: setupPage(context.parameters.get("token") ?? "", csrf: formGuard.token)))
        }
        router.post("/setup/:token") { request, context in
            let token = context.parameters.get("token") ?? ""
            let formGuard = FormGuard(request, hearth: hearth)
            return try await Self.submit(
                request, formGuard, limit: limit, schema: API.credentials, views: views,
                title: "Create the operator account", nav: nil, page: setupPage(token, csrf: formGuard.token)
            ) { form in
                _ = try await hearth.redeemSetupLink(
                    token: token, email: form.string("email")!, password: form.string("password")!,
                    source: context.source)
                return views.render(
                    "message", title: "Operator account created", nav: nil,
                    page: Message(
                        heading: "Operator account created", paragraphs: ["This set-up link no longer works."],
                        links: [Link(href: "/signin", text: "Sign in")])
                )
            }
        }
    }

    /// The page that shows a recovery code, the one time it is shown.
    static func recoveryMessage(_ code: String, heading: String, next: Link) -> Message {
        Message(
            heading: heading,
            paragraphs: [
                "This is your recovery code. Write it down or keep it in your password manager now: it is shown only this once. If you forget your password, it lets you set a new one (each code works once; you get a new one when you use it)."
            ], secret: code, links: [next])
    }

    static func sessionCookie(_ token: String, maxAge: Int) -> String {
        "\(cookieName)=\(token); Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=\(maxAge)"
    }

    /// One form post: the origin and token check, the fields against `schema`, then `action`.
    /// A refusal of the request itself (cross-site, expired token, throttled, too large) gets an
    /// error page; a refusal of what was typed gets the form again with the values kept (never a
    /// password) and the message next to the field. Either way nothing has changed.
    static func submit(
        _ request: Request, _ formGuard: FormGuard, limit: Int, schema: ObjectSchema, views: Views, title: String,
        nav: Views.Nav?, page: FormPage,
        _ action: (ValidatedObject) async throws -> Response
    ) async throws -> Response {
        try await submit(
            request, formGuard, limit: limit, schema: schema, views: views, nav: nav,
            refused: { error, sent in
                var page = page
                page.form = page.form.refused(error, sent: sent)
                return views.render(
                    "form-page", title: title, nav: nav, page: page, status: ErrorMiddleware.status(for: error.code))
            }, action)
    }

    /// ``submit(_:_:limit:schema:views:title:nav:page:_:)`` for a page of several forms: `refused`
    /// renders the page again with the refused form marked.
    static func submit(
        _ request: Request, _ formGuard: FormGuard, limit: Int, schema: ObjectSchema, views: Views, nav: Views.Nav?,
        refused: (HearthError, [String: String]) async throws -> Response,
        _ action: (ValidatedObject) async throws -> Response
    ) async throws -> Response {
        let sent: [String: String]
        do {
            sent = try await formGuard.read(request, limit: limit)
        } catch let error as HearthError {
            return errorPage(error, views: views, nav: nav)
        }
        do {
            return try await action(try validate(sent, schema: schema))
        } catch let error as HearthError
            where ![.forbidden, .throttled, .unavailable, .internal, .integrity].contains(error.code)
        {
            return formGuard.attach(try await refused(error, sent))
        } catch let error as HearthError where error.code != .internal && error.code != .integrity {
            return errorPage(error, views: views, nav: nav)
        }
    }

    // MARK: Vulnerability disclosure (Code of Practice guideline 2): no account, no JavaScript

    static func reportForm(csrf: String) -> FormPage {
        FormPage(
            heading: "Report a vulnerability", intro: ["No account needed; your contact details are optional."],
            form: FormModel(
                action: "/security/report", csrf: csrf, button: "Send report", wide: true,
                [
                    FormField("title", "Summary (one line)", minLength: 3, maxLength: 200),
                    FormField(
                        "description", "What is affected, how to reproduce it, and what an attacker gains",
                        minLength: 10, maxLength: 10_000, multiline: true),
                    FormField("product", "Product or component", required: false, maxLength: 200),
                    FormField(
                        "contact", "How to reach you", required: false, maxLength: 254,
                        hint: "An e-mail address or a URL, if you want us to write back."),
                    FormField("credit", "Name to credit in the advisory", required: false, maxLength: 120),
                ]),
            links: [Link(href: "/security/policy", text: "Read the disclosure policy")]
        )
    }

    static func statusForm(csrf: String) -> FormPage {
        FormPage(
            heading: "Follow your report",
            form: FormModel(
                action: "/security/status", csrf: csrf, button: "Show status",
                [
                    FormField(
                        "token", "Status token", maxLength: 128, autocomplete: "off",
                        hint: "The private token you were given when you sent the report.")
                ])
        )
    }

    func registerDisclosure(on router: Router<HearthRequestContext>) {
        let hearth = self.hearth
        let views = self.views
        let limit = hearth.settings.maxBodyBytes
        router.get("/.well-known/security.txt") { request, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: hearth.securityTxt(base: Self.base(request)))))
        }
        // CSAF 2.0 directory-based distribution (TLP:WHITE) and provider metadata.
        router.get("/.well-known/csaf/provider-metadata.json") { request, _ in
            JSON.response(try await hearth.providerMetadata(base: Self.base(request)))
        }
        router.get("/.well-known/csaf/white/index.txt") { _, _ in
            let lines = try await hearth.advisories().map { Self.csafPath($0) }
            return Response(
                status: .ok, headers: [.contentType: "text/plain; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: lines.map { $0 + "\n" }.joined())))
        }
        router.get("/.well-known/csaf/white/changes.csv") { _, _ in
            let lines = try await hearth.advisories().map {
                "\"\(Self.csafPath($0))\",\"\(ISO8601DateFormatter().string(from: $0.publishedAt))\""
            }
            return Response(
                status: .ok, headers: [.contentType: "text/csv; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: lines.map { $0 + "\n" }.joined())))
        }
        router.get("/.well-known/csaf/white/:year/:file") { _, context in
            let path = "\(context.parameters.get("year") ?? "")/\(context.parameters.get("file") ?? "")"
            guard let advisory = try await hearth.advisories().first(where: { Self.csafPath($0) == path }) else {
                throw HearthError(.notFound, "no advisory here")
            }
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: advisory.csaf)))
        }
        router.get("/security/policy") { request, _ in
            let policy = hearth.settings.disclosure.policy
            return views.render(
                "policy", title: "Vulnerability disclosure policy", nav: try await Self.nav(request, hearth: hearth),
                page: ["acknowledgeDays": policy.acknowledgeDays, "discloseDays": policy.discloseDays]
            )
        }
        router.get("/security/report") { request, _ in
            let formGuard = FormGuard(request, hearth: hearth)
            return formGuard.attach(
                views.render(
                    "form-page", title: "Report a vulnerability", nav: try await Self.nav(request, hearth: hearth),
                    page: Self.reportForm(csrf: formGuard.token)))
        }
        router.post("/security/report") { request, context in
            let formGuard = FormGuard(request, hearth: hearth)
            let nav = try await Self.nav(request, hearth: hearth)
            return try await Self.submit(
                request, formGuard, limit: limit, schema: ReportSubmission.schema, views: views,
                title: "Report a vulnerability", nav: nav, page: Self.reportForm(csrf: formGuard.token)
            ) { form in
                let submitted = try await hearth.submitReport(form, source: context.source)
                return views.render(
                    "message", title: "Report received", nav: nav,
                    page: Message(
                        heading: "Thank you: your report is received",
                        paragraphs: [
                            "Tracking id: \(submitted.id.rawValue)",
                            "Your private status token (keep it; it is shown only once and is the only way to follow the report):",
                        ],
                        secret: submitted.statusToken,
                        links: [Link(href: "/security/status", text: "Follow the report on the status page")]
                    ),
                    status: .created
                )
            }
        }
        router.get("/security/status") { request, _ in
            let formGuard = FormGuard(request, hearth: hearth)
            return formGuard.attach(
                views.render(
                    "form-page", title: "Report status", nav: try await Self.nav(request, hearth: hearth),
                    page: Self.statusForm(csrf: formGuard.token)))
        }
        router.post("/security/status") { request, context in
            let formGuard = FormGuard(request, hearth: hearth)
            let nav = try await Self.nav(request, hearth: hearth)
            return try await Self.submit(
                request, formGuard, limit: limit, schema: API.statusToken, views: views, title: "Report status",
                nav: nav, page: Self.statusForm(csrf: formGuard.token)
            ) { form in
                let report = try await hearth.reportStatus(token: form.string("token")!, source: context.source)
                let history = report.history.map {
                    ["at": Self.when($0.at), "state": $0.state.plainEnglish, "note": $0.note ?? ""]
                }
                return views.render(
                    "report-status", title: "Report status", nav: nav,
                    page: [
                        "id": report.id.rawValue, "reportTitle": report.text("title") ?? "",
                        "state": report.state.plainEnglish,
                        "acknowledgeBy": Self.when(report.acknowledgeBy), "discloseBy": Self.when(report.discloseBy),
                        "history": history,
                    ] as [String: Any]
                )
            }
        }
        router.get("/security/acknowledgments") { request, _ in
            let people = try await hearth.acknowledgments().map { ["credit": $0.credit, "id": $0.id.rawValue] }
            return views.render(
                "acknowledgments", title: "Acknowledgments", nav: try await Self.nav(request, hearth: hearth),
                page: ["people": people])
        }
    }

    static func csafPath(_ a: AdvisoryRecord) -> String { Advisory.csafPath(id: a.id, publishedAt: a.publishedAt) }

    /// A time as pages show it: UTC, to the minute.
    static func when(_ date: Date) -> String {
        date.formatted(
            Date.VerbatimFormatStyle(
                format:
                    "\(year: .defaultDigits)-\(month: .twoDigits)-\(day: .twoDigits) \(hour: .twoDigits(clock: .twentyFourHour, hourCycle: .zeroBased)):\(minute: .twoDigits) UTC",
                timeZone: .gmt, calendar: Calendar(identifier: .gregorian)))
    }

    /// `https://host[:port]` as the client addressed this server (only host characters kept).
    /// The server's own URL as the client named it: the Host header has already been checked
    /// against the server's names (``HostCheckMiddleware``), so it is never an attacker's choice.
    static func base(_ request: Request) -> String {
        let authority = (request.head.authority ?? "localhost").lowercased().filter {
            $0.isASCII && ($0.isLetter || $0.isNumber || ".-:[]".contains($0))
        }
        return "https://\(authority.isEmpty ? "localhost" : authority)"
    }

    // MARK: Helpers

    /// A browser sends every field of a form, optional ones left blank as empty strings: those
    /// count as not given. A required field left blank is still refused, naming the field.
    static func validate(_ form: [String: String], schema: ObjectSchema) throws -> ValidatedObject {
        let optional = Set(schema.fields.filter { !$0.required }.map(\.name))
        return try schema.validate(
            .object(form.filter { !($0.value.isEmpty && optional.contains($0.key)) }.mapValues { .string($0) }))
    }

    static func cookieIdentity(_ request: Request, hearth: Hearth) async throws -> Identity? {
        guard let token = request.cookies[cookieName]?.value else { return nil }
        return try await hearth.authenticate(token: token)
    }

    /// The header of a page anyone may see: the signed-in person's, or the signed-out one.
    static func nav(_ request: Request, hearth: Hearth) async throws -> Views.Nav? {
        try await cookieIdentity(request, hearth: hearth).map(Views.Nav.init)
    }

    static func csrfToken(_ identity: Identity) -> String {
        Data(SHA256.hash(data: Data("csrf|\(identity.tokenHash)".utf8))).hex
    }

    static func redirect(_ location: String, cookie: String? = nil) -> Response {
        var headers: HTTPFields = [.location: location]
        if let cookie { headers[.setCookie] = cookie }
        return Response(status: .seeOther, headers: headers)
    }

    static func errorPage(_ error: HearthError, views: Views = .shipped, nav: Views.Nav? = nil) -> Response {
        var response = views.render(
            "message", title: "Error", nav: nav,
            page: Message(
                heading: "Sorry", alert: error.message + (error.field.map { " (\($0))" } ?? ""),
                links: [Link(href: "/", text: "Home")]),
            status: ErrorMiddleware.status(for: error.code)
        )
        if let retry = error.retryAfter { response.headers[.retryAfter] = String(retry) }
        return response
    }
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

    /// Checks the post's origin and token, then reads the form (the token field removed), each
    /// value as sent.
    func read(_ request: Request, limit: Int) async throws -> [String: String] {
        try Self.requireSameOrigin(request)
        var form = try await Body.form(request, limit: limit)
        let sent = form.removeValue(forKey: "csrf")
        guard let expected, Self.equal(sent, expected) else {
            throw HearthError(
                .forbidden, "this form has expired or came from another site; reload the page and send it again")
        }
        return form
    }

    /// ``read(_:limit:)``, then the fields checked against `schema`.
    func fields(_ request: Request, limit: Int, schema: ObjectSchema) async throws -> ValidatedObject {
        try Pages.validate(try await read(request, limit: limit), schema: schema)
    }

    static func requireSameOrigin(_ request: Request) throws {
        let refused = HearthError(.forbidden, "cross-site form posts are refused")
        if let site = request.headers[HTTPField.Name("Sec-Fetch-Site")!] {
            guard site == "same-origin" else { throw refused }
            return
        }
        guard let origin = request.headers[.origin] else { return }
        guard let authority = request.head.authority, origin.lowercased() == "https://\(authority.lowercased())" else {
            throw refused
        }
    }

    /// Constant-time comparison of two tokens.
    static func equal(_ a: String?, _ b: String) -> Bool {
        guard let a else { return false }
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

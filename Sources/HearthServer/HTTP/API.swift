import Foundation
import HTTPTypes
import HearthCore
import HearthStorage
import Hummingbird

/// One API endpoint: how it is reached, who may call it, what body it takes. The router and the
/// OpenAPI document are both built from this list, so they cannot disagree.
struct Endpoint: Sendable {
    enum Access: Sendable {
        case `public`, signedIn, `operator`
    }

    let method: HTTPRequest.Method
    /// OpenAPI form: `/api/v1/models/{id}`.
    let path: String
    let summary: String
    let access: Access
    let body: ObjectSchema?
    let success: HTTPResponse.Status
    let errors: [HTTPResponse.Status]
}

typealias EndpointHandler = @Sendable (Request, HearthRequestContext, ValidatedObject) async throws -> Response

/// The JSON API under `/api/v1/`.
struct API {
    let hearth: Hearth

    static let email = FieldSchema(
        "email", .string(maxLength: 254, pattern: EmailAddress.pattern), "an e-mail address (ASCII)")
    static let credentials = ObjectSchema([email, FieldSchema("password", .string(maxLength: 256))])
    static let setup = ObjectSchema([
        FieldSchema("token", .string(maxLength: 64), "the token from the set-up link"),
        email,
        FieldSchema("password", .string(maxLength: 256), "at least 15 characters; not a common password"),
    ])
    static let command = ObjectSchema([
        FieldSchema("name", .string(maxLength: 32), "a command of the device's product model"),
        FieldSchema(
            "parameters", .map(values: .scalar(maxLength: 64), maxKeys: 16), required: false,
            "the command's parameters, checked against the model"),
    ])
    static let consents = ObjectSchema([
        FieldSchema(
            "granted", .array(of: .string(maxLength: 32), maxItems: 16),
            "every optional purpose the owner agrees to; the others are withdrawn")
    ])
    static let claim = ObjectSchema([
        FieldSchema("serial", .string(maxLength: 32, pattern: DeviceSerial.pattern), "from the device label"),
        FieldSchema("setupCode", .string(maxLength: 32, pattern: SetupCode.pattern), "from the device label"),
    ])

    /// Every endpoint, with its handler.
    func endpoints() -> [(Endpoint, EndpointHandler)] {
        let hearth = self.hearth
        let bad: [HTTPResponse.Status] = [.badRequest, .contentTooLarge, .unsupportedMediaType, .unprocessableContent]
        let core: [(Endpoint, EndpointHandler)] = [
            (
                Endpoint(
                    method: .get, path: "/healthz", summary: "Liveness: the server and its database answer",
                    access: .public, body: nil, success: .ok, errors: []),
                { _, _, _ in
                    _ = try await hearth.store.hasOperator()
                    return JSON.response(["status": "ok"])
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/readyz",
                    summary:
                        "Readiness, for a load balancer: 200 once the database takes a write and every listener is up, 503 (with what is not ready) otherwise and while stopping",
                    access: .public, body: nil, success: .ok, errors: [.serviceUnavailable]),
                { _, _, _ in
                    if let reason = await hearth.notReady() { throw HearthError(.unavailable, "not ready: \(reason)") }
                    return JSON.response(["status": "ready"])
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/openapi.json", summary: "This API's OpenAPI 3.1 document",
                    access: .public, body: nil, success: .ok, errors: []),
                { _, _, _ in JSON.response(API.openAPIDocument(API(hearth: hearth).endpoints().map(\.0))) }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/setup",
                    summary: "Create the first operator account with the one-time set-up link's token", access: .public,
                    body: Self.setup, success: .created, errors: bad + [.gone, .tooManyRequests]),
                { _, context, body in
                    let account = try await hearth.redeemSetupLink(
                        token: body.string("token")!, email: body.string("email")!, password: body.string("password")!,
                        source: context.source)
                    return JSON.response(Self.accountJSON(account, email: body.string("email")!), status: .created)
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/accounts", summary: "Sign up as a device owner", access: .public,
                    body: Self.credentials, success: .created, errors: bad + [.conflict, .tooManyRequests]),
                { _, context, body in
                    let (account, code) = try await hearth.register(
                        email: body.string("email")!, password: body.string("password")!, source: context.source)
                    guard
                        case .object(var json) = Self.accountJSON(
                            account, email: try EmailAddress(body.string("email")!).rawValue)
                    else { throw HearthError(.internal, "an account is an object") }
                    // Shown this once: it resets a forgotten password (POST /api/v1/account/recover).
                    json["recoveryCode"] = .string(code)
                    return JSON.response(.object(json), status: .created)
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/sessions", summary: "Sign in; returns a bearer token",
                    access: .public, body: Self.credentials, success: .created,
                    errors: bad + [.unauthorized, .tooManyRequests]),
                { _, context, body in
                    let session = try await hearth.signIn(
                        email: body.string("email")!, password: body.string("password")!, source: context.source)
                    return JSON.response(
                        [
                            "token": .string(session.token),
                            "expiresAt": .string(ISO8601DateFormatter().string(from: session.expiresAt)),
                            "account": Self.accountJSON(
                                session.identity.account, email: session.identity.email.rawValue),
                        ],
                        status: .created
                    )
                }
            ),
            (
                Endpoint(
                    method: .delete, path: "/api/v1/sessions/current", summary: "Sign out: the token stops working",
                    access: .signedIn, body: nil, success: .noContent, errors: [.unauthorized]),
                { _, context, _ in
                    try await hearth.signOut(try context.requireIdentity())
                    return Response(status: .noContent)
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/me", summary: "The signed-in account", access: .signedIn, body: nil,
                    success: .ok, errors: [.unauthorized]),
                { _, context, _ in
                    let identity = try context.requireIdentity()
                    return JSON.response(Self.accountJSON(identity.account, email: identity.email.rawValue))
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/models",
                    summary: "Product models, with what they report and their support period", access: .public,
                    body: nil, success: .ok, errors: []),
                { _, _, _ in JSON.response(["models": .array(try await hearth.store.models().map(Self.modelJSON))]) }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/models", summary: "Define a product model (operators)",
                    access: .operator, body: ProductModel.schema, success: .created,
                    errors: bad + [.unauthorized, .forbidden, .conflict]),
                { _, context, body in
                    let model = try await hearth.createModel(.object(body.members), by: try context.requireIdentity())
                    return JSON.response(Self.modelJSON(model), status: .created)
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/models/{id}", summary: "One product model", access: .public, body: nil,
                    success: .ok, errors: [.notFound]),
                { _, context, _ in
                    let raw = context.parameters.get("id") ?? ""
                    guard let id = try? ProductModelID(raw), let model = try await hearth.store.model(id) else {
                        throw HearthError(.notFound, field: "id", "no product model with this id")
                    }
                    return JSON.response(Self.modelJSON(model))
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/devices/claim",
                    summary: "Set up (claim) a device with the serial and setup code from its label", access: .signedIn,
                    body: Self.claim, success: .created, errors: bad + [.unauthorized, .tooManyRequests]),
                { _, context, body in
                    let device = try await hearth.claim(
                        serial: body.string("serial")!, setupCode: body.string("setupCode")!,
                        by: try context.requireIdentity(), source: context.source)
                    return JSON.response(Self.deviceJSON(device), status: .created)
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/devices", summary: "The signed-in owner's devices", access: .signedIn,
                    body: nil, success: .ok, errors: [.unauthorized]),
                { _, context, _ in
                    JSON.response([
                        "devices": .array(
                            try await hearth.devices(of: try context.requireIdentity()).map(Self.deviceJSON))
                    ])
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/models/{id}/privacy",
                    summary: "A product model's privacy notice: what its devices collect, why, who gets it, how long",
                    access: .public, body: nil, success: .ok, errors: [.notFound]),
                { _, context, _ in
                    JSON.response(Self.noticeJSON(try await hearth.privacyNotice(context.parameters.get("id") ?? "")))
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/devices/{serial}/consents",
                    summary: "The owner's device: each optional purpose agreed or not, and the history of choices",
                    access: .signedIn, body: nil, success: .ok, errors: [.unauthorized, .notFound]),
                { _, context, _ in
                    JSON.response(
                        Self.consentJSON(
                            try await hearth.consents(
                                context.parameters.get("serial") ?? "", by: try context.requireIdentity())))
                }
            ),
            (
                Endpoint(
                    method: .put, path: "/api/v1/devices/{serial}/consents",
                    summary:
                        "The owner's device: set the optional purposes agreed to (the rest are withdrawn); the device is told at once",
                    access: .signedIn, body: Self.consents, success: .ok, errors: bad + [.unauthorized, .notFound]),
                { _, context, body in
                    let granted = body.array("granted").compactMap { if case .string(let s) = $0 { s } else { nil } }
                    return JSON.response(
                        Self.consentJSON(
                            try await hearth.setConsents(
                                context.parameters.get("serial") ?? "", granted: granted,
                                by: try context.requireIdentity())))
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/devices/{serial}/telemetry/latest",
                    summary: "The owner's device: its latest reading (null if none yet)", access: .signedIn, body: nil,
                    success: .ok, errors: [.unauthorized, .notFound]),
                { _, context, _ in
                    let record = try await hearth.latestReading(
                        context.parameters.get("serial") ?? "", by: try context.requireIdentity())
                    return JSON.response(["reading": record.map(Self.readingJSON) ?? .null])
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/devices/{serial}/telemetry",
                    summary:
                        "The owner's device: readings received in [from, to), oldest first, paged (query: from, to as ISO 8601; limit 1-1000, default 100; after = the previous page's next)",
                    access: .signedIn, body: nil, success: .ok, errors: [.badRequest, .unauthorized, .notFound]
                ),
                { request, context, _ in
                    let query = request.uri.queryParameters
                    let from = try Self.date(query.get("from"), field: "from") ?? Date(timeIntervalSince1970: 0)
                    let to = try Self.date(query.get("to"), field: "to") ?? hearth.time.now().addingTimeInterval(86_400)
                    let limit = try Self.integer(query.get("limit"), field: "limit", maximum: 1000) ?? 100
                    let after = try Self.integer(query.get("after"), field: "after").map(Int64.init)
                    let records = try await hearth.readings(
                        context.parameters.get("serial") ?? "", from: from, to: to, after: after, limit: limit,
                        by: try context.requireIdentity())
                    let next: JSONValue = records.count == limit ? .string(String(records.last!.position)) : .null
                    return JSON.response(["readings": .array(records.map(Self.readingJSON)), "next": next])
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/devices/{serial}/commands",
                    summary:
                        "Send a command to the owner's device and wait for its answer (409 device_offline, 504 device_timeout)",
                    access: .signedIn, body: Self.command, success: .ok,
                    errors: bad + [.unauthorized, .notFound, .conflict, .gatewayTimeout]
                ),
                { _, context, body in
                    let parameters = body.object("parameters")?.members ?? [:]
                    let outcome = try await hearth.sendCommand(
                        to: context.parameters.get("serial") ?? "", name: body.string("name")!, parameters: parameters,
                        by: try context.requireIdentity())
                    switch outcome {
                    case .answered(let status, let detail):
                        return JSON.response(["status": .string(status), "detail": detail.map { .string($0) } ?? .null])
                    case .offline:
                        throw HearthError(.deviceOffline, "the device is not connected; try again when it is online")
                    case .timedOut:
                        throw HearthError(
                            .deviceTimeout, "the device did not answer in time; it may still carry the command out")
                    }
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/devices/{serial}/revoke",
                    summary: "Revoke a device's certificate (operators): the gateway refuses it from then on",
                    access: .operator, body: nil, success: .ok, errors: [.unauthorized, .forbidden, .notFound]),
                { _, context, _ in
                    let serial = context.parameters.get("serial") ?? ""
                    let changed = try await hearth.revoke(serial, by: try context.requireIdentity())
                    if let serial = try? DeviceSerial(serial), let gateway = hearth.commands as? any DeviceDisconnecting
                    {
                        await gateway.disconnect(serial, reason: "the device certificate was revoked")
                    }
                    return JSON.response(["serial": .string(serial), "revoked": true, "changed": .bool(changed)])
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/reports",
                    summary:
                        "Report a security vulnerability (no account needed); returns a tracking id and a private status token",
                    access: .public, body: ReportSubmission.schema, success: .created, errors: bad + [.tooManyRequests]),
                { _, context, body in
                    let submitted = try await hearth.submitReport(body, source: context.source)
                    return JSON.response(
                        [
                            "id": .string(submitted.id.rawValue), "statusToken": .string(submitted.statusToken),
                            "state": .string(ReportState.received.rawValue),
                        ], status: .created)
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/reports/status",
                    summary: "A reporter's view of their report, by its private status token", access: .public,
                    body: Self.statusToken, success: .ok, errors: bad + [.notFound, .tooManyRequests]),
                { _, context, body in
                    JSON.response(
                        Self.reportJSON(
                            try await hearth.reportStatus(token: body.string("token")!, source: context.source),
                            forReporter: true))
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/security/reports",
                    summary: "Vulnerability reports with their deadlines and overdue flags (security team)",
                    access: .operator, body: nil, success: .ok, errors: [.unauthorized, .forbidden]),
                { _, context, _ in
                    JSON.response([
                        "reports": .array(
                            try await hearth.reports(by: try context.requireIdentity()).map {
                                Self.reportJSON($0, forReporter: false)
                            })
                    ])
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/security/reports/{id}",
                    summary: "One vulnerability report (security team)", access: .operator, body: nil, success: .ok,
                    errors: [.unauthorized, .forbidden, .notFound]),
                { _, context, _ in
                    JSON.response(
                        Self.reportJSON(
                            try await hearth.report(
                                context.parameters.get("id") ?? "", by: try context.requireIdentity()),
                            forReporter: false))
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/security/reports/{id}/transitions",
                    summary: "Move a report along the workflow with a note the reporter sees (security team)",
                    access: .operator, body: Self.transition, success: .ok,
                    errors: bad + [.unauthorized, .forbidden, .notFound, .conflict]),
                { _, context, body in
                    guard let state = ReportState(rawValue: body.string("state")!) else {
                        throw HearthError.invalid("state", "unknown state")
                    }
                    let view = try await hearth.moveReport(
                        context.parameters.get("id") ?? "", to: state, note: body.string("note"),
                        by: try context.requireIdentity())
                    return JSON.response(Self.reportJSON(view, forReporter: false))
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/security/reports/{id}/advisory",
                    summary:
                        "Publish the CSAF 2.0 and OSV advisory for a fixed report; the report becomes disclosed (security team)",
                    access: .operator, body: Advisory.schema, success: .created,
                    errors: bad + [.unauthorized, .forbidden, .notFound, .conflict]),
                { request, context, body in
                    let base = Pages.base(request)
                    let record = try await hearth.publishAdvisory(
                        context.parameters.get("id") ?? "", body, base: base, by: try context.requireIdentity())
                    return JSON.response(Self.advisoryJSON(record, base: base), status: .created)
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/advisories", summary: "Published security advisories, newest first",
                    access: .public, body: nil, success: .ok, errors: []),
                { request, _, _ in
                    let base = Pages.base(request)
                    return JSON.response([
                        "advisories": .array(try await hearth.advisories().map { Self.advisoryJSON($0, base: base) })
                    ])
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/advisories/{id}/osv", summary: "An advisory as an OSV record",
                    access: .public, body: nil, success: .ok, errors: [.notFound]),
                { _, context, _ in
                    guard
                        let record = try await hearth.advisories().first(where: {
                            $0.id == context.parameters.get("id")
                        })
                    else { throw HearthError(.notFound, field: "id", "no advisory with this id") }
                    return JSON.response(try JSONValue.parse(Array(record.osv.utf8)))
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/notices",
                    summary: "Security notices for the signed-in owner's devices, each with the update that fixes it",
                    access: .signedIn, body: nil, success: .ok, errors: [.unauthorized]),
                { request, context, _ in
                    let base = Pages.base(request)
                    let notices = try await hearth.notices(for: try context.requireIdentity()).map {
                        notice -> JSONValue in
                        guard case .object(var o) = Self.advisoryJSON(notice.advisory, base: base) else { return .null }
                        o["devices"] = .array(notice.devices.map { .string($0.rawValue) })
                        o["update"] = .string(
                            "Install firmware \(notice.advisory.fixedVersion) or later; devices that update automatically will get it."
                        )
                        return .object(o)
                    }
                    return JSON.response(["notices": .array(notices)])
                }
            ),
        ]
        return core + credentialEndpoints() + ownershipEndpoints() + updateEndpoints() + alertEndpoints()
    }

    static func advisoryJSON(_ a: AdvisoryRecord, base: String) -> JSONValue {
        return [
            "id": .string(a.id), "title": .string(a.title), "severity": .string(a.severity),
            "models": .array(a.models.map { .string($0.rawValue) }),
            "fixedVersion": .string(a.fixedVersion),
            "publishedAt": .string(ISO8601DateFormatter().string(from: a.publishedAt)),
            "csaf": .string(
                "\(base)/.well-known/csaf/white/\(Advisory.csafPath(id: a.id, publishedAt: a.publishedAt))"),
            "osv": .string("\(base)/api/v1/advisories/\(a.id)/osv"),
        ]
    }

    static let statusToken = ObjectSchema([
        FieldSchema("token", .string(maxLength: 128), "The status token given when the report was sent")
    ])
    static let transition = ObjectSchema([
        FieldSchema("state", .oneOf(ReportState.allCases.map(\.rawValue)), "The new state"),
        FieldSchema("note", .string(maxLength: 2_000, multiline: true), required: false, "Shown to the reporter"),
    ])

    /// A report as JSON: the reporter sees the status, the history and the deadlines; the security
    /// team also sees the overdue flags.
    static func reportJSON(_ r: ReportView, forReporter: Bool) -> JSONValue {
        let timestamp = Date.ISO8601FormatStyle()
        var o: [String: JSONValue] = [
            "id": .string(r.id.rawValue), "state": .string(r.state.rawValue),
            "stateText": .string(r.state.plainEnglish),
            "receivedAt": .string(r.receivedAt.formatted(timestamp)), "title": r.fields["title"] ?? .null,
            "acknowledgeBy": .string(r.acknowledgeBy.formatted(timestamp)),
            "discloseBy": .string(r.discloseBy.formatted(timestamp)),
            "history": .array(
                r.history.map {
                    [
                        "at": .string($0.at.formatted(timestamp)), "state": .string($0.state.rawValue),
                        "note": $0.note.map { .string($0) } ?? .null,
                    ]
                }),
        ]
        if !forReporter {
            o["report"] = .object(r.fields)
            o["overdue"] = .array(r.overdue.map { .string($0.rawValue) })
        }
        return .object(o)
    }

    /// Registers every endpoint: access check, then body cap and schema, then the handler. A method
    /// a documented path does not take is answered 405 with `Allow` (RFC 9110 §15.5.6), not 404.
    func register(on router: Router<HearthRequestContext>) {
        let limit = hearth.settings.maxBodyBytes
        func routerPath(_ path: String) -> RouterPath {
            RouterPath(path.replacingOccurrences(of: "{", with: ":").replacingOccurrences(of: "}", with: ""))
        }
        var methods: [String: [HTTPRequest.Method]] = [:]
        for (endpoint, _) in endpoints() { methods[endpoint.path, default: []].append(endpoint.method) }
        for (path, taken) in methods {
            let allow = taken.map(\.rawValue).sorted().joined(separator: ", ")
            for method in [
                HTTPRequest.Method.get, .post, .put, .patch, .delete, .trace, .options, HTTPRequest.Method("QUERY")!,
            ] where !taken.contains(method) {
                router.on(routerPath(path), method: method) { _, _ in
                    var response = ErrorMiddleware.response(
                        for: HearthError(.methodNotAllowed, "this resource takes \(allow) only"))
                    response.headers[.allow] = allow
                    return response
                }
            }
        }
        for (endpoint, handler) in endpoints() {
            let path = routerPath(endpoint.path)
            router.on(path, method: endpoint.method) { request, context in
                var context = context
                if endpoint.access != .public {
                    context.identity = try await Self.bearerIdentity(request, hearth: hearth)
                    let identity = try context.requireIdentity()
                    if endpoint.access == .operator, identity.role != .operator {
                        throw HearthError(.forbidden, "this needs the operator role")
                    }
                }
                var body = ValidatedObject(members: [:])
                guard let schema = endpoint.body else { return try await handler(request, context, body) }
                body = try await Body.json(request, schema: schema, limit: limit)
                do {
                    return try await handler(request, context, body)
                } catch let error as HearthError where error.code == .invalidInput || error.code == .unknownField {
                    // The body passed its schema: a later refusal of one of its fields is about
                    // meaning, not form (422, not 400), so the OpenAPI document never allows what
                    // the server calls malformed.
                    guard schema.fields.contains(where: { error.concerns($0.name) }) else { throw error }
                    throw HearthError(.unprocessable, field: error.field, error.message)
                }
            }
        }
    }

    static func bearerIdentity(_ request: Request, hearth: Hearth) async throws -> Identity? {
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer ") else { return nil }
        return try await hearth.authenticate(token: String(header.dropFirst(7)))
    }

    static func accountJSON(_ account: AccountRecord, email: String) -> JSONValue {
        ["id": .string(account.id.description), "email": .string(email), "role": .string(account.role.rawValue)]
    }

    static func modelJSON(_ model: ProductModel) -> JSONValue {
        guard case .object(var o) = model.json else { return model.json }
        o["supportEndsText"] = .string("Security updates until \(model.supportEnds.plainEnglish)")
        return .object(o)
    }

    static let timestamp = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    static func noticeJSON(_ notice: PrivacyNotice) -> JSONValue {
        let model = notice.model
        return [
            "model": .string(model.id.rawValue), "name": .string(model.name), "maker": .string(model.maker),
            "version": .string(notice.version), "purposes": .array(model.purposes.map(\.json)),
            "telemetry": .array(
                model.telemetry.map { ["name": .string($0.name), "data": $0.declaration?.json ?? .null] }),
            "commands": .array(
                model.commands.map { ["name": .string($0.name), "data": $0.declaration?.json ?? .null] }),
        ]
    }

    static func consentJSON(_ state: ConsentState) -> JSONValue {
        [
            "serial": .string(state.device.serial.rawValue), "noticeVersion": .string(state.notice.version),
            "purposes": .array(
                state.choices.map {
                    [
                        "id": .string($0.purpose.id), "description": .string($0.purpose.description),
                        "granted": .bool($0.granted),
                        "since": $0.since.map { .string($0.formatted(timestamp)) } ?? .null,
                    ]
                }),
            "withheld": .array(state.policy.withheld.keys.sorted().map { .string($0) }),
            "history": .array(
                state.history.map {
                    [
                        "purpose": .string($0.purpose), "granted": .bool($0.granted),
                        "noticeVersion": .string($0.noticeVersion), "at": .string($0.at.formatted(timestamp)),
                    ]
                }),
        ]
    }

    static func readingJSON(_ record: TelemetryRecord) -> JSONValue {
        let r = record.reading
        return [
            "position": .number(Double(record.position)), "seq": .number(Double(r.sequence)),
            "receivedAt": .string(r.receivedAt.formatted(timestamp)),
            "deviceTime": r.deviceTime.map { .string($0.formatted(timestamp)) } ?? .null,
            "values": .object(r.values), "droppedBefore": .number(Double(r.droppedBefore)),
        ]
    }

    static func date(_ text: String?, field: String) throws -> Date? {
        guard let text else { return nil }
        guard text.count <= 40, let date = (try? timestamp.parse(text)) ?? (try? Date.ISO8601FormatStyle().parse(text))
        else {
            throw HearthError.invalid(field, "expected an ISO 8601 time such as 2026-11-27T09:30:00Z")
        }
        return date
    }

    /// A query parameter that must be a whole number in 0...maximum: plain digits only, checked
    /// without overflow (no sign, no spaces, no exponent).
    static func integer(_ text: String?, field: String, maximum: Int = Int.max) throws -> Int? {
        guard let text else { return nil }
        guard let value = NetworkInput.nonNegativeInteger(text, maximum: maximum) else {
            throw HearthError.invalid(field, "expected a whole number from 0 to \(maximum)")
        }
        return value
    }

    static func deviceJSON(_ device: DeviceRecord) -> JSONValue {
        [
            "serial": .string(device.serial.rawValue), "model": .string(device.model.rawValue),
            "claimedAt": device.claimedAt.map { .string(ISO8601DateFormatter().string(from: $0)) } ?? .null,
        ]
    }

    // MARK: OpenAPI

    static func openAPIDocument(_ endpoints: [Endpoint]) -> JSONValue {
        var paths: [String: [String: JSONValue]] = [:]
        for e in endpoints {
            var op: [String: JSONValue] = [
                "summary": .string(e.summary),
                "operationId": .string(operationID(e)),
                "responses": .object(
                    Dictionary(
                        ([e.success] + e.errors).map { status in
                            (
                                String(status.code),
                                status == e.success
                                    ? ["description": .string(status.reasonPhrase)]
                                    : [
                                        "description": .string(status.reasonPhrase),
                                        "content": [
                                            "application/json": ["schema": ["$ref": "#/components/schemas/Error"]]
                                        ],
                                    ]
                            )
                        }, uniquingKeysWith: { first, _ in first })
                ),
            ]
            if e.access != .public { op["security"] = [["bearer": []]] }
            // Who may call it beyond holding a token: any signed-in account, or operators only.
            op["x-hearth-access"] =
                switch e.access {
                case .public: "public"
                case .signedIn: "signed-in"
                case .operator: "operator"
                }
            if let body = e.body {
                op["requestBody"] = [
                    "required": true, "content": ["application/json": ["schema": schemaJSON(.object(body))]],
                ]
            }
            let names = e.path.split(separator: "/").filter { $0.hasPrefix("{") }.map {
                String($0.dropFirst().dropLast())
            }
            if !names.isEmpty {
                op["parameters"] = .array(
                    names.map { ["name": .string($0), "in": "path", "required": true, "schema": ["type": "string"]] })
            }
            paths[e.path, default: [:]][e.method.rawValue.lowercased()] = .object(op)
        }
        return [
            "openapi": "3.1.0",
            "info": [
                "title": "Hearth API", "version": "1",
                "description":
                    "Hearth's HTTPS API. Every error has the body {\"error\": code, \"message\": text, \"field\"?: name}. Bodies are JSON, at most 16 KiB, and unknown fields are refused.",
            ],
            "paths": .object(paths.mapValues { .object($0) }),
            "components": [
                "securitySchemes": ["bearer": ["type": "http", "scheme": "bearer"]],
                "schemas": [
                    "Error": [
                        "type": "object", "required": ["error", "message"], "additionalProperties": false,
                        "properties": [
                            "error": [
                                "type": "string",
                                "enum": .array(HearthError.Code.allCases.map { .string($0.rawValue) }),
                            ],
                            "message": ["type": "string"], "field": ["type": "string"],
                        ],
                    ]
                ],
            ],
        ]
    }

    static func operationID(_ e: Endpoint) -> String {
        let words = e.path.split(separator: "/").filter { $0 != "api" && $0 != "v1" }.map { word in
            word.hasPrefix("{")
                ? "by" + word.dropFirst().prefix(1).uppercased() + word.dropFirst(2).dropLast()
                : word.replacingOccurrences(of: ".json", with: "")
        }
        return e.method.rawValue.lowercased() + words.map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined()
    }

    /// A text field as the validator checks it: its lengths in Unicode scalars, and its pattern
    /// (its own, or ``TextRule``'s characters).
    static func stringSchema(minLength: Int, maxLength: Int, multiline: Bool, pattern: TextPattern?) -> JSONValue {
        var o: [String: JSONValue] = [
            "type": "string", "minLength": .number(Double(minLength)), "maxLength": .number(Double(maxLength)),
        ]
        o["pattern"] = .string(pattern?.regex ?? TextRule.pattern(multiline: multiline))
        if let pattern { o["example"] = .string(pattern.example) }
        return .object(o)
    }

    static func schemaJSON(_ kind: FieldKind) -> JSONValue {
        switch kind {
        case .string(let minLength, let maxLength, let multiline, let pattern):
            stringSchema(minLength: minLength, maxLength: maxLength, multiline: multiline, pattern: pattern)
        case .integer(let min, let max):
            ["type": "integer", "minimum": .number(Double(min)), "maximum": .number(Double(max))]
        case .number(let min, let max): ["type": "number", "minimum": .number(min), "maximum": .number(max)]
        case .boolean: ["type": "boolean"]
        case .oneOf(let values): ["type": "string", "enum": .array(values.map { .string($0) })]
        case .date:
            [
                "type": "string", "format": "date", "pattern": .string(CalendarDate.pattern.regex),
                "example": .string(CalendarDate.pattern.example),
            ]
        case .array(let element, let maxItems):
            ["type": "array", "items": schemaJSON(element), "maxItems": .number(Double(maxItems))]
        case .map(let values, let maxKeys):
            [
                "type": "object", "additionalProperties": schemaJSON(values), "maxProperties": .number(Double(maxKeys)),
                "propertyNames": stringSchema(minLength: 1, maxLength: 64, multiline: false, pattern: nil),
            ]
        case .scalar(let maxLength):
            [
                "oneOf": [
                    ["type": "number"], ["type": "boolean"],
                    [
                        "type": "string", "maxLength": .number(Double(maxLength)),
                        "pattern": .string(TextRule.pattern(multiline: false)),
                    ],
                ]
            ]
        case .object(let schema):
            .object([
                "type": "object", "additionalProperties": false,
                "required": .array(schema.fields.filter(\.required).map { .string($0.name) }),
                "properties": .object(
                    Dictionary(
                        uniqueKeysWithValues: schema.fields.map { field in
                            var s = schemaJSON(field.kind)
                            if case .object(var o) = s, !field.summary.isEmpty {
                                o["description"] = .string(field.summary)
                                s = .object(o)
                            }
                            // An optional field may also be sent as null, which means "not given".
                            if !field.required { s = ["anyOf": [s, ["type": "null"]]] }
                            return (field.name, s)
                        })),
            ])
        }
    }
}

import Foundation
import HTTPTypes
import HearthCore
import HearthStorage
import HearthUpdate
import Hummingbird
import NIOCore
import Synchronization

/// The owner's pages: their devices as cards, a device's page (state, history charts, controls,
/// software, notices, logbook, name), set-up, and their account. Someone else's device and an
/// unknown serial get the same 404 (``Hearth/ownedDevice(_:by:)``), never a 403.
struct OwnerPages {
    let hearth: Hearth
    let views: Views

    struct Reading {
        let name: String
        let label: String
        let value: String
    }

    /// A device as its card and the top of its page show it.
    struct Card {
        let serial: String
        let href: String
        let displayName: String
        let product: String
        let online: Bool
        let lastSeen: String
        let readings: [Reading]
        let firmware: String
        let updateState: String
        let hasAlerts: Bool
        let alertText: String
    }

    func register(on router: Router<HearthRequestContext>) {
        let hearth = self.hearth
        let views = self.views
        let limit = hearth.settings.maxBodyBytes
        let streams = LiveStreams()

        router.get("/devices") { request, _ in
            guard let identity = try await Pages.cookieIdentity(request, hearth: hearth) else {
                return Pages.redirect("/signin")
            }
            let devices = try await hearth.devices(of: identity)
            let online = await hearth.online(devices.map(\.serial))
            let notices = try await hearth.notices(for: identity)
            var cards: [Card] = []
            for device in devices {
                let known = try await Known.load(device, hearth: hearth, online: online.contains(device.serial))
                cards.append(
                    Self.card(
                        device, known, notices: notices.filter { $0.devices.contains(device.serial) }.count,
                        hearth: hearth))
            }
            return views.render(
                "devices", title: "Your devices", nav: Views.Nav(identity),
                page: ["cards": cards, "hasDevices": !cards.isEmpty] as [String: Any])
        }

        // Set-up (claiming), step by step.
        @Sendable func claimPage(_ identity: Identity) -> Pages.FormPage {
            Pages.FormPage(
                heading: "Set up a device",
                steps: [
                    "Plug the device in. It connects to Hearth by itself over an encrypted link; there is no password to set.",
                    "Find the label on the device or in its box: it shows the serial and a setup code.",
                    "Type both below. Hearth checks the code; a wrong code changes nothing, and too many wrong codes pause set-up for a while.",
                    "Next you see what the device collects and why, and choose what optional data it may send; all of it starts off. What each product collects is on the Products page, before you buy.",
                    "The device then appears under Your devices with its readings and controls. Give it a name there.",
                ],
                form: FormModel(
                    action: "/claim", csrf: Pages.csrfToken(identity), button: "Set up",
                    [
                        FormField(
                            "serial", "Serial", maxLength: 32, autocomplete: "off",
                            hint: "Letters and digits, as printed on the label."),
                        FormField("setupCode", "Setup code", maxLength: 32, autocomplete: "off", inputmode: "numeric"),
                    ]),
                links: [Pages.Link(href: "/models", text: "What each product collects, and why")]
            )
        }
        router.get("/claim") { request, _ in
            guard let identity = try await Pages.cookieIdentity(request, hearth: hearth) else {
                return Pages.redirect("/signin")
            }
            return views.render(
                "form-page", title: "Set up a device", nav: Views.Nav(identity), page: claimPage(identity))
        }
        router.post("/claim") { request, context in
            guard let identity = try await Pages.cookieIdentity(request, hearth: hearth) else {
                return Pages.redirect("/signin")
            }
            return try await Pages.submit(
                request, FormGuard(session: identity), limit: limit, schema: API.claim, views: views,
                title: "Set up a device", nav: Views.Nav(identity), page: claimPage(identity)
            ) { form in
                let device = try await hearth.claim(
                    serial: form.string("serial")!, setupCode: form.string("setupCode")!, by: identity,
                    source: context.source)
                // Next: what it collects, and the owner's choices (everything optional starts off).
                return Pages.redirect("/devices/\(device.serial.rawValue)/privacy")
            }
        }

        router.get("/devices/:serial") { request, context in
            guard let identity = try await Pages.cookieIdentity(request, hearth: hearth) else {
                return Pages.redirect("/signin")
            }
            let device = try await hearth.ownedDevice(context.parameters.get("serial") ?? "", by: identity)
            let window = Chart.Window(rawValue: request.uri.queryParameters.get("range") ?? "24h") ?? .day
            return try await Self.devicePage(device, identity: identity, window: window, hearth: hearth, views: views)
        }
        router.post("/devices/:serial/commands/:command") { request, context in
            guard let identity = try await Pages.cookieIdentity(request, hearth: hearth) else {
                return Pages.redirect("/signin")
            }
            let device = try await hearth.ownedDevice(context.parameters.get("serial") ?? "", by: identity)
            let name = context.parameters.get("command") ?? ""
            let sent = try await FormGuard(session: identity).read(request, limit: limit)
            var answer: Answer
            var status = HTTPResponse.Status.ok
            do {
                guard let model = try await hearth.store.model(device.model),
                    let command = model.commands.first(where: { $0.name == name })
                else {
                    throw HearthError(.notFound, field: "command", "this device has no command \(name)")
                }
                let parameters = try Self.parameters(sent, command: command)
                switch try await hearth.sendCommand(
                    to: device.serial.rawValue, name: name, parameters: parameters, by: identity)
                {
                case .answered(let status, let detail):
                    answer = Answer(
                        text: "The device answered: \(status)\(detail.map { " — \($0)" } ?? "")", ok: status == "ok",
                        command: name, error: nil, sent: sent)
                case .offline:
                    answer = Answer(
                        text: "The device is offline: the command was not delivered. Try again when it is online.",
                        ok: false, command: name, error: nil, sent: sent)
                case .timedOut:
                    answer = Answer(
                        text: "The device did not answer in time; it may still carry the command out.", ok: false,
                        command: name, error: nil, sent: sent)
                }
            } catch let error as HearthError where [.invalidInput, .unknownField, .unavailable].contains(error.code) {
                // The model's check names `parameters.target`; the form's field is `target`.
                let field = error.field.map { $0.hasPrefix("parameters.") ? String($0.dropFirst(11)) : $0 }
                let shown = HearthError(error.code, field: field, error.message)
                answer = Answer(
                    text: "Nothing was sent: \(error.message)", ok: false, command: name, error: shown, sent: sent)
                status = ErrorMiddleware.status(for: error.code)
            }
            return try await Self.devicePage(
                device, identity: identity, window: .day, hearth: hearth, views: views, answer: answer, status: status)
        }
        router.post("/devices/:serial/name") { request, context in
            guard let identity = try await Pages.cookieIdentity(request, hearth: hearth) else {
                return Pages.redirect("/signin")
            }
            let device = try await hearth.ownedDevice(context.parameters.get("serial") ?? "", by: identity)
            let sent = try await FormGuard(session: identity).read(request, limit: limit)
            do {
                try await hearth.nameDevice(device.serial.rawValue, name: sent["name"] ?? "", by: identity)
                return Pages.redirect("/devices/\(device.serial.rawValue)")
            } catch let error as HearthError where error.code == .invalidInput {
                return try await Self.devicePage(
                    device, identity: identity, window: .day, hearth: hearth, views: views,
                    answer: Answer(
                        text: "The name was not changed: \(error.message)", ok: false, command: "name", error: error,
                        sent: sent), status: .badRequest)
            }
        }
        router.get("/devices/:serial/events") { request, context in
            guard let identity = try await Pages.cookieIdentity(request, hearth: hearth) else {
                throw HearthError(.unauthorized, "sign in first")
            }
            let device = try await hearth.ownedDevice(context.parameters.get("serial") ?? "", by: identity)
            return try await streams.open(device, account: identity.account.id, hearth: hearth)
        }

        router.get("/account") { request, _ in
            guard let identity = try await Pages.cookieIdentity(request, hearth: hearth) else {
                return Pages.redirect("/signin")
            }
            return try await Self.accountPage(identity, hearth: hearth, views: views)
        }
        router.post("/account/sign-out-everywhere") { request, _ in
            guard let identity = try await Pages.cookieIdentity(request, hearth: hearth) else {
                return Pages.redirect("/signin")
            }
            _ = try await FormGuard(session: identity).read(request, limit: limit)
            try await hearth.signOutEverywhere(identity)
            return Pages.redirect("/signin", cookie: Pages.sessionCookie("", maxAge: 0))
        }
        router.get("/account/export") { request, _ in
            guard let identity = try await Pages.cookieIdentity(request, hearth: hearth) else {
                return Pages.redirect("/signin")
            }
            do {
                return try await DataExport(hearth: hearth, identity: identity).response()
            } catch let error as HearthError where error.code == .throttled {
                return Pages.errorPage(error, views: views, nav: Views.Nav(identity))
            }
        }
        router.post("/account/delete/cancel") { request, _ in
            guard let identity = try await Pages.cookieIdentity(request, hearth: hearth) else {
                return Pages.redirect("/signin")
            }
            _ = try await FormGuard(session: identity).read(request, limit: limit)
            try await hearth.cancelDeletion(by: identity)
            return Pages.redirect("/account#delete")
        }
        for form in ["password", "recovery-code", "delete"] {
            let schema = form == "password" ? API.passwordChange : API.passwordOnly
            router.post(RouterPath("/account/\(form)")) { request, context in
                guard let identity = try await Pages.cookieIdentity(request, hearth: hearth) else {
                    return Pages.redirect("/signin")
                }
                return try await Pages.submit(
                    request, FormGuard(session: identity), limit: limit, schema: schema, views: views,
                    nav: Views.Nav(identity),
                    refused: { error, sent in
                        try await Self.accountPage(identity, hearth: hearth, views: views, refused: (form, error, sent))
                    }
                ) { body in
                    if form == "password" {
                        let ended = try await hearth.changePassword(
                            current: body.string("currentPassword")!, new: body.string("newPassword")!,
                            by: identity, source: context.source)
                        return views.render(
                            "message", title: "Password changed", nav: Views.Nav(identity),
                            page: Pages.Message(
                                heading: "Your password is changed",
                                paragraphs: [
                                    ended == 0
                                        ? "No other browser or app was signed in."
                                        : "\(ended == 1 ? "One other session was" : "\(ended) other sessions were") signed out."
                                ], links: [Pages.Link(href: "/account", text: "Your account")]))
                    }
                    if form == "delete" {
                        let (after, token) = try await hearth.requestDeletion(
                            password: body.string("password")!, by: identity, source: context.source)
                        return views.render(
                            "message", title: "Account deletion requested", nav: Views.Nav(identity),
                            page: Pages.Message(
                                heading: "Your account will be deleted on \(Pages.when(after))",
                                paragraphs: [
                                    "Until then you can cancel on your account page. Then your devices leave your account, their readings and your privacy choices are deleted, and your account with them.",
                                    "Keep this address: after the deletion it shows the signed receipt of what was deleted and when. It is shown only now.",
                                ], secret: "/api/v1/deletion-receipts/\(token)",
                                links: [Pages.Link(href: "/account", text: "Your account")]))
                    }
                    let code = try await hearth.newRecoveryCode(
                        password: body.string("password")!, by: identity, source: context.source)
                    return views.render(
                        "message", title: "Your new recovery code", nav: Views.Nav(identity),
                        page: Pages.recoveryMessage(
                            code, heading: "Your new recovery code",
                            next: Pages.Link(href: "/account", text: "Your account")))
                }
            }
        }
    }

    /// The outcome of a command or a rename, shown at the top of the device page.
    struct Answer {
        let text: String
        let ok: Bool
        let command: String
        let error: HearthError?
        let sent: [String: String]
    }

    /// A command's form fields turned into the typed parameters the model declares.
    static func parameters(_ sent: [String: String], command: CommandSpec) throws -> [String: JSONValue] {
        var out: [String: JSONValue] = [:]
        for field in command.parameters {
            guard let text = sent[field.name]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else {
                if field.required { throw HearthError.invalid(field.name, "a value is required") }
                continue
            }
            switch field.type {
            case .number:
                guard text.count <= 32, let value = Double(text), value.isFinite else {
                    throw HearthError.invalid(field.name, "expected a number")
                }
                out[field.name] = .number(value)
            case .integer:
                guard
                    let value = NetworkInput.nonNegativeInteger(text, maximum: 1 << 53)
                        ?? (text.hasPrefix("-")
                            ? NetworkInput.nonNegativeInteger(String(text.dropFirst()), maximum: 1 << 53).map { -$0 }
                            : nil)
                else {
                    throw HearthError.invalid(field.name, "expected a whole number")
                }
                out[field.name] = .number(Double(value))
            case .boolean:
                guard text == "true" || text == "false" else {
                    throw HearthError.invalid(field.name, "expected on or off")
                }
                out[field.name] = .bool(text == "true")
            case .enumeration:
                out[field.name] = .string(text)
            }
        }
        return out
    }

    /// A command as a form: one field a parameter, typed and bounded as the model says.
    static func controlForm(_ command: CommandSpec, serial: String, csrf: String, current: [String: JSONValue])
        -> FormModel
    {
        let fields = command.parameters.map { p -> FormField in
            var field = FormField(p.name, Self.label(p.name, unit: p.unit), required: p.required)
            switch p.type {
            case .number(let lo, let hi):
                field.type = "number"
                (field.min, field.max, field.step) = (Chart.number(lo, step: 1), Chart.number(hi, step: 1), "0.5")
                field.inputmode = "decimal"
                field.hint =
                    "From \(Chart.number(lo, step: 1)) to \(Chart.number(hi, step: 1))\(p.unit.map { " \($0)" } ?? "")."
            case .integer(let lo, let hi):
                field.type = "number"
                (field.min, field.max, field.step) = (String(lo), String(hi), "1")
                field.hint = "A whole number from \(lo) to \(hi)."
            case .boolean:
                field.select = true
                field.options = [
                    FormField.Option(value: "true", text: "On"), FormField.Option(value: "false", text: "Off"),
                ]
            case .enumeration(let values):
                field.select = true
                field.options = values.map { FormField.Option(value: $0, text: $0) }
            }
            field.describedBy = field.hint.map { _ in "\(field.id)-hint" }
            if case .number(let n)? = current[p.name] { field.value = Chart.number(n, step: 0.1) }
            return field
        }
        return FormModel(
            action: "/devices/\(serial)/commands/\(command.name)", csrf: csrf, button: Self.words(command.name), fields)
    }

    /// `setTarget` → "Set target".
    static func words(_ identifier: String) -> String {
        var out = ""
        for c in identifier {
            if c.isUppercase { out += " " + c.lowercased() } else { out.append(c == "_" ? " " : c) }
        }
        return out.prefix(1).uppercased() + out.dropFirst()
    }

    static func label(_ name: String, unit: String?) -> String { words(name) + (unit.map { " (\($0))" } ?? "") }

    static func format(_ value: JSONValue?, _ field: DataField) -> String {
        guard let value else { return "—" }
        let unit = field.unit.map { " \($0)" } ?? ""
        switch (value, field.type) {
        case (.number(let n), .integer): return "\(Int(exactly: n.rounded()) ?? 0)\(unit)"
        case (.number(let n), _): return String(format: "%.1f", n) + unit
        case (.bool(let b), _): return b ? "On" : "Off"
        case (.string(let s), _): return s
        default: return "—"
        }
    }

    static func readings(_ latest: TelemetryRecord?, model: ProductModel?) -> [Reading] {
        (model?.telemetry ?? []).map {
            Reading(name: $0.name, label: words($0.name), value: format(latest?.reading.values[$0.name], $0))
        }
    }

    static func lastSeen(_ latest: TelemetryRecord?, online: Bool) -> String {
        if online, latest == nil { return "now" }
        return latest.map { Pages.when($0.reading.receivedAt) } ?? "never"
    }

    /// What the store and the gateway know of a device now: read once for its card and its page.
    struct Known {
        let model: ProductModel?
        let latest: TelemetryRecord?
        let update: Updates.DeviceUpdateView?
        let online: Bool

        static func load(_ device: DeviceRecord, hearth: Hearth, online: Bool) async throws -> Known {
            Known(
                model: try await hearth.store.model(device.model),
                latest: try await hearth.latest(device),
                update: try await hearth.updates?.deviceView(device), online: online)
        }
    }

    static func card(_ device: DeviceRecord, _ known: Known, notices: Int, hearth: Hearth) -> Card {
        let (model, latest, update, online) = (known.model, known.latest, known.update, known.online)
        let alerts = notices + (update?.alerts.count ?? 0) + (update?.supportEnded == true ? 1 : 0)
        let product = model?.name ?? device.model.rawValue
        return Card(
            serial: device.serial.rawValue, href: "/devices/\(device.serial.rawValue)",
            displayName: hearth.name(of: device) ?? product, product: product, online: online,
            lastSeen: lastSeen(latest, online: online), readings: readings(latest, model: model),
            firmware: update?.running.map { "version \($0)" } ?? "version not reported yet",
            updateState: update?.latest.flatMap { UpdatePhase(rawValue: $0.phase)?.plainEnglish }
                ?? "no update reported", hasAlerts: alerts > 0,
            alertText: alerts == 1 ? "1 alert" : "\(alerts) alerts"
        )
    }

    static func devicePage(
        _ device: DeviceRecord, identity: Identity, window: Chart.Window, hearth: Hearth, views: Views,
        answer: Answer? = nil, status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let serial = device.serial.rawValue
        let known = try await Known.load(
            device, hearth: hearth, online: await hearth.online([device.serial]).contains(device.serial))
        let (model, latest, update, online) = (known.model, known.latest, known.update, known.online)
        let notices = try await hearth.notices(for: identity).filter { $0.devices.contains(device.serial) }.map(
            \.advisory)
        let card = card(device, known, notices: notices.count, hearth: hearth)
        let now = hearth.time.now()
        var charts: [Chart] = []
        let numeric = (model?.telemetry ?? []).filter {
            switch $0.type {
            case .number, .integer: true
            default: false
            }
        }
        if hearth.telemetry != nil, !numeric.isEmpty {
            let series = try await hearth.series(
                device, fields: numeric.map(\.name), seconds: window.seconds,
                slice: window.seconds / Double(window.buckets))
            charts = numeric.map {
                Chart(field: $0.name, unit: $0.unit, buckets: series[$0.name] ?? [], window: window, now: now)
            }
        }
        let csrf = Pages.csrfToken(identity)
        let controls = (model?.commands ?? []).map { command -> FormModel in
            let form = controlForm(command, serial: serial, csrf: csrf, current: latest?.reading.values ?? [:])
            guard let answer, answer.command == command.name, let error = answer.error else { return form }
            return form.refused(error, sent: answer.sent)
        }
        var rename = FormModel(
            action: "/devices/\(serial)/name", csrf: csrf, button: "Save name",
            [
                FormField(
                    "name", "Name", required: false, maxLength: Hearth.deviceNameLength,
                    hint: "For example \"Hall thermostat\". Leave empty to show the product name.")
            ])
        rename.fields[0].value = hearth.name(of: device) ?? ""
        if let answer, answer.command == "name", let error = answer.error {
            rename = rename.refused(error, sent: answer.sent)
        }
        let phase = update?.latest.flatMap { UpdatePhase(rawValue: $0.phase) }
        let progress: Int? =
            switch phase {
            case .downloading: 1
            case .verifying: 2
            case .installing: 3
            case .rebooting: 4
            default: nil
            }
        // The release's notes as the maker signed them (TUF custom metadata): what it fixes, how
        // serious, and whether the device keeps working while it installs.
        let notes = update?.release.flatMap { release -> String? in
            guard case .object(let custom)? = try? JSONValue.parse(Array(release.custom.utf8)),
                case .object(let notes)? = custom["release_notes"],
                case .string(let fixes)? = notes["fixes"]
            else { return nil }
            var text = fixes
            if case .string(let severity)? = notes["severity_text"] { text += " " + severity }
            if notes["keeps_working_while_installing"] == .bool(true) {
                text += " The device keeps working while it installs."
            }
            return text
        }
        let alerts = try await hearth.store.alerts(
            of: device.serial, since: device.claimedAt ?? .distantFuture, limit: 5)
        let page = Views.model([
            "serial": serial, "href": "/devices/\(serial)?range=\(window.rawValue)", "displayName": card.displayName,
            "product": card.product, "online": online,
            "lastSeen": card.lastSeen, "readings": card.readings, "eventsURL": "/devices/\(serial)/events",
            "answer": answer?.text, "answerClass": answer?.ok == true ? "ok" : "error",
            "hasControls": !controls.isEmpty, "controls": controls,
            "hasCharts": !charts.isEmpty, "charts": charts,
            "windows": Chart.Window.allCases.map {
                [
                    "href": "/devices/\(serial)?range=\($0.rawValue)#history",
                    "label": "Last \($0.words.replacingOccurrences(of: "the last ", with: ""))",
                    "current": $0 == window,
                ] as [String: Any]
            },
            "firmware": card.firmware, "updateState": card.updateState, "progress": progress,
            "supportText": update.map {
                $0.supportEnded
                    ? "Security updates for this product ended on \($0.supportEnds.plainEnglish). It gets no more fixes; consider replacing it."
                    : "Security updates until \($0.supportEnds.plainEnglish)."
            } ?? "",
            "releaseNotes": notes, "releaseVersion": update?.release?.version ?? "",
            "notices": notices.map {
                ["id": $0.id, "severity": $0.severity, "title": $0.title, "fixedVersion": $0.fixedVersion]
            },
            "logbook": try await hearth.logbook(device, since: device.claimedAt, limit: 50).map {
                ["at": Pages.when($0.at), "text": $0.text, "alert": $0.alert] as [String: Any]
            },
            "rename": rename, "base": "/devices/\(serial)",
            "retention": try await retentionText(device, hearth: hearth),
            "quarantine": device.quarantine.map { Hearth.quarantineText($0) } ?? "",
            "alerts": alerts.map { ["at": Pages.when($0.raisedAt), "text": API.plainEnglish(kind: $0.kind)] },
            "hasAlerts": !alerts.isEmpty,
            "withheld": try await hearth.consentState(device, owner: identity.account.id).policy.withheld.keys.sorted()
                .joined(separator: ", "),
        ])
        return views.render(
            "device", title: card.displayName, nav: Views.Nav(identity), page: page, status: status, live: true)
    }

    /// "Readings are deleted automatically when their time is up: temperature after 365 days…"
    static func retentionText(_ device: DeviceRecord, hearth: Hearth) async throws -> String {
        let (periods, oldest) = try await hearth.retention(device)
        guard !periods.isEmpty else { return "" }
        let list = periods.map { "\(words($0.field).lowercased()) after \($0.days == 1 ? "1 day" : "\($0.days) days")" }
        return "Readings are deleted automatically when their time is up: \(list.joined(separator: ", "))."
            + (oldest.map { " The oldest one kept is from \(Pages.when($0))." } ?? "")
    }

    /// The account page's forms that change credentials: `password` and `recovery-code` (the
    /// paths they post to under /account/), one marked refused.
    struct CredentialForms {
        var password: FormModel
        var recoveryCode: FormModel
        var deletion: FormModel

        init(csrf: String, refused: (form: String, error: HearthError, sent: [String: String])?) {
            password = FormModel(
                action: "/account/password", csrf: csrf, button: "Change password",
                [
                    FormField(
                        "currentPassword", "Current password", type: "password", maxLength: 256,
                        autocomplete: "current-password"),
                    FormField(
                        "newPassword", "New password", type: "password", minLength: 15, maxLength: 256,
                        autocomplete: "new-password",
                        hint:
                            "At least 15 characters. Every other browser and app signed in to your account is signed out."
                    ),
                ])
            deletion = FormModel(
                action: "/account/delete", csrf: csrf, button: "Delete my account",
                [
                    FormField(
                        "password", "Password", type: "password", maxLength: 256, autocomplete: "current-password",
                        hint: "Your account is deleted in 7 days; until then you can cancel here.")
                ]
            ).identified(by: "delete")
            recoveryCode = FormModel(
                action: "/account/recovery-code", csrf: csrf, button: "Make a new recovery code",
                [
                    FormField(
                        "password", "Password", type: "password", maxLength: 256, autocomplete: "current-password",
                        hint: "The old code stops working.")
                ])
            switch refused?.form {
            case "password": password = password.refused(refused!.error, sent: refused!.sent)
            case "recovery-code": recoveryCode = recoveryCode.refused(refused!.error, sent: refused!.sent)
            case "delete": deletion = deletion.refused(refused!.error, sent: refused!.sent)
            default: break
            }
        }
    }

    static func accountPage(
        _ identity: Identity, hearth: Hearth, views: Views,
        refused: (form: String, error: HearthError, sent: [String: String])? = nil
    ) async throws -> Response {
        let forms = CredentialForms(csrf: Pages.csrfToken(identity), refused: refused)
        let sessions = try await hearth.sessions(of: identity).map {
            [
                "createdAt": Pages.when($0.session.createdAt), "expiresAt": Pages.when($0.session.expiresAt),
                "current": $0.current,
            ] as [String: Any]
        }
        let page: [String: Any] = [
            "email": identity.email.rawValue, "role": identity.role == .operator ? "Operator" : "Owner",
            "deviceCount": try await hearth.devices(of: identity).count,
            "sessions": sessions,
            "everywhere": FormModel(
                action: "/account/sign-out-everywhere", csrf: Pages.csrfToken(identity), button: "Sign out everywhere",
                []),
            "password": forms.password, "recoveryCode": forms.recoveryCode,
            "isOwner": identity.role == .owner,
            "deletion": forms.deletion, "deletionPending": identity.account.deletion != nil,
            "deletionText": identity.account.deletion.map {
                "Your account will be deleted on \(Pages.when($0.after)). Until then, you can cancel."
            } ?? "",
            "cancelDeletion": FormModel(
                action: "/account/delete/cancel", csrf: Pages.csrfToken(identity), button: "Cancel the deletion", []),
            "hasRecoveryCode": identity.account.recoveryHash != nil,
        ]
        return views.render(
            "account", title: "Your account", nav: Views.Nav(identity), page: page,
            status: refused.map { ErrorMiddleware.status(for: $0.error.code) } ?? .ok)
    }
}

/// Live state for open device pages, as server-sent events: the device's presence and readings,
/// sent when they change (checked every two seconds), for at most a minute a stream (the browser
/// reconnects by itself), at most four streams an account at once (more get 429). A slot is
/// given back when its stream ends, and in any case after 70 s, so a stream whose body never ran
/// (the client left first) cannot hold it.
final class LiveStreams: Sendable {
    static let perAccount = 4
    static let streamSeconds = 60
    let open = Mutex<[AccountID: [UUID: Date]]>([:])

    func open(_ device: DeviceRecord, account: AccountID, hearth: Hearth) async throws -> Response {
        let slot = UUID()
        let now = hearth.time.now()
        let admitted = open.withLock { streams in
            var mine = streams[account, default: [:]].filter {
                now.timeIntervalSince($0.value) < Double(Self.streamSeconds + 10)
            }
            guard mine.count < Self.perAccount else { return false }
            mine[slot] = now
            streams[account] = mine
            return true
        }
        guard admitted else {
            throw HearthError(.throttled, "too many live pages open; close some and reload", retryAfter: 5)
        }
        let model = try await hearth.store.model(device.model)
        let body = ResponseBody { [self] writer in
            defer { self.open.withLock { $0[account]?[slot] = nil } }
            var last = ""
            var buffer = ByteBuffer(string: "retry: 3000\n\n")
            try await writer.write(buffer)
            for _ in 0..<(Self.streamSeconds / 2) {
                let latest = try await hearth.latest(device)
                let online = await hearth.online([device.serial]).contains(device.serial)
                var fields: [String: JSONValue] = [:]
                for reading in OwnerPages.readings(latest, model: model) {
                    fields[reading.name] = .string(reading.value)
                }
                let state: JSONValue = [
                    "online": .bool(online), "lastSeen": .string(OwnerPages.lastSeen(latest, online: online)),
                    "readings": .object(fields),
                ]
                if state.text != last {
                    last = state.text
                    buffer = ByteBuffer(string: "event: state\ndata: \(last)\n\n")
                    try await writer.write(buffer)
                }
                try await Task.sleep(for: .seconds(2))
            }
            try await writer.finish(nil)
        }
        return Response(
            status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-store"], body: body)
    }
}

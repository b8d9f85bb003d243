import Foundation
import HTTPTypes
import HearthCore
import HearthCrypto
import HearthStorage
import HearthUpdate
import Hummingbird

/// The operator console (operators only; the disclosure queue only for the security team): the
/// fleet with filter and paging, a device with revoke, models and support periods, rollouts with
/// their controls, the disclosure queue, and the audit log with its verification. The fleet shows
/// no owner's e-mail (least privilege): only whether a device is claimed.
struct ConsolePages {
    let hearth: Hearth
    let views: Views

    struct Cell {
        let column: String
        let text: String
        var href: String?
        var alert = false
        var progress: Int?
    }

    struct Fact {
        let term: String
        let detail: String
        var alert = false
    }

    struct TitledForm {
        let formHeading: String
        let form: FormModel
    }

    static let sections = [
        ("/console", "Fleet"), ("/console/connections", "Connections"), ("/console/alerts", "Alerts"),
        ("/console/models", "Models"),
        ("/console/rollouts", "Rollouts"),
        ("/console/reports", "Disclosure"), ("/console/audit", "Audit log"),
    ]
    static let pageSize = 50

    /// The console page model: the section links, then what the page fills in.
    static func page(_ heading: String, section: String, _ content: [String: Any?]) -> [String: Any] {
        var page: [String: Any] = [
            "heading": heading,
            "sections": sections.map { ["href": $0.0, "text": $0.1, "current": $0.0 == section] as [String: Any] },
            "facts": [Fact](), "columns": [String](), "rows": [[String: Any]](), "forms": [TitledForm](),
        ]
        page.merge(Views.model(content)) { $1 }
        return page
    }

    static func row(_ cells: [Cell]) -> [String: Any] { ["cells": cells] }

    func register(on router: Router<HearthRequestContext>) {
        let hearth = self.hearth
        let views = self.views
        let limit = hearth.settings.maxBodyBytes

        /// The signed-in operator, or a redirect / 403 for anyone else.
        @Sendable func requireOperator(_ request: Request) async throws -> Identity? {
            guard let identity = try await Pages.cookieIdentity(request, hearth: hearth) else { return nil }
            guard identity.role == .operator else { throw HearthError(.forbidden, "the console is for operators") }
            return identity
        }
        @Sendable func render(
            _ identity: Identity, _ title: String, _ page: [String: Any], status: HTTPResponse.Status = .ok
        ) -> Response {
            views.render("console", title: title, nav: Views.Nav(identity), page: page, status: status)
        }

        // The fleet: filter by model, claimed or not, serial prefix; keyset paging by serial.
        router.get("/console") { request, _ in
            guard let identity = try await requireOperator(request) else { return Pages.redirect("/signin") }
            let query = request.uri.queryParameters
            let models = try await hearth.store.models()
            var filter = FleetFilter()
            var sent: [String: String] = [:]
            var problem: HearthError?
            do {
                if let raw = query.get("model"), !raw.isEmpty {
                    sent["model"] = raw
                    guard let id = try? ProductModelID(raw), models.contains(where: { $0.id == id }) else {
                        throw HearthError.invalid("model", "no such model")
                    }
                    filter.model = id
                }
                if let raw = query.get("claimed"), !raw.isEmpty {
                    sent["claimed"] = raw
                    guard raw == "yes" || raw == "no" else { throw HearthError.invalid("claimed", "yes, no or empty") }
                    filter.claimed = raw == "yes"
                }
                if let raw = query.get("serial"), !raw.isEmpty {
                    sent["serial"] = raw
                    let prefix = raw.uppercased()
                    guard prefix.count <= 32,
                        prefix.unicodeScalars.allSatisfy({ ("A"..."Z").contains($0) || ("0"..."9").contains($0) })
                    else {
                        throw HearthError.invalid("serial", "letters and digits only, at most 32")
                    }
                    filter.serialPrefix = prefix
                }
            } catch let error as HearthError {
                problem = error
                filter = FleetFilter()
            }
            let after = query.get("after").flatMap { try? DeviceSerial($0) }
            let (devices, total) = try await hearth.fleet(
                after: after, filter: filter, limit: Self.pageSize, by: identity)
            let online = await hearth.online(devices.map(\.serial))
            var rows: [[String: Any]] = []
            for device in devices {
                let latest = try await hearth.telemetry?.latest(device.serial)
                // The row needs the version and the alert count only: the device's update events,
                // not the owner's whole view (model, release notes).
                let events = try await hearth.updates?.store.updateEvents(device.serial, limit: 50) ?? []
                let refused = try await hearth.telemetry?.refusals(device.serial).reduce(0) { $0 + $1.count } ?? 0
                let alerts = events.filter { UpdatePhase(rawValue: $0.phase)?.alert == true }.count
                rows.append(
                    Self.row([
                        Cell(
                            column: "Serial", text: device.serial.rawValue,
                            href: "/console/devices/\(device.serial.rawValue)"),
                        Cell(column: "Model", text: device.model.rawValue),
                        Cell(column: "Software", text: events.first?.version ?? "—"),
                        Cell(
                            column: "State",
                            text: device.revokedAt != nil
                                ? "Revoked" : online.contains(device.serial) ? "Online" : "Offline",
                            alert: device.revokedAt != nil),
                        Cell(
                            column: "Last seen",
                            text: OwnerPages.lastSeen(latest, online: online.contains(device.serial))),
                        Cell(column: "Claimed", text: device.owner == nil ? "No" : "Yes"),
                        Cell(column: "Refused", text: String(refused), alert: refused > 0),
                        Cell(column: "Alerts", text: String(alerts), alert: alerts > 0),
                    ]))
            }
            var next: String?
            if devices.count == Self.pageSize, let last = devices.last {
                var components = URLComponents()
                components.queryItems =
                    sent.sorted { $0.key < $1.key }.map { URLQueryItem(name: $0.key, value: $0.value) } + [
                        URLQueryItem(name: "after", value: last.serial.rawValue)
                    ]
                next = "/console?" + (components.percentEncodedQuery ?? "")
            }
            var form = FormModel(
                action: "/console", csrf: nil, button: "Show",
                [
                    { () -> FormField in
                        var f = FormField("model", "Model", required: false)
                        f.select = true
                        f.options =
                            [FormField.Option(value: "", text: "All models")]
                            + models.map {
                                FormField.Option(value: $0.id.rawValue, text: $0.name, selected: $0.id == filter.model)
                            }
                        return f
                    }(),
                    { () -> FormField in
                        var f = FormField("claimed", "Claimed", required: false)
                        f.select = true
                        f.options = [("", "Claimed or not"), ("yes", "Claimed"), ("no", "Not claimed")].map {
                            FormField.Option(value: $0.0, text: $0.1, selected: $0.0 == (sent["claimed"] ?? ""))
                        }
                        return f
                    }(),
                    FormField("serial", "Serial starts with", required: false, maxLength: 32, autocomplete: "off"),
                ])
            form.method = "get"
            form.fields[2].value = sent["serial"] ?? ""
            if let problem { form = form.refused(problem, sent: sent) }
            return render(
                identity, "Fleet",
                Self.page(
                    "Fleet", section: "/console",
                    [
                        "filter": form,
                        "count":
                            "\(total) device\(total == 1 ? "" : "s") match\(after == nil ? "" : "; this page continues after \(after!.rawValue)").",
                        "columns": [
                            "Serial", "Model", "Software", "State", "Last seen", "Claimed", "Refused", "Alerts",
                        ], "rows": rows, "next": next,
                    ]), status: problem == nil ? .ok : .badRequest)
        }

        router.get("/console/devices/:serial") { request, context in
            guard let identity = try await requireOperator(request) else { return Pages.redirect("/signin") }
            let device = try await hearth.fleetDevice(context.parameters.get("serial") ?? "", by: identity)
            return render(
                identity, device.serial.rawValue,
                try await Self.devicePage(device, identity: identity, hearth: hearth, flash: nil))
        }
        router.post("/console/devices/:serial/revoke") { request, context in
            guard let identity = try await requireOperator(request) else { return Pages.redirect("/signin") }
            let device = try await hearth.fleetDevice(context.parameters.get("serial") ?? "", by: identity)
            _ = try await FormGuard(session: identity).read(request, limit: limit)
            let changed = try await hearth.revoke(device.serial.rawValue, by: identity)
            if let gateway = hearth.commands as? any DeviceDisconnecting {
                await gateway.disconnect(device.serial, reason: "the device certificate was revoked")
            }
            let updated = try await hearth.fleetDevice(device.serial.rawValue, by: identity)
            return render(
                identity, device.serial.rawValue,
                try await Self.devicePage(
                    updated, identity: identity, hearth: hearth,
                    flash: changed
                        ? "Revoked: the gateway refuses this device from now on." : "This device was already revoked."))
        }

        // Quarantine by hand (with the reason the owner will read), and release.
        for release in [false, true] {
            router.post(release ? "/console/devices/:serial/release" : "/console/devices/:serial/quarantine") {
                request, context in
                guard let identity = try await requireOperator(request) else { return Pages.redirect("/signin") }
                let device = try await hearth.fleetDevice(context.parameters.get("serial") ?? "", by: identity)
                let sent = try await FormGuard(session: identity).read(request, limit: limit)
                var flash: String
                do {
                    try await hearth.quarantine(
                        device.serial.rawValue, reason: release ? nil : (sent["reason"] ?? ""), by: identity)
                    flash =
                        release
                        ? "Released from quarantine: its readings and commands are accepted again."
                        : "Quarantined: the device may connect and update, nothing else. Its owner sees why."
                } catch let error as HearthError where error.code == .conflict || error.code == .invalidInput {
                    flash = "Not changed: \(error.message)"
                }
                let updated = try await hearth.fleetDevice(device.serial.rawValue, by: identity)
                return render(
                    identity, device.serial.rawValue,
                    try await Self.devicePage(updated, identity: identity, hearth: hearth, flash: flash))
            }
        }

        // Security alerts: open and acknowledged ones (or all), newest first, with their lifecycle.
        router.get("/console/alerts") { request, _ in
            guard let identity = try await requireOperator(request) else { return Pages.redirect("/signin") }
            let all = request.uri.queryParameters.get("state") == "all"
            return render(identity, "Alerts", try await Self.alertsPage(identity, hearth: hearth, all: all, flash: nil))
        }
        router.post("/console/alerts/:id/:action") { request, context in
            guard let identity = try await requireOperator(request) else { return Pages.redirect("/signin") }
            _ = try await FormGuard(session: identity).read(request, limit: limit)
            let id = context.parameters.get("id") ?? ""
            let state: AlertRecord.State
            switch context.parameters.get("action") {
            case "acknowledge": state = .acknowledged
            case "resolve": state = .resolved
            default: throw HearthError(.notFound, "no such action")
            }
            do {
                try await hearth.setAlertState(id, state, by: identity)
                return render(
                    identity, "Alerts",
                    try await Self.alertsPage(
                        identity, hearth: hearth, all: false, flash: ("Alert \(id.prefix(8)): \(state.rawValue).", true)
                    ))
            } catch let error as HearthError where error.code == .conflict {
                return render(
                    identity, "Alerts",
                    try await Self.alertsPage(
                        identity, hearth: hearth, all: false, flash: ("Not changed: \(error.message)", false)),
                    status: .conflict)
            }
        }

        router.get("/console/models") { request, _ in
            guard let identity = try await requireOperator(request) else { return Pages.redirect("/signin") }
            let now = hearth.time.now()
            var rows: [[String: Any]] = []
            for model in try await hearth.store.models() {
                let count = try await hearth.store.fleetCount(FleetFilter(model: model.id))
                let ended = Updates.ended(model.supportEnds, now: now)
                let releases =
                    try await hearth.updates?.store.releases(model: model.id).map(\.version).joined(separator: ", ")
                    ?? ""
                rows.append(
                    Self.row([
                        Cell(column: "Model", text: "\(model.name) (\(model.id.rawValue))"),
                        Cell(column: "Devices", text: String(count)),
                        Cell(
                            column: "Security updates",
                            text: ended
                                ? "Ended \(model.supportEnds.plainEnglish)" : "Until \(model.supportEnds.plainEnglish)",
                            alert: ended),
                        Cell(column: "Releases", text: releases.isEmpty ? "—" : releases),
                    ]))
            }
            return render(
                identity, "Models",
                Self.page(
                    "Models and support periods", section: "/console/models",
                    [
                        "intro": [
                            "A support period can only be extended (POST /api/v1/models/{id}/support); a shortening is refused and audited."
                        ],
                        "columns": ["Model", "Devices", "Security updates", "Releases"], "rows": rows,
                    ]))
        }

        // Rollouts: per-stage progress, failure rate, and pause / resume / advance / abort.
        router.get("/console/rollouts") { request, _ in
            guard let identity = try await requireOperator(request) else { return Pages.redirect("/signin") }
            return render(identity, "Rollouts", try await Self.rolloutsPage(identity, hearth: hearth, flash: nil))
        }
        router.post("/console/rollouts") { request, _ in
            guard let identity = try await requireOperator(request) else { return Pages.redirect("/signin") }
            let sent = try await FormGuard(session: identity).read(request, limit: limit)
            guard let updates = hearth.updates else {
                throw HearthError(.unavailable, "this server runs no update repository")
            }
            do {
                let target = sent["target"] ?? ""
                guard !target.isEmpty else { throw HearthError.invalid("target", "choose a release") }
                let view = try await updates.startRollout(
                    target: target, plan: .standard, actor: identity.account.id.description)
                return render(
                    identity, "Rollouts",
                    try await Self.rolloutsPage(
                        identity, hearth: hearth, flash: ("Started rollout \(view.rollout.id) of \(target).", true)))
            } catch let error as HearthError where error.code != .internal && error.code != .integrity {
                return render(
                    identity, "Rollouts",
                    try await Self.rolloutsPage(
                        identity, hearth: hearth, flash: ("Not started: \(error.message)", false)),
                    status: ErrorMiddleware.status(for: error.code))
            }
        }
        router.post("/console/rollouts/:id/:action") { request, context in
            guard let identity = try await requireOperator(request) else { return Pages.redirect("/signin") }
            _ = try await FormGuard(session: identity).read(request, limit: limit)
            guard let updates = hearth.updates else {
                throw HearthError(.unavailable, "this server runs no update repository")
            }
            guard let action = Updates.Control(rawValue: context.parameters.get("action") ?? "") else {
                throw HearthError(.notFound, "no such action")
            }
            let id = context.parameters.get("id") ?? ""
            do {
                let view = try await updates.control(id, action, actor: identity.account.id.description)
                return render(
                    identity, "Rollouts",
                    try await Self.rolloutsPage(
                        identity, hearth: hearth,
                        flash: ("Rollout \(view.rollout.id): \(action.rawValue) done; now \(view.rollout.state).", true)
                    ))
            } catch let error as HearthError where error.code == .conflict {
                return render(
                    identity, "Rollouts",
                    try await Self.rolloutsPage(
                        identity, hearth: hearth, flash: ("Rollout \(id): \(error.message)", false)), status: .conflict)
            }
        }

        // The disclosure queue (security team).
        router.get("/console/reports") { request, _ in
            guard let identity = try await requireOperator(request) else { return Pages.redirect("/signin") }
            let reports = try await hearth.reports(by: identity)
            let rows = reports.map { r in
                Self.row([
                    Cell(column: "Report", text: r.id.rawValue, href: "/console/reports/\(r.id.rawValue)"),
                    Cell(column: "Title", text: r.text("title") ?? ""),
                    Cell(column: "State", text: r.state.plainEnglish),
                    Cell(column: "Received", text: Pages.when(r.receivedAt)),
                    Cell(
                        column: "Acknowledge by", text: Pages.when(r.acknowledgeBy),
                        alert: r.overdue.contains(.acknowledgement)),
                    Cell(column: "Disclose by", text: Pages.when(r.discloseBy), alert: r.overdue.contains(.disclosure)),
                    Cell(
                        column: "Overdue",
                        text: r.overdue.isEmpty ? "No" : r.overdue.map(\.rawValue).joined(separator: ", "),
                        alert: !r.overdue.isEmpty),
                ])
            }
            return render(
                identity, "Disclosure queue",
                Self.page(
                    "Disclosure queue", section: "/console/reports",
                    [
                        "count": "\(reports.count) report\(reports.count == 1 ? "" : "s"), newest first.",
                        "columns": [
                            "Report", "Title", "State", "Received", "Acknowledge by", "Disclose by", "Overdue",
                        ], "rows": rows,
                    ]))
        }
        router.get("/console/reports/:id") { request, context in
            guard let identity = try await requireOperator(request) else { return Pages.redirect("/signin") }
            let report = try await hearth.report(context.parameters.get("id") ?? "", by: identity)
            return render(identity, report.id.rawValue, Self.reportPage(report, identity: identity, flash: nil))
        }
        router.post("/console/reports/:id/transition") { request, context in
            guard let identity = try await requireOperator(request) else { return Pages.redirect("/signin") }
            let report = try await hearth.report(context.parameters.get("id") ?? "", by: identity)
            let sent = try await FormGuard(session: identity).read(request, limit: limit)
            do {
                let form = try Pages.validate(sent, schema: API.transition)
                guard let state = ReportState(rawValue: form.string("state")!) else {
                    throw HearthError.invalid("state", "unknown state")
                }
                let moved = try await hearth.moveReport(
                    report.id.rawValue, to: state, note: form.string("note"), by: identity)
                return render(
                    identity, report.id.rawValue,
                    Self.reportPage(
                        moved, identity: identity,
                        flash: (
                            "Moved to \(moved.state.plainEnglish). The reporter sees this on their status page.", true
                        )))
            } catch let error as HearthError where [.invalidInput, .conflict, .unknownField].contains(error.code) {
                return render(
                    identity, report.id.rawValue,
                    Self.reportPage(
                        report, identity: identity, flash: ("Not moved: \(error.message)", false),
                        refused: ("transition", error, sent)), status: ErrorMiddleware.status(for: error.code))
            }
        }
        router.post("/console/reports/:id/advisory") { request, context in
            guard let identity = try await requireOperator(request) else { return Pages.redirect("/signin") }
            let report = try await hearth.report(context.parameters.get("id") ?? "", by: identity)
            let sent = try await FormGuard(session: identity).read(request, limit: limit)
            do {
                let advisory = try await hearth.publishAdvisory(
                    report.id.rawValue, try Self.advisoryBody(sent), base: Pages.base(request), by: identity)
                let moved = try await hearth.report(report.id.rawValue, by: identity)
                return render(
                    identity, report.id.rawValue,
                    Self.reportPage(
                        moved, identity: identity,
                        flash: (
                            "Published advisory \(advisory.id); owners of affected devices see the notice, and the report is disclosed.",
                            true
                        )))
            } catch let error as HearthError
                where [.invalidInput, .conflict, .unknownField, .notFound].contains(error.code)
            {
                return render(
                    identity, report.id.rawValue,
                    Self.reportPage(
                        report, identity: identity, flash: ("Not published: \(error.message)", false),
                        refused: ("advisory", error, sent)),
                    status: ErrorMiddleware.status(for: error.code == .notFound ? .invalidInput : error.code))
            }
        }

        // Who is connected where: the count on each node, and the newest connections.
        router.get("/console/connections") { request, _ in
            guard let identity = try await requireOperator(request) else { return Pages.redirect("/signin") }
            let live = try await hearth.liveConnections(limit: Self.pageSize * 2, by: identity)
            func name(_ node: String?) -> String {
                guard let node else { return "This node" }
                return node == Node.id ? "\(node) (this node)" : node
            }
            let total = live.perNode.values.reduce(0, +)
            let facts = live.perNode.sorted { ($0.key ?? "") < ($1.key ?? "") }.map {
                Fact(term: name($0.key), detail: "\($0.value) device\($0.value == 1 ? "" : "s") connected")
            }
            let rows = live.newest.map { c in
                Self.row([
                    Cell(
                        column: "Serial", text: c.serial.rawValue, href: "/console/devices/\(c.serial.rawValue)"),
                    Cell(column: "Node", text: name(c.node)),
                    Cell(column: "Connected since", text: Pages.when(c.since)),
                ])
            }
            return render(
                identity, "Connections",
                Self.page(
                    "Connections", section: "/console/connections",
                    [
                        "facts": facts,
                        "count": total == 0
                            ? "No device is connected."
                            : "\(total) device\(total == 1 ? "" : "s") connected; the newest \(rows.count) below.",
                        "columns": ["Serial", "Node", "Connected since"], "rows": rows,
                    ]))
        }

        // The audit log and its verification.
        router.get("/console/audit") { request, _ in
            guard let identity = try await requireOperator(request) else { return Pages.redirect("/signin") }
            let (problem, count, recent) = try await hearth.verifiedAudit(by: identity, recent: 100)
            let rows = recent.map { r in
                Self.row([
                    Cell(column: "#", text: String(r.sequence)),
                    Cell(column: "When", text: Pages.when(Date(timeIntervalSince1970: Double(r.atMillis) / 1000))),
                    Cell(column: "What", text: r.kind), Cell(column: "Subject", text: r.subject ?? ""),
                    Cell(column: "Detail", text: r.detail),
                ])
            }
            return render(
                identity, "Audit log",
                Self.page(
                    "Audit log", section: "/console/audit",
                    [
                        "facts": [
                            Fact(
                                term: "Verification",
                                detail: problem.map { "TAMPERED: \($0)" }
                                    ?? "Intact: all \(count) records chain and match their MACs.", alert: problem != nil
                            )
                        ],
                        "count": "The newest \(recent.count) of \(count) records.",
                        "columns": ["#", "When", "What", "Subject", "Detail"], "rows": rows,
                    ]))
        }
    }

    static func devicePage(_ device: DeviceRecord, identity: Identity, hearth: Hearth, flash: String?) async throws
        -> [String: Any]
    {
        let online = await hearth.online([device.serial]).contains(device.serial)
        let latest = try await hearth.telemetry?.latest(device.serial)
        let update = try await hearth.updates?.deviceView(device)
        let refusals = try await hearth.telemetry?.refusals(device.serial) ?? []
        var facts = [
            Fact(term: "Model", detail: device.model.rawValue),
            Fact(term: "Provisioned", detail: Pages.when(device.provisionedAt)),
            Fact(term: "Claimed", detail: device.claimedAt.map { "Yes, \(Pages.when($0))" } ?? "No"),
            Fact(
                term: "State",
                detail: device.revokedAt.map { "Revoked \(Pages.when($0))" } ?? (online ? "Online" : "Offline"),
                alert: device.revokedAt != nil),
            Fact(term: "Last seen", detail: OwnerPages.lastSeen(latest, online: online)),
            Fact(term: "Software", detail: update?.running ?? "not reported"),
            Fact(
                term: "Update",
                detail: update?.latest.flatMap { UpdatePhase(rawValue: $0.phase)?.plainEnglish } ?? "none reported"),
        ]
        facts += refusals.map {
            Fact(term: "Refused \($0.kind.rawValue)", detail: "\($0.count), last \(Pages.when($0.lastAt))", alert: true)
        }
        facts += (update?.alerts ?? []).map {
            Fact(
                term: "Alert",
                detail: "\(Pages.when($0.at)): \(UpdatePhase(rawValue: $0.phase)?.plainEnglish ?? $0.phase)",
                alert: true)
        }
        if let q = device.quarantine {
            facts.append(Fact(term: "Quarantine", detail: "Since \(Pages.when(q.since)): \(q.reason)", alert: true))
        }
        for a in try await hearth.store.alerts(of: device.serial, since: .distantPast, limit: 5) {
            facts.append(
                Fact(
                    term: "Security alert",
                    detail: "\(Pages.when(a.raisedAt)): \(a.kind) (\(a.severity)), \(a.state.rawValue)",
                    alert: a.state == .open))
        }
        var forms: [TitledForm] = []
        let csrf = Pages.csrfToken(identity)
        if device.quarantine != nil {
            forms.append(
                TitledForm(
                    formHeading: "Quarantine",
                    form: FormModel(
                        action: "/console/devices/\(device.serial.rawValue)/release", csrf: csrf,
                        button: "Release from quarantine", [])))
        } else {
            forms.append(
                TitledForm(
                    formHeading: "Quarantine",
                    form: FormModel(
                        action: "/console/devices/\(device.serial.rawValue)/quarantine", csrf: csrf,
                        button: "Quarantine this device",
                        [
                            FormField(
                                "reason", "Why (the owner reads this)", maxLength: 500,
                                hint: "e.g. it sent traffic to other devices; we are investigating")
                        ])))
        }
        if device.revokedAt == nil {
            forms.append(
                TitledForm(
                    formHeading: "Revoke",
                    form: FormModel(
                        action: "/console/devices/\(device.serial.rawValue)/revoke", csrf: Pages.csrfToken(identity),
                        button: "Revoke this device's certificate", [])))
        }
        return page(
            device.serial.rawValue, section: "/console",
            ["facts": facts, "forms": forms, "flash": flash, "flashClass": "ok"])
    }

    static func alertsPage(_ identity: Identity, hearth: Hearth, all: Bool, flash: (String, Bool)?) async throws
        -> [String: Any]
    {
        let csrf = Pages.csrfToken(identity)
        let states: Set<AlertRecord.State> = all ? Set(AlertRecord.State.allCases) : [.open, .acknowledged]
        let alerts = try await hearth.alerts(in: states, by: identity)
        let rows = alerts.map { a -> [String: Any] in
            row([
                Cell(column: "Raised", text: Pages.when(a.raisedAt)),
                Cell(column: "Device", text: a.serial.rawValue, href: "/console/devices/\(a.serial.rawValue)"),
                Cell(column: "Kind", text: a.kind),
                Cell(column: "Severity", text: a.severity, alert: a.severity == "high"),
                Cell(column: "Evidence", text: Self.evidenceText(a.evidence)),
                Cell(column: "State", text: a.state.rawValue, alert: a.state == .open),
            ])
        }
        var forms: [TitledForm] = []
        for a in alerts where a.state != .resolved {
            let actions = a.state == .open ? ["acknowledge", "resolve"] : ["resolve"]
            for action in actions {
                forms.append(
                    TitledForm(
                        formHeading: "\(a.kind) on \(a.serial.rawValue): \(action)",
                        form: FormModel(
                            action: "/console/alerts/\(a.id)/\(action)", csrf: csrf,
                            button: OwnerPages.words(action) + " alert \(a.id.prefix(8))", [])))
            }
        }
        return page(
            "Alerts", section: "/console/alerts",
            [
                "columns": ["Raised", "Device", "Kind", "Severity", "Evidence", "State"], "rows": rows, "forms": forms,
                "count": all
                    ? "\(alerts.count) alert\(alerts.count == 1 ? "" : "s"), newest first."
                    : "\(alerts.count) open or acknowledged alert\(alerts.count == 1 ? "" : "s"), newest first. High severity quarantines the device by itself; release it from its page.",
                "flash": flash?.0, "flashClass": flash?.1 == true ? "ok" : "error",
            ])
    }

    /// An alert's evidence as one line: `refused 12, windowSeconds 60, …`.
    static func evidenceText(_ json: String) -> String {
        guard case .object(let o)? = try? JSONValue.parse(Array(json.utf8)) else { return json }
        return o.keys.sorted().map { key in
            let value: String
            switch o[key]! {
            case .string(let s): value = s
            case .number(let n): value = n == n.rounded() && abs(n) < 1e15 ? String(Int64(n)) : String(n)
            case .array(let items):
                value = items.map { if case .string(let s) = $0 { s } else { $0.text } }.joined(separator: " / ")
            default: value = o[key]!.text
            }
            return "\(key) \(value)"
        }.joined(separator: ", ")
    }

    static func rolloutsPage(_ identity: Identity, hearth: Hearth, flash: (String, Bool)?) async throws -> [String: Any]
    {
        guard let updates = hearth.updates else {
            throw HearthError(.unavailable, "this server runs no update repository")
        }
        let csrf = Pages.csrfToken(identity)
        let rollouts = try await updates.rollouts()
        let rows = rollouts.map { v -> [String: Any] in
            let r = v.rollout
            let finished = v.tally.succeeded + v.tally.failed
            let percent = r.stages.isEmpty ? 0 : r.stages[min(max(r.stage, 0), r.stages.count - 1)]
            let done = v.tally.members == 0 ? 0 : min(100, 100 * finished / v.tally.members)
            return row([
                Cell(column: "Rollout", text: r.id), Cell(column: "Release", text: r.target),
                Cell(column: "State", text: r.state + (r.note.map { " — \($0)" } ?? ""), alert: r.state == "paused"),
                Cell(
                    column: "Stage",
                    text: "\(min(r.stage + 1, r.stages.count)) of \(r.stages.count): \(percent)% of devices"),
                Cell(column: "Progress", text: "\(finished) of \(v.tally.members) finished", progress: done),
                Cell(
                    column: "Failure rate",
                    text: finished == 0 ? "—" : "\(100 * v.tally.failed / finished)% (\(v.tally.failed))",
                    alert: v.tally.failed > 0),
            ])
        }
        var forms: [TitledForm] = []
        for v in rollouts where v.rollout.state == "active" || v.rollout.state == "paused" {
            for action in Updates.Control.allCases {
                forms.append(
                    TitledForm(
                        formHeading: "\(v.rollout.id): \(action.rawValue)",
                        form: FormModel(
                            action: "/console/rollouts/\(v.rollout.id)/\(action.rawValue)", csrf: csrf,
                            button: OwnerPages.words(action.rawValue) + " \(v.rollout.id)", [])))
            }
        }
        var releases: [String] = []
        for model in try await hearth.store.models() {
            releases += try await updates.store.releases(model: model.id).map(\.target)
        }
        var start = FormField("target", "Release", required: true)
        start.select = true
        start.options = releases.map { FormField.Option(value: $0, text: $0) }
        forms.insert(
            TitledForm(
                formHeading: "Start a rollout",
                form: FormModel(
                    action: "/console/rollouts", csrf: csrf, button: "Start rollout (1% → 10% → 50% → 100%)", [start])),
            at: 0)
        return page(
            "Rollouts", section: "/console/rollouts",
            [
                "columns": ["Rollout", "Release", "State", "Stage", "Progress", "Failure rate"], "rows": rows,
                "forms": forms,
                "count":
                    "\(rollouts.count) rollout\(rollouts.count == 1 ? "" : "s"), newest first. A rollout pauses by itself when too many updates fail.",
                "flash": flash?.0, "flashClass": flash?.1 == true ? "ok" : "error",
            ])
    }

    /// The advisory form: `models` is typed as a comma-separated list.
    static func advisoryForm(_ report: ReportView, csrf: String) -> FormModel {
        var severity = FormField("severity", "Severity")
        severity.select = true
        severity.options = ["low", "moderate", "important", "critical"].map { FormField.Option(value: $0, text: $0) }
        return FormModel(
            action: "/console/reports/\(report.id.rawValue)/advisory", csrf: csrf, button: "Publish the advisory",
            wide: true,
            [
                FormField("title", "Title", minLength: 3, maxLength: 200),
                FormField(
                    "summary", "What it is and what owners should do, in plain language", minLength: 10,
                    maxLength: 5_000, multiline: true),
                severity,
                FormField(
                    "models", "Affected product models", maxLength: 1_400,
                    hint: "Model ids, separated by commas, e.g. thermostat-t1, lock-l1."),
                FormField(
                    "affectedBelow", "Affected below version", maxLength: 32,
                    hint: "Firmware versions below this one are affected, e.g. 1.3.0."),
                FormField("fixedVersion", "Fixed in version", maxLength: 32),
                FormField("cve", "CVE id", maxLength: 32, hint: "For example CVE-2026-12345."),
            ])
    }

    /// The advisory form's fields as the API's body: the model list split at commas.
    static func advisoryBody(_ sent: [String: String]) throws -> ValidatedObject {
        var members: [String: JSONValue] = [:]
        for (name, value) in sent where name != "models" { members[name] = .string(value) }
        let models = (sent["models"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter
        { !$0.isEmpty }
        members["models"] = .array(models.map { .string($0) })
        return try Advisory.schema.validate(.object(members))
    }

    static func reportPage(
        _ report: ReportView, identity: Identity, flash: (String, Bool)?,
        refused: (form: String, error: HearthError, sent: [String: String])? = nil
    ) -> [String: Any] {
        var facts = [
            Fact(term: "State", detail: report.state.plainEnglish),
            Fact(term: "Received", detail: Pages.when(report.receivedAt)),
            Fact(
                term: "Acknowledge by", detail: Pages.when(report.acknowledgeBy),
                alert: report.overdue.contains(.acknowledgement)),
            Fact(
                term: "Disclose by", detail: Pages.when(report.discloseBy), alert: report.overdue.contains(.disclosure)),
        ]
        for name in ["title", "description", "product", "contact", "credit"] {
            if let text = report.text(name) { facts.append(Fact(term: OwnerPages.words(name), detail: text)) }
        }
        facts += report.history.map {
            Fact(term: Pages.when($0.at), detail: $0.state.plainEnglish + ($0.note.map { ": \($0)" } ?? ""))
        }
        var forms: [TitledForm] = []
        if !report.state.next.isEmpty {
            var state = FormField("state", "New state")
            state.select = true
            state.options = report.state.next.map { FormField.Option(value: $0.rawValue, text: $0.plainEnglish) }
            var form = FormModel(
                action: "/console/reports/\(report.id.rawValue)/transition", csrf: Pages.csrfToken(identity),
                button: "Move", wide: true,
                [
                    state,
                    FormField(
                        "note", "Note to the reporter", required: false, maxLength: 2000,
                        hint: "The reporter sees this on their status page.", multiline: true),
                ])
            if let refused, refused.form == "transition" { form = form.refused(refused.error, sent: refused.sent) }
            forms.append(TitledForm(formHeading: "Move this report", form: form))
        }
        if report.state == .fixed {
            var form = advisoryForm(report, csrf: Pages.csrfToken(identity))
            if let refused, refused.form == "advisory" { form = form.refused(refused.error, sent: refused.sent) }
            forms.append(
                TitledForm(
                    formHeading: "Publish the advisory (CSAF 2.0 and OSV); the report becomes disclosed", form: form))
        }
        return page(
            "Report \(report.id.rawValue)", section: "/console/reports",
            [
                "facts": facts, "forms": forms, "flash": flash?.0, "flashClass": flash?.1 == true ? "ok" : "error",
            ])
    }
}

extension Hearth {
    /// The audit log's verification (the whole chain and its head) and the newest records
    /// (operators).
    public func verifiedAudit(by identity: Identity, recent: Int) async throws -> (
        problem: String?, count: Int, recent: [AuditRecord]
    ) {
        guard identity.role == .operator else { throw HearthError(.forbidden, "this needs the operator role") }
        let records = try await store.auditRecords()
        let problem = KEKAuditSealer(kek: kek).verify(records, head: try await store.auditHead())
        return (problem, records.count, Array(records.suffix(recent).reversed()))
    }
}

import Foundation
import HTTPTypes
import HearthCore
import HearthStorage
import Hummingbird

/// The owner's page for the end of their hold on a device (EN 303 645 5.11-2..4): remove it from
/// the account (keeping or deleting its history), hand it on to someone, or dispose of it.
struct OwnershipPages {
    let hearth: Hearth
    let views: Views

    struct Section {
        let id: String
        let title: String
        var text: [String] = []
        var form: FormModel?
    }

    struct Page {
        let heading: String
        var intro: [String] = []
        var sections: [Section] = []
        var links: [Pages.Link] = []
    }

    static func historyField() -> FormField {
        var field = FormField("history", "Your readings from this device")
        field.select = true
        field.options = [
            FormField.Option(value: "delete", text: "Delete them now", selected: true),
            FormField.Option(value: "keep", text: "Keep them in my account (in my data export)"),
        ]
        return field
    }

    static func page(
        _ device: DeviceRecord, name: String, csrf: String, refused: (String, HearthError, [String: String])?
    )
        -> Page
    {
        let base = "/devices/\(device.serial.rawValue)"
        var forms = [
            "unclaim": FormModel(
                action: "\(base)/unclaim", csrf: csrf, button: "Remove from my account", [historyField()]),
            "transfer": FormModel(
                action: "\(base)/transfer", csrf: csrf, button: "Hand it on",
                [
                    FormField(
                        "to", "The new owner's e-mail address", type: "email", maxLength: 254,
                        hint: "Only an account with this address can claim it for the next 14 days."),
                    historyField(),
                ]),
            "dispose": FormModel(
                action: "\(base)/dispose", csrf: csrf, button: "Dispose of this device",
                [
                    FormField(
                        "confirm", "Type the serial \(device.serial.rawValue) to confirm", maxLength: 32,
                        autocomplete: "off")
                ]),
            "rekey": FormModel(action: "\(base)/rekey", csrf: csrf, button: "Give it a new key", []),
        ]
        for (id, form) in forms { forms[id] = form.identified(by: id) }
        if let (id, error, sent) = refused { forms[id] = forms[id]?.refused(error, sent: sent) }
        return Page(
            heading: "Remove, hand on or dispose of \(name)",
            intro: [
                "Whatever you choose, the next owner never sees your readings, your name for the device or your privacy choices."
            ],
            sections: [
                Section(
                    id: "unclaim", title: "Remove it from your account",
                    text: [
                        "The device stays as it is and can be set up again with the code on its label: do this before you sell or give it away, or reset it to factory settings."
                    ], form: forms["unclaim"]),
                Section(
                    id: "transfer", title: "Hand it on to someone",
                    text: [
                        "It leaves your account now. The new owner signs up (or signs in) with the address you give and claims it with the code on its label."
                    ], form: forms["transfer"]),
                Section(
                    id: "dispose", title: "Dispose of it",
                    text: [
                        "For a device that is broken, lost, stolen or thrown away: its certificate is revoked so it can never connect again, and its readings are deleted. This cannot be undone."
                    ], form: forms["dispose"]),
                Section(
                    id: "rekey", title: "Give it a new key",
                    text: [
                        "If you think the device's key was copied (it was repaired, or someone had it), it can make a new one: the next time it is connected it makes the key inside the device, gets a certificate for it, and from then on its old key is refused. It stays yours and keeps its readings."
                    ], form: forms["rekey"]),
            ],
            links: [Pages.Link(href: base, text: "Back to the device")])
    }

    func register(on router: Router<HearthRequestContext>) {
        let hearth = self.hearth
        let views = self.views
        let limit = hearth.settings.maxBodyBytes

        router.get("/devices/:serial/remove") { request, context in
            guard let identity = try await Pages.cookieIdentity(request, hearth: hearth) else {
                return Pages.redirect("/signin")
            }
            let device = try await hearth.ownedDevice(context.parameters.get("serial") ?? "", by: identity)
            let name = hearth.name(of: device) ?? "this device"
            return views.render(
                "sections", title: "Remove or hand on", nav: Views.Nav(identity),
                page: Self.page(device, name: name, csrf: Pages.csrfToken(identity), refused: nil))
        }

        for action in ["unclaim", "transfer", "dispose", "rekey"] {
            let schema =
                switch action {
                case "unclaim": API.unclaimBody
                case "transfer": API.transferBody
                case "rekey": API.rekeyBody
                default: API.disposeBody
                }
            router.post("/devices/:serial/\(action)") { request, context in
                guard let identity = try await Pages.cookieIdentity(request, hearth: hearth) else {
                    return Pages.redirect("/signin")
                }
                let device = try await hearth.ownedDevice(context.parameters.get("serial") ?? "", by: identity)
                let serial = device.serial.rawValue
                let name = hearth.name(of: device) ?? "this device"
                let nav = Views.Nav(identity)
                return try await Pages.submit(
                    request, FormGuard(session: identity), limit: limit, schema: schema, views: views, nav: nav,
                    refused: { error, sent in
                        views.render(
                            "sections", title: "Remove or hand on", nav: nav,
                            page: Self.page(
                                device, name: name, csrf: Pages.csrfToken(identity), refused: (action, error, sent)),
                            status: ErrorMiddleware.status(for: error.code))
                    }
                ) { form in
                    if action == "rekey" {
                        _ = try await hearth.requestRekey(serial, by: identity)
                        return views.render(
                            "message", title: "New key requested", nav: nav,
                            page: Pages.Message(
                                heading: "\(name.prefix(1).uppercased() + name.dropFirst()) will make a new key",
                                paragraphs: [
                                    "The next time it is connected, it makes the key, gets a certificate for it and connects with it; from then on its old key is refused. Nothing else changes."
                                ], links: [Pages.Link(href: "/devices/\(serial)", text: "Back to the device")]))
                    }
                    let keep = form.string("history") == "keep"
                    let ended: OwnershipRecord
                    var paragraphs: [String] = []
                    switch action {
                    case "unclaim":
                        ended = try await hearth.unclaim(serial, keepHistory: keep, by: identity)
                        paragraphs.append("It can be set up again with the code on its label.")
                    case "transfer":
                        ended = try await hearth.transfer(
                            serial, to: form.string("to") ?? "", keepHistory: keep, by: identity)
                        paragraphs.append(
                            "Give the device to its new owner with its label: they sign up or sign in with the address you gave and claim it within 14 days."
                        )
                    default:
                        guard form.string("confirm") == serial else {
                            throw HearthError.invalid("confirm", "type the serial \(serial) exactly")
                        }
                        ended = try await hearth.dispose(serial, by: identity)
                        paragraphs.append("Its certificate is revoked: it can never connect again.")
                    }
                    paragraphs.append(
                        ended.historyKept
                            ? "Your readings from it are kept in your account: they are in your data export, and deleted with your account."
                            : "Your readings from it are deleted.")
                    return views.render(
                        "message", title: "Done", nav: nav,
                        page: Pages.Message(
                            heading: "\(name.prefix(1).uppercased() + name.dropFirst()) is no longer yours",
                            paragraphs: paragraphs, links: [Pages.Link(href: "/devices", text: "Your devices")]))
                }
            }
        }
    }
}

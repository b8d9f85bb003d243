import Foundation
import HearthCore
import HearthStorage
import Hummingbird

/// What a device collects and the owner's say over it: the public privacy notice of each model
/// (readable before purchase, linked from the label, the claim page and the device page) and, for
/// the owner, the choices per optional purpose (EN 303 645 6-1..6-3).
struct PrivacyPages {
    let hearth: Hearth
    let views: Views

    struct Page {
        let heading: String
        var intro: [String] = []
        let notice: Notice
        var form: FormModel?
        var history: [Entry] = []
        var links: [Pages.Link] = []
        var saved = false
    }

    struct Notice {
        let purposes: [Purpose]
        let items: [PrivacyNotice.Item]
        let version: String
    }

    struct Purpose {
        let description: String
        let essential: Bool
    }

    struct Entry {
        let when: String
        let text: String
    }

    static func notice(_ notice: PrivacyNotice) -> Notice {
        Notice(
            purposes: notice.model.purposes.map { Purpose(description: $0.description, essential: $0.essential) },
            items: notice.items, version: notice.version)
    }

    /// The field of the consent form for one optional purpose.
    static func fieldName(_ purpose: DataPurpose) -> String { "consent-\(purpose.id)" }

    static func form(_ state: ConsentState, csrf: String) -> FormModel {
        FormModel(
            action: "/devices/\(state.device.serial.rawValue)/privacy", csrf: csrf, button: "Save my choices",
            state.choices.map { choice in
                var field = FormField(Self.fieldName(choice.purpose), choice.purpose.description)
                field.select = true
                field.options = [("no", "Not allowed"), ("yes", "Allowed")].map {
                    FormField.Option(value: $0.0, text: $0.1, selected: ($0.0 == "yes") == choice.granted)
                }
                return field
            })
    }

    func register(on router: Router<HearthRequestContext>) {
        let hearth = self.hearth
        let views = self.views
        let limit = hearth.settings.maxBodyBytes

        router.get("/models/:id/privacy") { request, context in
            let nav = try await Pages.nav(request, hearth: hearth)
            let notice: PrivacyNotice
            do {
                notice = try await hearth.privacyNotice(context.parameters.get("id") ?? "")
            } catch let error as HearthError where error.code == .notFound {
                return Pages.errorPage(error, views: views, nav: nav)
            }
            let model = notice.model
            return views.render(
                "privacy", title: "Privacy: \(model.name)", nav: nav,
                page: Page(
                    heading: "What the \(model.name) collects, and why",
                    intro: [
                        "Made by \(model.maker). This notice is made from what the maker declared; Hearth enforces it: data for a purpose you have not agreed to is refused and never stored, and everything is deleted when its time is up.",
                        "Security updates until \(model.supportEnds.plainEnglish).",
                    ],
                    notice: Self.notice(notice), links: [Pages.Link(href: "/models", text: "All products")]))
        }

        @Sendable func page(_ state: ConsentState, identity: Identity, saved: Bool, form: FormModel? = nil) -> Page {
            let serial = state.device.serial.rawValue
            let purposes = Dictionary(state.choices.map { ($0.purpose.id, $0.purpose.description) }) { a, _ in a }
            return Page(
                heading: "Privacy and your choices",
                intro: [
                    state.choices.isEmpty
                        ? "This device collects only what it needs to work; there is nothing optional to choose."
                        : "Optional data is off until you allow it. Change your mind here at any time: the device stops sending what you no longer allow."
                ],
                notice: Self.notice(state.notice),
                form: state.choices.isEmpty ? nil : (form ?? Self.form(state, csrf: Pages.csrfToken(identity))),
                history: state.history.reversed().map {
                    Entry(
                        when: Pages.when($0.at),
                        text: "\($0.granted ? "Allowed" : "Not allowed"): \(purposes[$0.purpose] ?? $0.purpose)")
                },
                links: [
                    Pages.Link(href: "/devices/\(serial)", text: "Back to the device"),
                    Pages.Link(
                        href: "/models/\(state.notice.model.id.rawValue)/privacy", text: "The privacy notice alone"),
                ],
                saved: saved)
        }

        router.get("/devices/:serial/privacy") { request, context in
            guard let identity = try await Pages.cookieIdentity(request, hearth: hearth) else {
                return Pages.redirect("/signin")
            }
            let state = try await hearth.consents(context.parameters.get("serial") ?? "", by: identity)
            return views.render(
                "privacy", title: "Privacy and your choices", nav: Views.Nav(identity),
                page: page(state, identity: identity, saved: request.uri.queryParameters.get("saved") == "1"))
        }

        router.post("/devices/:serial/privacy") { request, context in
            guard let identity = try await Pages.cookieIdentity(request, hearth: hearth) else {
                return Pages.redirect("/signin")
            }
            let state = try await hearth.consents(context.parameters.get("serial") ?? "", by: identity)
            let sent: [String: String]
            do {
                sent = try await FormGuard(session: identity).read(request, limit: limit)
            } catch let error as HearthError {
                return Pages.errorPage(error, views: views, nav: Views.Nav(identity))
            }
            do {
                // Every field is one optional purpose of this device, "yes" or "no"; anything else
                // is refused and nothing changes.
                let known = Dictionary(state.choices.map { (Self.fieldName($0.purpose), $0.purpose.id) }) { a, _ in a }
                var granted: [String] = []
                for (name, value) in sent.sorted(by: { $0.key < $1.key }) {
                    guard let purpose = known[name] else {
                        throw HearthError(
                            .unknownField, field: name, "'\(name.prefix(40))' is not a choice on this form")
                    }
                    guard value == "yes" || value == "no" else {
                        throw HearthError.invalid(name, "choose Allowed or Not allowed")
                    }
                    if value == "yes" { granted.append(purpose) }
                }
                _ = try await hearth.setConsents(state.device.serial.rawValue, granted: granted, by: identity)
                return Pages.redirect("/devices/\(state.device.serial.rawValue)/privacy?saved=1")
            } catch let error as HearthError where error.code == .invalidInput || error.code == .unknownField {
                let form = Self.form(state, csrf: Pages.csrfToken(identity)).refused(error, sent: sent)
                return views.render(
                    "privacy", title: "Privacy and your choices", nav: Views.Nav(identity),
                    page: page(state, identity: identity, saved: false, form: form),
                    status: ErrorMiddleware.status(for: error.code))
            }
        }
    }
}

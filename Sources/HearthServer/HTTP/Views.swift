import Foundation
import HTTPTypes
import HearthCore
import Hummingbird
import Mustache

/// The pages' templates (`Resources/Templates/*.mustache`): one layout, one template a page, a page
/// model a template. `{{value}}` is HTML-escaped by the template engine; no template uses the
/// unescaped forms (`{{{…}}}`, `{{&…}}`), which `ViewTests` checks, except `layout`'s none.
/// Route handlers only gather data into a model and call ``render(_:title:nav:page:status:live:)``.
struct Views: Sendable {
    let library: MustacheLibrary

    /// The templates shipped with the build; a missing or malformed one stops the server at start.
    static let folder = Bundle.module.resourceURL?.appendingPathComponent("Templates").path ?? "Templates"

    static let shipped: Views = {
        do {
            return Views(library: try MustacheLibrary.load(folder))
        } catch {
            fatalError("the page templates are missing or malformed: \(error)")
        }
    }()

    /// What the layout shows around every page.
    struct Layout {
        let title: String
        let nav: Nav?
        let live: Bool
        let page: Any
    }

    /// The signed-in header: who, their role, and the sign-out form's token.
    struct Nav {
        let email: String
        let csrf: String
        let isOperator: Bool

        init(_ identity: Identity) {
            email = identity.email.rawValue
            csrf = Pages.csrfToken(identity)
            isOperator = identity.role == .operator
        }
    }

    /// A page model as a dictionary without its absent values: an optional left in would render
    /// as present (a section shown, "nil" printed).
    static func model(_ values: [String: Any?]) -> [String: Any] { values.compactMapValues { $0 } }

    func html(_ template: String, title: String, nav: Nav?, page: Any, live: Bool = false) -> String {
        let full = title == "Hearth" ? title : "\(title) · Hearth"
        return library.render(Layout(title: full, nav: nav, live: live, page: page), withTemplate: template)
            ?? "template \(template) is missing"
    }

    func render(
        _ template: String, title: String, nav: Nav?, page: Any, status: HTTPResponse.Status = .ok, live: Bool = false
    ) -> Response {
        Response(
            status: status, headers: [.contentType: "text/html; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: html(template, title: title, nav: nav, page: page, live: live)))
        )
    }
}

extension MustacheLibrary {
    /// Every `.mustache` file under `folder`, named by its path without the extension.
    static func load(_ folder: String) throws -> MustacheLibrary {
        var library = MustacheLibrary()
        let files = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".mustache") }
        guard !files.isEmpty else { throw HearthError(.internal, "no templates in \(folder)") }
        for file in files {
            let text = try String(contentsOfFile: folder + "/" + file, encoding: .utf8)
            try library.register(text, named: String(file.dropLast(".mustache".count)))
        }
        return library
    }
}

/// One input of a form, as `form.mustache` draws it: a label tied to it, an optional hint, and
/// after a refused post the value sent (never a password's) and the error next to it, with
/// `aria-invalid` and `aria-describedby` pointing at the hint and the error.
struct FormField: Sendable {
    var name: String
    var label: String
    var type = "text"
    var value = ""
    var required = true
    var minLength: Int?
    var maxLength: Int?
    var min: String?
    var max: String?
    var step: String?
    var autocomplete: String?
    var inputmode: String?
    var hint: String?
    var error: String?
    var multiline = false
    var describedBy: String?
    /// The element id, unique on the page (``FormModel/identified(by:)`` when a page has several
    /// forms with a field of the same name); its hint and error are `id-hint` and `id-error`.
    var id: String
    /// A choice from a list (`<select>`) instead of typing.
    var select = false
    var options: [Option] = []

    struct Option: Sendable {
        let value: String
        let text: String
        var selected = false
    }

    init(
        _ name: String, _ label: String, type: String = "text", required: Bool = true, minLength: Int? = nil,
        maxLength: Int? = nil, autocomplete: String? = nil,
        inputmode: String? = nil, hint: String? = nil, multiline: Bool = false
    ) {
        self.name = name
        self.label = label
        self.type = type
        self.required = required
        self.minLength = minLength
        self.maxLength = maxLength
        self.autocomplete = autocomplete
        self.inputmode = inputmode
        self.hint = hint
        self.multiline = multiline
        id = "f-\(name)"
        describedBy = hint.map { _ in "f-\(name)-hint" }
    }
}

/// A form as `form.mustache` draws it. A refused post is drawn again by ``refused(_:sent:)``.
struct FormModel: Sendable {
    var action: String
    var method = "post"
    /// The synchronizer token; nil for a GET form (a filter), which changes nothing.
    var csrf: String?
    var fields: [FormField]
    var button: String
    var formError: String?
    var wide = false

    init(action: String, csrf: String?, button: String, wide: Bool = false, _ fields: [FormField]) {
        self.action = action
        self.csrf = csrf
        self.button = button
        self.wide = wide
        self.fields = fields
    }

    /// The form with its fields' element ids prefixed (`f-transfer-history`), for a page that has
    /// several forms with a field of the same name.
    func identified(by prefix: String) -> FormModel {
        var form = self
        form.fields = fields.map { field in
            var field = field
            let id = "f-\(prefix)-\(field.name)"
            field.describedBy = field.describedBy?.replacingOccurrences(of: field.id + "-", with: id + "-")
            field.id = id
            return field
        }
        return form
    }

    /// The form after `error`: every value sent is kept except passwords, and the message goes
    /// next to the field it concerns (`models[0]` is about `models`), or above the form when it
    /// concerns none of them.
    func refused(_ error: HearthError, sent: [String: String]) -> FormModel {
        var form = self
        let named = fields.contains { error.concerns($0.name) }
        form.formError = named ? "Please correct the field marked below." : error.message
        form.fields = fields.map { field in
            var field = field
            if field.type != "password", let value = sent[field.name] {
                field.value = value
                field.options = field.options.map {
                    FormField.Option(value: $0.value, text: $0.text, selected: $0.value == value)
                }
            }
            if error.concerns(field.name) {
                field.error = error.message
                field.describedBy = [field.hint.map { _ in "\(field.id)-hint" }, "\(field.id)-error"].compactMap { $0 }
                    .joined(separator: " ")
            }
            return field
        }
        return form
    }
}

/// Why a model's devices collect data: one purpose the maker declares, which the owner may refuse
/// unless it is essential to what the device does (Code of Practice guideline 8; EN 303 645 6-1..6-3).
public struct DataPurpose: Sendable, Equatable {
    public let id: String
    /// What the data is used for, in plain English, as the privacy notice and the consent form say it.
    public let description: String
    /// Essential purposes (the device's own function) need no consent and cannot be refused; every
    /// other purpose is off until the owner turns it on.
    public let essential: Bool

    public init(id: String, description: String, essential: Bool) {
        self.id = id
        self.description = description
        self.essential = essential
    }

    static let schema = ObjectSchema([
        FieldSchema(
            "id", .string(maxLength: 32, pattern: DataField.identifier),
            "identifier: letters, digits and '_', starting with a letter"),
        FieldSchema("description", .string(minLength: 10, maxLength: 300)),
        FieldSchema("essential", .boolean),
    ])

    init(json: JSONValue, path: String) throws {
        let o = try Self.schema.validate(json, path: path)
        try DataField.requireIdentifier(o.string("id")!, field: "\(path).id")
        self.init(id: o.string("id")!, description: o.string("description")!, essential: o.bool("essential")!)
    }

    public var json: JSONValue {
        ["id": .string(id), "description": .string(description), "essential": .bool(essential)]
    }
}

/// What a telemetry field or a command is, as personal data: the declaration every field and
/// command of a model carries (EN 303 645 5.8-3, 6-1). The privacy notice is made from these, the
/// gateway enforces the purposes the owner refused, and retention deletes what is older than
/// `retentionDays`.
public struct DataDeclaration: Sendable, Equatable {
    public enum Category: String, Sendable, CaseIterable {
        case environmental
        case presence
        case securityState = "security-state"
        case usage
        case diagnostics

        /// How the notice names it.
        public var plainEnglish: String {
            switch self {
            case .environmental: "a measurement of your home's environment"
            case .presence: "reveals when someone is at home or comes and goes"
            case .securityState: "the state of a security device in your home"
            case .usage: "how you use the device"
            case .diagnostics: "the device's own health"
            }
        }
    }

    public let category: Category
    /// The id of one of the model's purposes.
    public let purpose: String
    /// Whether it is personal data (it relates to the people in the home).
    public let personal: Bool
    /// Who receives it, as the notice names them ("you", "the maker's support team").
    public let recipients: [String]
    /// How long it is kept, in days; older data is deleted.
    public let retentionDays: Int

    /// Ten years: the longest retention a model may declare.
    public static let maximumRetentionDays = 3650

    public init(category: Category, purpose: String, personal: Bool, recipients: [String], retentionDays: Int) {
        self.category = category
        self.purpose = purpose
        self.personal = personal
        self.recipients = recipients
        self.retentionDays = retentionDays
    }

    static let schema = ObjectSchema([
        FieldSchema("category", .oneOf(Category.allCases.map(\.rawValue))),
        FieldSchema("purpose", .string(maxLength: 32), "the id of one of the model's purposes"),
        FieldSchema("personal", .boolean),
        FieldSchema("recipients", .array(of: .string(maxLength: 100), maxItems: 8)),
        FieldSchema("retentionDays", .integer(min: 1, max: maximumRetentionDays)),
    ])

    init(json: JSONValue, path: String, purposes: [DataPurpose]) throws {
        let o = try Self.schema.validate(json, path: path)
        let purpose = o.string("purpose")!
        guard purposes.contains(where: { $0.id == purpose }) else {
            throw HearthError.invalid("\(path).purpose", "'\(purpose)' is not one of the model's purposes")
        }
        let recipients = o.array("recipients").compactMap { if case .string(let s) = $0 { s } else { nil } }
        guard !recipients.isEmpty else {
            throw HearthError.invalid("\(path).recipients", "say who receives it (at least one recipient)")
        }
        self.init(
            category: Category(rawValue: o.string("category")!)!, purpose: purpose, personal: o.bool("personal")!,
            recipients: recipients, retentionDays: Int(o.number("retentionDays")!))
    }

    public var json: JSONValue {
        [
            "category": .string(category.rawValue), "purpose": .string(purpose), "personal": .bool(personal),
            "recipients": .array(recipients.map { .string($0) }), "retentionDays": .number(Double(retentionDays)),
        ]
    }
}

/// What a device may send, given the purposes its owner agreed to: fields of refused purposes are
/// withheld. The gateway refuses a reading that carries one; the device SDK leaves them out (it gets
/// this policy as a retained message on `devices/S/policy`).
public struct DevicePolicy: Sendable, Equatable {
    /// Withheld field → the purpose the owner did not agree to.
    public let withheld: [String: String]

    public init(withheld: [String: String]) { self.withheld = withheld }

    /// Everything optional is withheld until the owner agrees to its purpose.
    public init(model: ProductModel, granted: Set<String>) {
        var withheld: [String: String] = [:]
        for field in model.telemetry {
            guard let purpose = model.purpose(field.declaration?.purpose), !purpose.essential else { continue }
            if !granted.contains(purpose.id) { withheld[field.name] = purpose.id }
        }
        self.withheld = withheld
    }

    public static let none = DevicePolicy(withheld: [:])

    /// `{"withhold": {"FIELD": "PURPOSE", …}}`, the retained message's payload.
    public var json: JSONValue {
        ["withhold": .object(withheld.mapValues { .string($0) })]
    }

    public var payload: [UInt8] { Array(json.serialized()) }

    public init(payload: some Collection<UInt8>) throws {
        guard case .object(let o) = try JSONValue.parse(payload), case .object(let fields)? = o["withhold"] else {
            throw HearthError.invalid("withhold", "expected {\"withhold\": {FIELD: PURPOSE}}")
        }
        var withheld: [String: String] = [:]
        for (field, purpose) in fields {
            guard case .string(let p) = purpose else { throw HearthError.invalid("withhold", "purposes are strings") }
            withheld[field] = p
        }
        self.withheld = withheld
    }
}

import Foundation

/// What one field of a request body may hold.
public indirect enum FieldKind: Sendable {
    /// Text of `minLength…maxLength` characters; control characters are refused unless `multiline`
    /// (which allows newlines and tabs).
    case string(minLength: Int = 1, maxLength: Int, multiline: Bool = false)
    case integer(min: Int, max: Int)
    case number(min: Double, max: Double)
    case boolean
    /// One of a fixed set of strings.
    case oneOf([String])
    /// A calendar date, `YYYY-MM-DD`.
    case date
    case object(ObjectSchema)
    case array(of: FieldKind, maxItems: Int)
    /// A JSON object with free keys (≤ `maxKeys`), each checked as `values`; keys are 1…64 chars.
    case map(values: FieldKind, maxKeys: Int)
    /// A number, a boolean or a string of at most `maxLength` characters (command parameters, whose
    /// exact types the product model declares and a later check applies).
    case scalar(maxLength: Int)
}

public struct FieldSchema: Sendable {
    public let name: String
    public let kind: FieldKind
    public let required: Bool
    public let summary: String

    public init(_ name: String, _ kind: FieldKind, required: Bool = true, _ summary: String = "") {
        self.name = name
        self.kind = kind
        self.required = required
        self.summary = summary
    }
}

/// A closed JSON object: declared fields only, each checked for type, length and range.
///
/// The same schema validates requests and is published in the OpenAPI document, so the two
/// cannot drift apart.
public struct ObjectSchema: Sendable {
    public let fields: [FieldSchema]

    public init(_ fields: [FieldSchema]) { self.fields = fields }

    /// Checks `value` and returns its fields. The first problem found is thrown, naming the field
    /// by its path (`telemetry[2].max`).
    @discardableResult
    public func validate(_ value: JSONValue, path: String = "") throws -> ValidatedObject {
        guard case .object(let members) = value else {
            throw HearthError(.invalidInput, field: path.isEmpty ? nil : path, "expected a JSON object")
        }
        let known = Set(fields.map(\.name))
        if let unknown = members.keys.sorted().first(where: { !known.contains($0) }) {
            throw HearthError(.unknownField, field: Self.join(path, unknown), "'\(unknown)' is not a field of this request")
        }
        for field in fields {
            let fieldPath = Self.join(path, field.name)
            guard let member = members[field.name], member != .null else {
                if field.required { throw HearthError.invalid(fieldPath, "this field is required") }
                continue
            }
            try Self.check(member, against: field.kind, path: fieldPath)
        }
        return ValidatedObject(members: members)
    }

    static func join(_ path: String, _ name: String) -> String { path.isEmpty ? name : "\(path).\(name)" }

    static func check(_ value: JSONValue, against kind: FieldKind, path: String) throws {
        switch (kind, value) {
        case (.string(let minLength, let maxLength, let multiline), .string(let s)):
            try checkText(s, minLength: minLength, maxLength: maxLength, multiline: multiline, path: path)
        case (.integer(let min, let max), .number(let d)):
            guard d.rounded() == d else { throw HearthError.invalid(path, "expected a whole number") }
            guard d >= Double(min), d <= Double(max) else { throw HearthError.invalid(path, "must be between \(min) and \(max)") }
        case (.number(let min, let max), .number(let d)):
            guard d.isFinite, d >= min, d <= max else { throw HearthError.invalid(path, "must be between \(min) and \(max)") }
        case (.boolean, .bool):
            return
        case (.oneOf(let options), .string(let s)):
            guard options.contains(s) else { throw HearthError.invalid(path, "must be one of: \(options.joined(separator: ", "))") }
        case (.date, .string(let s)):
            guard CalendarDate(s) != nil else { throw HearthError.invalid(path, "expected a date as YYYY-MM-DD") }
        case (.object(let schema), .object):
            try schema.validate(value, path: path)
        case (.array(let element, let maxItems), .array(let items)):
            guard items.count <= maxItems else { throw HearthError.invalid(path, "at most \(maxItems) items") }
            for (i, item) in items.enumerated() { try check(item, against: element, path: "\(path)[\(i)]") }
        case (.map(let values, let maxKeys), .object(let members)):
            guard members.count <= maxKeys else { throw HearthError.invalid(path, "at most \(maxKeys) entries") }
            for (key, member) in members.sorted(by: { $0.key < $1.key }) {
                try checkText(key, minLength: 1, maxLength: 64, multiline: false, path: "\(path) key")
                try check(member, against: values, path: join(path, key))
            }
        case (.scalar, .number(let d)):
            guard d.isFinite else { throw HearthError.invalid(path, "expected a finite number") }
        case (.scalar, .bool):
            return
        case (.scalar(let maxLength), .string(let s)):
            try checkText(s, minLength: 0, maxLength: maxLength, multiline: false, path: path)
        default:
            throw HearthError.invalid(path, "expected \(kind.typeName), got \(value.typeName)")
        }
    }

    static func checkText(_ s: String, minLength: Int, maxLength: Int, multiline: Bool, path: String) throws {
        let count = s.count
        guard count >= minLength else {
            throw HearthError.invalid(path, minLength == 1 ? "must not be empty" : "must be at least \(minLength) characters")
        }
        guard count <= maxLength else { throw HearthError.invalid(path, "must be at most \(maxLength) characters") }
        let allowed: Set<Unicode.Scalar> = multiline ? ["\n", "\r", "\t"] : []
        if s.unicodeScalars.contains(where: { isControl($0) && !allowed.contains($0) }) {
            throw HearthError.invalid(path, "must not contain control characters")
        }
    }

    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator: true
        default: false
        }
    }
}

extension FieldKind {
    var typeName: String {
        switch self {
        case .string, .oneOf, .date: "a string"
        case .integer: "a whole number"
        case .number: "a number"
        case .boolean: "true or false"
        case .object, .map: "an object"
        case .array: "an array"
        case .scalar: "a number, boolean or string"
        }
    }
}

/// The members of an object that passed its schema; typed accessors for the declared fields.
public struct ValidatedObject: Sendable {
    public let members: [String: JSONValue]

    public init(members: [String: JSONValue]) { self.members = members }

    public func string(_ name: String) -> String? {
        if case .string(let s) = members[name] { return s }
        return nil
    }
    public func number(_ name: String) -> Double? {
        if case .number(let d) = members[name] { return d }
        return nil
    }
    public func bool(_ name: String) -> Bool? {
        if case .bool(let b) = members[name] { return b }
        return nil
    }
    public func array(_ name: String) -> [JSONValue] {
        if case .array(let a) = members[name] { return a }
        return []
    }
    public func object(_ name: String) -> ValidatedObject? {
        if case .object(let o) = members[name] { return ValidatedObject(members: o) }
        return nil
    }
}

/// A calendar day, as in a support period's end date.
public struct CalendarDate: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let year: Int, month: Int, day: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard text.count == 10, parts.count == 3, parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
            let y = Int(parts[0]), let m = Int(parts[1]), let d = Int(parts[2]),
            (2000...2200).contains(y), (1...12).contains(m), (1...31).contains(d)
        else { return nil }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        guard let date = calendar.date(from: DateComponents(year: y, month: m, day: d)),
            calendar.component(.day, from: date) == d
        else { return nil }
        year = y; month = m; day = d
    }

    public var description: String { String(format: "%04d-%02d-%02d", year, month, day) }
    public static func < (a: Self, b: Self) -> Bool { (a.year, a.month, a.day) < (b.year, b.month, b.day) }

    /// "31 December 2030": the support period as a person reads it (PSTI Schedule 1 ¶3).
    public var plainEnglish: String {
        let months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]
        return "\(day) \(months[month - 1]) \(year)"
    }
}

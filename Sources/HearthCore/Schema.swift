import Foundation

/// What one field of a request body may hold.
public indirect enum FieldKind: Sendable {
    /// Text of `minLength…maxLength` Unicode scalars (what JSON Schema counts); the characters
    /// ``TextRule`` forbids are refused (`multiline` allows newlines and tabs); and, when given,
    /// the whole text must match `pattern`.
    case string(minLength: Int = 1, maxLength: Int, multiline: Bool = false, pattern: TextPattern? = nil)
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
            throw HearthError(
                .unknownField, field: Self.join(path, unknown), "'\(unknown)' is not a field of this request")
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
        case (.string(let minLength, let maxLength, let multiline, let pattern), .string(let s)):
            try checkText(s, minLength: minLength, maxLength: maxLength, multiline: multiline, path: path)
            if let pattern, !pattern.matches(s) { throw HearthError.invalid(path, pattern.message) }
        case (.integer(let min, let max), .number(let d)):
            guard d.rounded() == d else { throw HearthError.invalid(path, "expected a whole number") }
            guard d >= Double(min), d <= Double(max) else {
                throw HearthError.invalid(path, "must be between \(min) and \(max)")
            }
        case (.number(let min, let max), .number(let d)):
            guard d.isFinite, d >= min, d <= max else {
                throw HearthError.invalid(path, "must be between \(min) and \(max)")
            }
        case (.boolean, .bool):
            return
        case (.oneOf(let options), .string(let s)):
            guard options.contains(s) else {
                throw HearthError.invalid(path, "must be one of: \(options.joined(separator: ", "))")
            }
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
        let count = s.unicodeScalars.count
        guard count >= minLength else {
            throw HearthError.invalid(
                path, minLength == 1 ? "must not be empty" : "must be at least \(minLength) characters")
        }
        guard count <= maxLength else { throw HearthError.invalid(path, "must be at most \(maxLength) characters") }
        if s.unicodeScalars.contains(where: { !TextRule.allows($0, multiline: multiline) }) {
            throw HearthError.invalid(path, "must not contain control characters")
        }
    }
}

/// The characters no text field takes: C0 and C1 controls and DEL; invisible format characters
/// that can hide or reorder text (soft hyphen, Arabic letter mark, zero-width, bidirectional
/// controls and isolates, word joiner and friends, the byte-order mark); line and paragraph
/// separators; private use; the specials block. (Surrogates cannot occur: the body must be valid
/// UTF-8, and a Swift string holds none; the pattern leaves them out, as a regex engine in Rust
/// cannot name them.) A multiline field also takes tab,
/// line feed and carriage return. One list: the validator checks it, and the OpenAPI document
/// states it as each text field's pattern, so a request the document allows is never refused for
/// its characters.
public enum TextRule {
    static let forbidden: [ClosedRange<UInt32>] = [
        0x00...0x1F, 0x7F...0x9F, 0xAD...0xAD, 0x61C...0x61C, 0x180E...0x180E, 0x200B...0x200F, 0x2028...0x202E,
        0x2060...0x206F,
        0xE000...0xF8FF, 0xFEFF...0xFEFF, 0xFFF0...0xFFFF,
    ]
    static let multilineAllowed: Set<UInt32> = [0x09, 0x0A, 0x0D]

    public static func allows(_ scalar: Unicode.Scalar, multiline: Bool) -> Bool {
        if multiline, multilineAllowed.contains(scalar.value) { return true }
        return !forbidden.contains { $0.contains(scalar.value) }
    }

    /// The rule as a JSON Schema (ECMA-262) pattern that Python and ICU read the same way.
    public static func pattern(multiline: Bool) -> String {
        var ranges: [ClosedRange<UInt32>] = []
        for range in forbidden {
            var start = range.lowerBound
            for cut in multilineAllowed.sorted() where multiline && range.contains(cut) {
                if start < cut { ranges.append(start...(cut - 1)) }
                start = cut + 1
            }
            if start <= range.upperBound { ranges.append(start...range.upperBound) }
        }
        func hex(_ v: UInt32) -> String { "\\u" + String(format: "%04X", v) }
        return "^[^"
            + ranges.map { $0.count == 1 ? hex($0.lowerBound) : hex($0.lowerBound) + "-" + hex($0.upperBound) }.joined()
            + "]*" + TextPattern.end
    }
}

/// A regular expression a whole text field must match, with the message for one that does not.
/// Written in the subset of syntax that JSON Schema (ECMA-262), Python and ICU read alike: the
/// OpenAPI document publishes it and the validator applies it, so both say the same.
public struct TextPattern: Sendable {
    /// "Here the text ends", written so that every reader agrees: `$` also matches before a final
    /// line break in Python and ICU (so a generator following the published pattern would send
    /// "abc\n"); a lookahead for "no character follows" means the same everywhere.
    public static let end = #"(?![\s\S])"#

    public let regex: String
    public let message: String
    /// A text that matches (the OpenAPI document's example; the tests' valid value).
    public let example: String
    nonisolated(unsafe) let compiled: NSRegularExpression?

    public init(_ regex: String, _ message: String, example: String) {
        self.regex = regex
        self.message = message
        self.example = example
        // The patterns are literals, each checked by the tests; an invalid one matches nothing
        // rather than trapping.
        compiled = try? NSRegularExpression(pattern: regex)
    }

    /// True when the pattern matches the whole text. (ICU's `$` also matches before a final line
    /// break; the match must cover everything, as in ECMA-262.) NSRegularExpression is immutable,
    /// so one is shared.
    public func matches(_ text: String) -> Bool {
        let whole = NSRange(text.startIndex..., in: text)
        return compiled?.firstMatch(in: text, range: whole)?.range == whole
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

    /// `YYYY-MM-DD` from 2000 to 2200 (the OpenAPI document's pattern, with `format: date` for
    /// the days each month has).
    public static let pattern = TextPattern(
        "^(20[0-9]{2}|21[0-9]{2}|2200)-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])" + TextPattern.end,
        "expected a date as YYYY-MM-DD, from 2000 to 2200", example: "2031-12-31"
    )

    public init?(_ text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard Self.pattern.matches(text), text.count == 10, parts.count == 3, parts[0].count == 4, parts[1].count == 2,
            parts[2].count == 2,
            let y = Int(parts[0]), let m = Int(parts[1]), let d = Int(parts[2]),
            (2000...2200).contains(y), (1...12).contains(m), (1...31).contains(d)
        else { return nil }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        guard let date = calendar.date(from: DateComponents(year: y, month: m, day: d)),
            calendar.component(.day, from: date) == d
        else { return nil }
        year = y
        month = m
        day = d
    }

    public var description: String { String(format: "%04d-%02d-%02d", year, month, day) }
    public static func < (a: Self, b: Self) -> Bool { (a.year, a.month, a.day) < (b.year, b.month, b.day) }

    /// "31 December 2030": the support period as a person reads it (PSTI Schedule 1 ¶3).
    public var plainEnglish: String {
        let months = [
            "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
            "November", "December",
        ]
        return "\(day) \(months[month - 1]) \(year)"
    }
}

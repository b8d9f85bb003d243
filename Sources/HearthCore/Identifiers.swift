import Foundation

/// Crockford base-32: no I, L, O or U, so a label is hard to misread.
public enum Base32 {
    public static let alphabet: [Character] = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    static let allowed = Set(alphabet)

    public static func random<G: RandomNumberGenerator>(count: Int, using rng: inout G) -> String {
        String((0..<count).map { _ in alphabet[Int(rng.next(upperBound: UInt32(32)))] })
    }
}

/// A device's serial number: 12 Crockford base-32 characters, random, unique per deployment.
///
/// The serial is public (it is printed on the label and is the device certificate's subject), so
/// nothing secret is ever derived from it.
public struct DeviceSerial: Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    public static let length = 12
    public let rawValue: String

    /// What ``init(_:)`` takes, as a pattern: 12 Crockford base-32 characters in either case, with
    /// dashes or spaces anywhere (as people copy a label).
    public static let pattern = TextPattern(
        "^[- ]*([0-9A-HJKMNP-TV-Za-hjkmnp-tv-z][- ]*){12}(?![\\s\\S])",
        "a serial is 12 characters of 0-9 and A-Z (no I, L, O, U)", example: "7K3M9Q2XH4TD")

    public init(_ text: String) throws {
        let normalized =
            text.unicodeScalars.allSatisfy(\.isASCII) ? text.uppercased().filter { $0 != "-" && $0 != " " } : ""
        guard normalized.count == Self.length, normalized.allSatisfy(Base32.allowed.contains) else {
            throw HearthError.invalid("serial", "a serial is \(Self.length) characters of 0-9 and A-Z (no I, L, O, U)")
        }
        rawValue = normalized
    }

    public static func random<G: RandomNumberGenerator>(using rng: inout G) -> DeviceSerial {
        // The alphabet guarantees validity.
        DeviceSerial(unchecked: Base32.random(count: length, using: &rng))
    }

    init(unchecked: String) { rawValue = unchecked }

    public var description: String { rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

    public init(from decoder: any Decoder) throws {
        try self.init(try decoder.singleValueContainer().decode(String.self))
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

/// A product model's id: a lowercase slug, 2…32 characters of a-z, 0-9 and '-', starting with a letter.
public struct ProductModelID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String

    public init(_ text: String) throws {
        let scalars = Array(text.unicodeScalars)
        guard (2...32).contains(scalars.count),
            let first = scalars.first, ("a"..."z").contains(first),
            scalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" })
        else {
            throw HearthError.invalid("id", "a model id is 2-32 characters of a-z, 0-9 and '-', starting with a letter")
        }
        rawValue = text
    }

    public var description: String { rawValue }
}

/// An account's id.
public struct AccountID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UUID
    public init(_ rawValue: UUID = UUID()) { self.rawValue = rawValue }
    public init(_ text: String) throws {
        guard let id = UUID(uuidString: text) else { throw HearthError.invalid("account", "not an account id") }
        rawValue = id
    }
    public var description: String { rawValue.uuidString.lowercased() }
}

/// An e-mail address, trimmed and lower-cased. Checked for shape, not deliverability.
public struct EmailAddress: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String

    /// What ``init(_:)`` takes: ASCII, a local part of 1 to 64 characters, an '@', and a domain
    /// of dot-separated labels; no spaces and none of `"(),:;<>@[\]` (so an address is never
    /// markup or a header injection). At most 254 characters.
    public static let pattern = TextPattern(
        #"^[!#-'*+\-./-9=?A-Z^-~]{1,64}@[!#-'*+\-/-9=?A-Z^-~]+(\.[!#-'*+\-/-9=?A-Z^-~]+)+(?![\s\S])"#,
        "not an e-mail address", example: "ann@example.com"
    )

    public init(_ text: String) throws {
        guard text.utf8.count <= 254, Self.pattern.matches(text) else {
            throw HearthError.invalid("email", "not an e-mail address")
        }
        rawValue = text.lowercased()
    }

    /// The part before the '@', a context word for the password policy.
    public var localPart: String { String(rawValue.split(separator: "@")[0]) }
    public var description: String { rawValue }
}

/// The two roles of an account. Operators run the service; owners own devices.
public enum Role: String, Sendable, Codable, CaseIterable {
    case `operator`
    case owner
}

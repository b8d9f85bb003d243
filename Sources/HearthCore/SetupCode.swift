/// The code on a device's label that proves physical possession when its owner sets it up.
///
/// Ten decimal digits (about 33 bits) drawn from a CSPRNG for each unit, never derived from the
/// serial, a counter or the time (Code of Practice guideline 1; PSTI Schedule 1 ¶1; EN 303 645
/// 5.1-1, 5.1-2). Codes a person might guess are never issued: see ``isGuessable(_:)``.
/// The server keeps only a salted slow hash of it.
public struct SetupCode: Hashable, Sendable, CustomStringConvertible {
    public static let digitCount = 10
    /// The digits, without separators.
    public let digits: String

    /// What ``init(_:)`` takes, as a pattern: ten digits, with spaces or dashes anywhere.
    public static let pattern = TextPattern(
        "^[- ]*([0-9][- ]*){10}(?![\\s\\S])", "a setup code is 10 digits, as printed on the label",
        example: "4827-1937-56")

    /// Parses what a person typed: digits, with optional spaces or dashes between them.
    public init(_ text: String) throws {
        let kept = text.filter { $0 != " " && $0 != "-" }
        guard kept.count == Self.digitCount, kept.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            throw HearthError.invalid("setupCode", "a setup code is \(Self.digitCount) digits, as printed on the label")
        }
        digits = kept
    }

    /// Draws a fresh code, skipping guessable ones. `rng` must be a CSPRNG in production
    /// (`SystemRandomNumberGenerator` reads the kernel's getrandom).
    public static func generate<G: RandomNumberGenerator>(using rng: inout G) -> SetupCode {
        while true {
            let digits = String((0..<digitCount).map { _ in Character(String(rng.next(upperBound: UInt8(10)))) })
            if !isGuessable(digits) { return SetupCode(unchecked: digits) }
        }
    }

    init(unchecked digits: String) { self.digits = digits }

    /// The label form: two groups of five, `12345-67890`.
    public var formatted: String { "\(digits.prefix(5))-\(digits.suffix(5))" }
    public var description: String { "SetupCode(redacted)" }

    /// Matter's disallowed passcodes generalised to ten digits, and more:
    /// - one digit repeated (`0000000000` … `9999999999`);
    /// - a run up or down, wrapping (`0123456789`, `9876543210`, `3456789012`);
    /// - any repeating pattern of period 5 or less (`1212121212`, `1234512345`, `1231231231`);
    /// - the Matter list itself (`12345678`, `87654321`, `00000000`…`88888888`) anywhere in the code,
    ///   padded or not, since a person who tries those would try them with two more digits.
    public static func isGuessable(_ digits: String) -> Bool {
        let d = digits.compactMap { $0.wholeNumberValue }
        guard d.count == digits.count, !d.isEmpty else { return true }
        if Set(d).count == 1 { return true }
        let steps = zip(d, d.dropFirst()).map { ($1 - $0 + 10) % 10 }
        if steps.allSatisfy({ $0 == 1 }) || steps.allSatisfy({ $0 == 9 }) { return true }
        for period in 1...5 where period < d.count {
            if d.indices.dropFirst(period).allSatisfy({ d[$0] == d[$0 - period] }) { return true }
        }
        let matter = ["12345678", "87654321"] + (0...9).map { String(repeating: String($0), count: 8) }
        return matter.contains { digits.contains($0) }
    }
}

/// Parsers for values that arrive from the network (headers, query parameters). They never trap:
/// every number is checked digit by digit with overflow-reporting arithmetic, and anything that
/// is not exactly the expected form gives nil, which the caller answers with a 4xx.
public enum NetworkInput {
    /// A whole number written in ASCII decimal digits only (no sign, no spaces, no `+`), at most
    /// `maximum`. Leading zeros are accepted; anything else, or a value over `maximum`, gives nil.
    public static func nonNegativeInteger(_ text: some StringProtocol, maximum: Int = Int.max) -> Int? {
        guard !text.utf8.isEmpty, text.utf8.count <= 40 else { return nil }
        var value = 0
        for byte in text.utf8 {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            let (times10, o1) = value.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(Int(byte - UInt8(ascii: "0")))
            guard !o1, !o2, sum <= maximum else { return nil }
            value = sum
        }
        return value
    }

    /// A JSON number that is a whole number a Double carries exactly (|n| ≤ 2^53), as an Int; nil
    /// for fractions, NaN, infinities and anything larger (where `Int(_:)` would trap).
    public static func wholeNumber(_ value: Double) -> Int? {
        guard value.isFinite, value.rounded() == value, abs(value) <= 9_007_199_254_740_992 else { return nil }
        return Int(value)
    }

    /// The offset of a resume request, `Range: bytes=N-` (RFC 9110 §14.1.2), for a resource of
    /// `size` bytes: nil unless N is a plain decimal number inside the resource. Suffix ranges
    /// (`bytes=-N`), closed ranges and several ranges are not served (416).
    public static func resumeOffset(_ header: String, size: Int) -> Int? {
        guard size > 0, header.hasPrefix("bytes="), header.hasSuffix("-") else { return nil }
        let digits = header.utf8.dropFirst(6).dropLast()
        guard let start = nonNegativeInteger(Substring(digits), maximum: size - 1) else { return nil }
        return start
    }

    /// True for exactly `application/json`, optionally with `charset=utf-8` (any case, optional
    /// spaces, the value optionally quoted). `application/jsonx`, other charsets and other
    /// parameters are refused: a body in another encoding would be misread.
    public static func isJSONMediaType(_ header: String?) -> Bool {
        isMediaType(header, "application/json")
    }

    /// True for exactly `type` (case-insensitive), optionally with `charset=utf-8`.
    public static func isMediaType(_ header: String?, _ type: String) -> Bool {
        guard let header, header.utf8.count <= 200 else { return false }
        let parts = header.lowercased().split(separator: ";", omittingEmptySubsequences: false).map {
            $0.trimmingASCIISpaces()
        }
        guard parts.first == Substring(type) else { return false }
        for parameter in parts.dropFirst() {
            let pair = parameter.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map {
                $0.trimmingASCIISpaces()
            }
            guard pair.count == 2, pair[0] == "charset", pair[1] == "utf-8" || pair[1] == "\"utf-8\"" else {
                return false
            }
        }
        return parts.count <= 2
    }
}

extension Substring {
    func trimmingASCIISpaces() -> Substring {
        var s = self
        while let first = s.first, first == " " || first == "\t" { s = s.dropFirst() }
        while let last = s.last, last == " " || last == "\t" { s = s.dropLast() }
        return s
    }
}

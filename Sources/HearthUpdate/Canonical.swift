import HearthCore

/// The canonical JSON that The Update Framework signs (OLPC canonical JSON as securesystemslib
/// encodes it): object keys sorted by code point, no insignificant whitespace, strings with only
/// `\` and `"` escaped, integers only. Anything else cannot be signed and is refused.
public enum CanonicalJSON {
    public struct Unencodable: Error, CustomStringConvertible {
        public let description: String
    }

    public static func encode(_ value: JSONValue) throws -> [UInt8] {
        var out: [UInt8] = []
        try write(value, into: &out)
        return out
    }

    static func write(_ value: JSONValue, into out: inout [UInt8]) throws {
        switch value {
        case .null: out += Array("null".utf8)
        case .bool(let b): out += Array((b ? "true" : "false").utf8)
        case .number(let d):
            guard d.isFinite, d.rounded() == d, abs(d) <= 9_007_199_254_740_991 else {
                throw Unencodable(description: "canonical JSON carries integers only, not \(d)")
            }
            out += Array(String(Int64(d)).utf8)
        case .string(let s): string(s, into: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                try write(item, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            // Python sorts str keys by code point; Swift's String < is by Unicode scalars too only
            // for canonically equivalent text, so compare the scalar sequences explicitly.
            let keys = members.keys.sorted { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) }
            for (i, key) in keys.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                string(key, into: &out)
                out.append(UInt8(ascii: ":"))
                try write(members[key]!, into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    static func string(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in s.utf8 {
            if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { out.append(UInt8(ascii: "\\")) }
            out.append(byte)
        }
        out.append(UInt8(ascii: "\""))
    }
}

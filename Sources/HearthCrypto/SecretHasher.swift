import Crypto
import CryptoExtras
import Foundation
import HearthCore

/// scrypt parameters. The cost is stored with each hash, so it can be raised later without
/// invalidating what is stored.
public struct ScryptCost: Sendable, Equatable {
    /// log2 of N, the CPU/memory cost.
    public let logN: Int
    public let r: Int
    public let p: Int

    public init(logN: Int, r: Int, p: Int) {
        self.logN = logN
        self.r = r
        self.p = p
    }

    /// N = 2^16, r = 8, p = 1: 64 MiB and roughly 0.1–0.2 s per hash on this project's machines
    /// (see BENCHMARKS.md). Used for passwords and setup codes.
    public static let standard = ScryptCost(logN: 16, r: 8, p: 1)
    /// Cheap, for tests that hash thousands of values. Never the default of any command.
    public static let testing = ScryptCost(logN: 4, r: 8, p: 1)

    var memoryBytes: Int { 128 * r * (1 << logN) + 4096 }
}

/// Hashes secrets that only need checking (passwords, setup codes) with scrypt and a per-secret
/// random salt: `scrypt$<logN>$<r>$<p>$<salt b64>$<hash b64>`.
public struct SecretHasher: Sendable {
    public let cost: ScryptCost

    public init(cost: ScryptCost = .standard) { self.cost = cost }

    public func hash(_ secret: String) throws -> String {
        let salt = Self.randomBytes(16)
        return encoded(salt: salt, value: try Self.derive(secret, salt: salt, cost: cost))
    }

    /// The stored format, at this hasher's cost.
    func encoded(salt: [UInt8], value: Data) -> String {
        "scrypt$\(cost.logN)$\(cost.r)$\(cost.p)$\(Data(salt).base64EncodedString())$\(value.base64EncodedString())"
    }

    static func randomBytes(_ count: Int) -> [UInt8] {
        var rng = SystemRandomNumberGenerator()
        return (0..<count).map { _ in rng.next() }
    }

    /// Checks `secret` against a stored hash in constant time with respect to the hash value.
    public static func verify(_ secret: String, against encoded: String) -> Bool {
        let parts = encoded.split(separator: "$").map(String.init)
        guard parts.count == 6, parts[0] == "scrypt",
            let logN = Int(parts[1]), let r = Int(parts[2]), let p = Int(parts[3]),
            (1...20).contains(logN), (1...32).contains(r), (1...4).contains(p),
            let salt = Data(base64Encoded: parts[4]), let expected = Data(base64Encoded: parts[5]),
            let derived = try? derive(secret, salt: Array(salt), cost: ScryptCost(logN: logN, r: r, p: p))
        else { return false }
        return constantTimeEqual(derived, expected)
    }

    /// A hash in the stored format that matches no input: verifying against it costs the same time
    /// as a real check (the same cost, a salt and a 32-byte value), so an unknown serial or e-mail
    /// cannot be told apart by timing. The value is random, not derived: no input's scrypt output
    /// equals it but by a 2^-256 chance, and making it costs no scrypt run (a server making one at
    /// start on the cooperative pool stalled every task for seconds in a debug build).
    public func decoy() -> String { encoded(salt: Self.randomBytes(16), value: Data(Self.randomBytes(32))) }

    static func derive(_ secret: String, salt: [UInt8], cost: ScryptCost) throws -> Data {
        let key = try KDF.Scrypt.deriveKey(
            from: Array(secret.utf8), salt: salt, outputByteCount: 32,
            rounds: 1 << cost.logN, blockSize: cost.r, parallelism: cost.p, maxMemory: cost.memoryBytes
        )
        return key.withUnsafeBytes { Data($0) }
    }
}

/// Compares two byte strings without an early exit.
public func constantTimeEqual(_ a: Data, _ b: Data) -> Bool {
    guard a.count == b.count else { return false }
    var diff: UInt8 = 0
    for (x, y) in zip(a, b) { diff |= x ^ y }
    return diff == 0
}

/// Random bearer secrets (session tokens, set-up links) and how they are stored: only the SHA-256
/// of a 256-bit random token is kept, which is enough for a value with that much entropy.
public enum SecureToken {
    public static func generate() -> String {
        SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }.base64URLEncoded
    }

    public static func storageHash(_ token: String) -> String {
        Data(SHA256.hash(data: Data(token.utf8))).hex
    }

    /// A plausible token shape: 43 base64url characters. Anything else is refused before lookup.
    public static func isWellFormed(_ token: String) -> Bool {
        token.utf8.count == 43
            && token.utf8.allSatisfy {
                ("A"..."Z").contains(Character(UnicodeScalar($0))) || ("a"..."z").contains(Character(UnicodeScalar($0)))
                    || ("0"..."9").contains(Character(UnicodeScalar($0))) || $0 == UInt8(ascii: "-")
                    || $0 == UInt8(ascii: "_")
            }
    }
}

/// An account's recovery code: 24 characters of Crockford base32 (120 random bits) in groups of
/// four, shown once; it resets a forgotten password without e-mail. Stored only as a SHA-256 hash:
/// with 120 bits of entropy a slow hash adds nothing (as for session tokens).
public enum RecoveryCode {
    static let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)

    public static func generate() -> String {
        var rng = SystemRandomNumberGenerator()
        let characters = (0..<24).map { _ in Character(UnicodeScalar(alphabet[Int(rng.next(upperBound: UInt8(32)))])) }
        return stride(from: 0, to: 24, by: 4).map { String(characters[$0..<$0 + 4]) }.joined(separator: "-")
    }

    /// The code as typed (any case, with or without dashes or spaces; O read as 0, I and L as 1)
    /// in its one canonical form, or nil when it cannot be a code.
    public static func canonical(_ typed: String) -> String? {
        guard typed.utf8.count <= 64 else { return nil }
        var out: [UInt8] = []
        for byte in typed.uppercased().utf8 where byte != UInt8(ascii: "-") && byte != UInt8(ascii: " ") {
            let mapped: UInt8 =
                switch byte {
                case UInt8(ascii: "O"): UInt8(ascii: "0")
                case UInt8(ascii: "I"), UInt8(ascii: "L"): UInt8(ascii: "1")
                default: byte
                }
            guard alphabet.contains(mapped) else { return nil }
            out.append(mapped)
        }
        return out.count == 24 ? String(decoding: out, as: UTF8.self) : nil
    }

    public static func storageHash(_ canonical: String) -> String {
        Data(SHA256.hash(data: Data("hearth-recovery|\(canonical)".utf8))).hex
    }
}

/// A keyed hash for values that must be looked up but not revealed (the e-mail index).
public struct BlindIndex: Sendable {
    let key: SymmetricKey
    public init(kek: KeyEncryptionKey, purpose: String) { key = kek.derivedKey(purpose: purpose) }
    public func index(_ value: String) -> String {
        Data(HMAC<SHA256>.authenticationCode(for: Data(value.utf8), using: key)).hex
    }
}

extension Data {
    public var base64URLEncoded: String {
        base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}

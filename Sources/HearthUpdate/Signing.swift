import Crypto
import Foundation
import HearthCore
import HearthCrypto

/// An Ed25519 public key as TUF metadata lists it, and its key id (the SHA-256 of its canonical
/// JSON, hex).
public struct TUFKey: Sendable, Equatable {
    public let publicKey: Curve25519.Signing.PublicKey

    public init(_ publicKey: Curve25519.Signing.PublicKey) { self.publicKey = publicKey }

    public static func == (a: TUFKey, b: TUFKey) -> Bool {
        a.publicKey.rawRepresentation == b.publicKey.rawRepresentation
    }

    public var json: JSONValue {
        [
            "keytype": "ed25519", "scheme": "ed25519",
            "keyval": ["public": .string(Data(publicKey.rawRepresentation).hex)],
        ]
    }

    public var keyID: String {
        // The key's JSON is all strings: it always encodes.
        Data(SHA256.hash(data: (try? CanonicalJSON.encode(json)) ?? [])).hex
    }

    /// Reads a key from metadata; only Ed25519 is accepted.
    public init(json: JSONValue) throws {
        guard case .object(let o) = json, o["keytype"] == "ed25519", o["scheme"] == "ed25519",
            case .object(let keyval)? = o["keyval"],
            case .string(let hex)? = keyval["public"], let raw = Data(hexString: hex),
            let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw)
        else {
            throw HearthError.invalid(
                "keys", "only Ed25519 keys ({keytype, scheme: ed25519, keyval.public: hex}) are accepted")
        }
        publicKey = key
    }
}

/// A signed TUF document: `{"signed": {...}, "signatures": [{"keyid", "sig"}]}`.
public struct SignedMetadata: Sendable, Equatable {
    public var signed: JSONValue
    /// Key id → hex signature over the canonical JSON of `signed`.
    public var signatures: [String: String]

    public init(signed: JSONValue, signatures: [String: String] = [:]) {
        self.signed = signed
        self.signatures = signatures
    }

    /// Adds (or replaces) the signature of `key`.
    public mutating func sign(with key: Curve25519.Signing.PrivateKey) throws {
        let signature = try key.signature(for: CanonicalJSON.encode(signed))
        signatures[TUFKey(key.publicKey).keyID] = Data(signature).hex
    }

    /// How many of `keys` (the role's keys, by key id) signed `signed` validly. Unknown key ids and
    /// bad signatures do not count; a key counts once.
    public func validSignatures(by keys: [String: TUFKey]) -> Int {
        guard let bytes = try? CanonicalJSON.encode(signed) else { return 0 }
        return signatures.filter { keyID, hex in
            guard let key = keys[keyID], let sig = Data(hexString: hex) else { return false }
            return key.publicKey.isValidSignature(sig, for: bytes)
        }.count
    }

    public var json: JSONValue {
        [
            "signed": signed,
            "signatures": .array(
                signatures.keys.sorted().map { ["keyid": .string($0), "sig": .string(signatures[$0]!)] }),
        ]
    }

    public init(json: JSONValue) throws {
        guard case .object(let o) = json, let signed = o["signed"], case .object = signed,
            case .array(let sigs)? = o["signatures"]
        else {
            throw HearthError.invalid("metadata", "expected {\"signed\": {...}, \"signatures\": [...]}")
        }
        var signatures: [String: String] = [:]
        for s in sigs {
            guard case .object(let e) = s, case .string(let id)? = e["keyid"], case .string(let sig)? = e["sig"] else {
                throw HearthError.invalid("signatures", "each signature is {\"keyid\", \"sig\"}")
            }
            guard signatures.updateValue(sig, forKey: id) == nil else {
                throw HearthError.invalid("signatures", "a key id signs once")
            }
        }
        self.signed = signed
        self.signatures = signatures
    }
}

extension Data {
    /// Lower-case hex, as TUF writes key values and signatures.
    public init?(hexString: String) {
        guard hexString.count % 2 == 0, hexString.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) })
        else { return nil }
        var bytes: [UInt8] = []
        var index = hexString.startIndex
        while index < hexString.endIndex {
            let next = hexString.index(index, offsetBy: 2)
            bytes.append(UInt8(hexString[index..<next], radix: 16)!)
            index = next
        }
        self.init(bytes)
    }
}

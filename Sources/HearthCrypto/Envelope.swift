import Crypto
import Foundation
import HearthCore

/// The key-encryption key (KEK): 256 bits that wrap every data key. It lives outside the database —
/// in the data folder (0600) or at a path the operator gives — so the database file alone reveals no
/// secret (Code of Practice guideline 4; EN 303 645 5.4-1).
public struct KeyEncryptionKey: Sendable {
    let key: SymmetricKey
    /// A short public fingerprint, stored beside wrapped keys so a wrong KEK is reported clearly.
    public let fingerprint: String

    public init(rawBytes: some ContiguousBytes) throws {
        let key = SymmetricKey(data: rawBytes)
        guard key.bitCount == 256 else { throw HearthError(.integrity, "a key-encryption key is exactly 32 bytes") }
        self.init(checked: key)
    }

    private init(checked key: SymmetricKey) {
        self.key = key
        fingerprint =
            Data(SHA256.hash(data: Data("hearth-kek-id".utf8) + key.withUnsafeBytes { Data($0) }).prefix(4)).hex
    }

    public static func generate() -> (kek: KeyEncryptionKey, rawBytes: Data) {
        let key = SymmetricKey(size: .bits256)
        return (KeyEncryptionKey(checked: key), key.withUnsafeBytes { Data($0) })
    }

    /// A key for another purpose (the audit MAC, the e-mail index), derived with HKDF so that the
    /// KEK itself is used only to wrap.
    public func derivedKey(purpose: String) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: key, info: Data("hearth/\(purpose)/v1".utf8), outputByteCount: 32)
    }
}

/// Envelope encryption: each secret gets its own random data key (AES-256-GCM), and the data key is
/// stored wrapped by the KEK (AES-256-GCM). The context string is bound as associated data, so a
/// sealed value cannot be moved to another row or column unnoticed. Deleting the wrapped data key
/// crypto-shreds the value.
///
/// Layout: `"HE1"` ‖ kek fingerprint (8 hex) ‖ wrapped key (60 bytes) ‖ sealed value.
public enum Envelope {
    static let magic = Data("HE1".utf8)

    public static func seal(_ plaintext: some DataProtocol, context: String, kek: KeyEncryptionKey) throws -> Data {
        let dataKey = SymmetricKey(size: .bits256)
        let aad = Data(context.utf8)
        let wrapped = try AES.GCM.seal(dataKey.withUnsafeBytes { Data($0) }, using: kek.key, authenticating: aad)
            .combined!
        let sealed = try AES.GCM.seal(plaintext, using: dataKey, authenticating: aad).combined!
        return magic + Data(kek.fingerprint.utf8) + wrapped + sealed
    }

    public static func open(_ envelope: Data, context: String, kek: KeyEncryptionKey) throws -> Data {
        let bytes = Data(envelope)
        let headerLength = magic.count + 8
        guard bytes.count > headerLength + 60 + 28, bytes.prefix(magic.count) == magic else {
            throw HearthError(.integrity, "not a Hearth envelope")
        }
        let fingerprint = String(decoding: bytes.dropFirst(magic.count).prefix(8), as: UTF8.self)
        guard fingerprint == kek.fingerprint else {
            throw HearthError(
                .integrity, "sealed with another key-encryption key (\(fingerprint), this one is \(kek.fingerprint))")
        }
        let aad = Data(context.utf8)
        do {
            let wrapped = try AES.GCM.SealedBox(combined: bytes.dropFirst(headerLength).prefix(60))
            let dataKey = SymmetricKey(data: try AES.GCM.open(wrapped, using: kek.key, authenticating: aad))
            let sealed = try AES.GCM.SealedBox(combined: bytes.dropFirst(headerLength + 60))
            return try AES.GCM.open(sealed, using: dataKey, authenticating: aad)
        } catch {
            throw HearthError(.integrity, "the sealed value was altered or belongs to another context")
        }
    }
}

extension Data {
    public var hex: String { map { String(format: "%02x", $0) }.joined() }
}

/// A data key for many values of one owner (their readings): AES-256-GCM, stored only wrapped by
/// the KEK (in an ``Envelope`` bound to the key's id). Destroying the wrapped key crypto-shreds
/// every value sealed under it, wherever copies of them went.
public struct DataKey: Sendable {
    public let id: String
    let key: SymmetricKey

    /// A new random key with a random id.
    public init() {
        id = UUID().uuidString.lowercased()
        key = SymmetricKey(size: .bits256)
    }

    /// Unwraps a stored key; throws if it was altered, moved to another id or wrapped by another KEK.
    public init(id: String, wrapped: Data, kek: KeyEncryptionKey) throws {
        let raw = try Envelope.open(wrapped, context: "data-key:\(id)", kek: kek)
        guard raw.count == 32 else { throw HearthError(.integrity, "a data key is exactly 32 bytes") }
        self.id = id
        key = SymmetricKey(data: raw)
    }

    /// The key wrapped by the KEK, to store.
    public func wrapped(by kek: KeyEncryptionKey) throws -> Data {
        try key.withUnsafeBytes { try Envelope.seal(Data($0), context: "data-key:\(id)", kek: kek) }
    }

    /// Nonce ‖ ciphertext ‖ tag, with `context` as associated data.
    public func seal(_ plaintext: [UInt8], context: [UInt8]) throws -> [UInt8] {
        Array(try AES.GCM.seal(plaintext, using: key, authenticating: context).combined!)
    }

    public func open(_ sealed: [UInt8], context: [UInt8]) throws -> [UInt8] {
        do {
            return Array(try AES.GCM.open(AES.GCM.SealedBox(combined: sealed), using: key, authenticating: context))
        } catch {
            throw HearthError(.integrity, "a sealed value was altered or belongs to another context")
        }
    }

    /// The raw key, for tests that prove it is gone from disk.
    public var rawBytesForTesting: [UInt8] { key.withUnsafeBytes { Array($0) } }
}

import Crypto
import Foundation
import HearthCore
import NIOSSL
import SwiftASN1
import X509

/// A device-side error with a message for the device's log or console. Never contains key material.
public struct DeviceError: Error, Sendable, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The TLS identity a device presents to the gateway.
public struct TLSIdentity: Sendable {
    public let certificateChain: [NIOSSLCertificate]
    /// A hardware store returns a `NIOSSLPrivateKey(customPrivateKey:)` that signs inside the chip.
    public let privateKey: NIOSSLPrivateKey

    public init(certificateChain: [NIOSSLCertificate], privateKey: NIOSSLPrivateKey) {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
    }
}

/// Where a device keeps its identity (Code of Practice guideline 4; ETSI EN 303 645 5.4-1). The
/// protocol lets a TPM or secure element stand in for the file store without touching the rest of
/// the SDK.
public protocol SecureKeyStore: Sendable {
    /// The certificate chain and private key for the mutual-TLS handshake.
    func identity() throws -> TLSIdentity
}

/// The key that seals the device's private key at rest. On production hardware it comes from the
/// SoC's hardware-unique key (fuses, TrustZone, a TPM's storage key); the stand-ins here bind the
/// sealed key to this machine or to a separate secret file, so a copy of the key file alone is
/// useless.
public struct DeviceUniqueKey: Sendable {
    let key: SymmetricKey

    /// At least 32 bytes of secret material.
    public init(secret: [UInt8]) throws {
        guard secret.count >= 32 else { throw DeviceError("a device-unique key needs at least 32 bytes of secret") }
        key = SymmetricKey(data: secret)
    }

    /// Derived from systemd's machine id (`/etc/machine-id`): the sealed key opens only on this
    /// machine. A stand-in for a hardware-unique key on Linux boards without one.
    public static func machineID(path: String = "/etc/machine-id") throws -> DeviceUniqueKey {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
            text.trimmingCharacters(in: .whitespacesAndNewlines).count >= 32
        else {
            throw DeviceError("no machine id at \(path); give the device a hardware key file instead (--hardware-key)")
        }
        return try DeviceUniqueKey(
            secret: Array(
                SHA256.hash(
                    data: Data(("hearth machine key " + text.trimmingCharacters(in: .whitespacesAndNewlines)).utf8))))
    }

    /// A simulated hardware-unique key: 32 random bytes in `path` (created 0600 on first use; a file
    /// readable by others is refused). For simulators, tests and the demo.
    public static func simulated(file path: String) throws -> DeviceUniqueKey {
        if !FileManager.default.fileExists(atPath: path) {
            var bytes = [UInt8](repeating: 0, count: 32)
            var rng = SystemRandomNumberGenerator()
            for i in bytes.indices { bytes[i] = rng.next() }
            try OfflineQueue.writeFile(path, bytes, flags: O_WRONLY | O_CREAT | O_EXCL)
        }
        try FileKeyStore.requirePrivate(path)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DeviceError("cannot read the hardware key \(path)")
        }
        return try DeviceUniqueKey(secret: [UInt8](data))
    }

    /// The key that seals the device's key file.
    var sealingKey: SymmetricKey {
        HKDF<SHA256>.deriveKey(
            inputKeyMaterial: key, salt: Data("hearth device key file".utf8), info: Data("v1".utf8), outputByteCount: 32
        )
    }
}

/// The file implementation of ``SecureKeyStore``, in the device's folder:
/// - `device.key.sealed` (0600): the P-256 private key, AES-256-GCM sealed with a key derived from
///   the ``DeviceUniqueKey`` (a device can make its key before the factory gives it a serial);
/// - `device.pem`: the device certificate and the device CA.
///
/// The store refuses to open a key file that group or others can read or write, or that another
/// user owns. It never logs or prints the key.
public struct FileKeyStore: SecureKeyStore {
    public let folder: URL
    let uniqueKey: DeviceUniqueKey

    public var sealedKeyPath: String { folder.appendingPathComponent("device.key.sealed").path }
    public var factoryKeyPath: String { folder.appendingPathComponent("device.key.pem").path }
    public var certificatePath: String { folder.appendingPathComponent("device.pem").path }

    static let associatedData = Data("hearth device key".utf8)

    public init(folder: URL, uniqueKey: DeviceUniqueKey) {
        self.folder = folder
        self.uniqueKey = uniqueKey
    }

    /// First boot after factory provisioning: seals the plaintext `device.key.pem` the factory
    /// wrote, then overwrites and deletes it. Returns true if it did.
    @discardableResult
    public func sealFactoryKey() throws -> Bool {
        guard FileManager.default.fileExists(atPath: factoryKeyPath) else { return false }
        try Self.requirePrivate(factoryKeyPath)
        guard let pem = FileManager.default.contents(atPath: factoryKeyPath),
            let text = String(data: pem, encoding: .utf8)
        else {
            throw DeviceError("cannot read the factory key")
        }
        let key: P256.Signing.PrivateKey
        do { key = try P256.Signing.PrivateKey(pemRepresentation: text) } catch {
            throw DeviceError("the factory key is not a P-256 private key")
        }
        try seal(key)
        try OfflineQueue.writeFile(factoryKeyPath, [UInt8](repeating: 0, count: pem.count), flags: O_WRONLY)
        try FileManager.default.removeItem(atPath: factoryKeyPath)
        return true
    }

    /// First boot without a factory key: makes a key pair inside the device and returns a PEM
    /// certificate signing request for `hearth factory sign-csr` (the private key never leaves; the
    /// factory assigns the serial and returns the certificate in a bundle).
    public func generateKey() throws -> String {
        guard !FileManager.default.fileExists(atPath: sealedKeyPath) else {
            throw DeviceError("the device already has a key; refusing to replace it")
        }
        let key = P256.Signing.PrivateKey()
        try seal(key)
        let csr = try CertificateSigningRequest(
            version: .v1, subject: try DistinguishedName { CommonName("Hearth device awaiting a serial") },
            privateKey: Certificate.PrivateKey(key), attributes: CertificateSigningRequest.Attributes(),
            signatureAlgorithm: .ecdsaWithSHA256
        )
        return try csr.serializeAsPEM().pemString
    }

    public func identity() throws -> TLSIdentity {
        let key = try privateKey()
        guard let chain = try? NIOSSLCertificate.fromPEMFile(certificatePath), !chain.isEmpty else {
            throw DeviceError("no device certificate at \(certificatePath)")
        }
        return TLSIdentity(
            certificateChain: chain,
            privateKey: try NIOSSLPrivateKey(bytes: Array(key.pemRepresentation.utf8), format: .pem))
    }

    /// Opens the sealed key, after checking the file's owner and mode.
    func privateKey() throws -> P256.Signing.PrivateKey {
        guard FileManager.default.fileExists(atPath: sealedKeyPath) else {
            throw DeviceError("no sealed device key at \(sealedKeyPath)")
        }
        try Self.requirePrivate(sealedKeyPath)
        guard let sealed = FileManager.default.contents(atPath: sealedKeyPath) else {
            throw DeviceError("cannot read \(sealedKeyPath)")
        }
        do {
            let box = try AES.GCM.SealedBox(combined: sealed)
            let raw = try AES.GCM.open(box, using: uniqueKey.sealingKey, authenticating: Self.associatedData)
            return try P256.Signing.PrivateKey(rawRepresentation: raw)
        } catch {
            throw DeviceError(
                "the sealed device key does not open with this device's unique key (copied from another device, or damaged)"
            )
        }
    }

    func seal(_ key: P256.Signing.PrivateKey) throws {
        let box = try AES.GCM.seal(
            key.rawRepresentation, using: uniqueKey.sealingKey, authenticating: Self.associatedData)
        guard let combined = box.combined else { throw DeviceError("sealing failed") }
        let temporary = sealedKeyPath + ".tmp"
        try OfflineQueue.writeFile(temporary, [UInt8](combined), flags: O_WRONLY | O_CREAT | O_TRUNC)
        guard rename(temporary, sealedKeyPath) == 0 else { throw DeviceError("cannot write \(sealedKeyPath)") }
    }

    /// A secret file must belong to this user and be closed to group and others (0600 or 0400).
    static func requirePrivate(_ path: String) throws {
        var info = stat()
        guard stat(path, &info) == 0 else { throw DeviceError("cannot read \(path)") }
        guard info.st_uid == geteuid() else { throw DeviceError("\(path) belongs to another user; refusing to use it") }
        guard info.st_mode & 0o077 == 0 else {
            throw DeviceError(
                "\(path) is readable or writable by others (mode \(String(info.st_mode & 0o777, radix: 8))); refusing to start. Run: chmod 600 \(path)"
            )
        }
    }
}

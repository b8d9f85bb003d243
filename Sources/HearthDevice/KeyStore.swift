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

/// A key store that can replace the device's key (re-keying, EN 303 645 5.1-4): the new key is
/// made and kept beside the current one until its certificate arrives, then both are switched in
/// one step that survives a power cut.
public protocol RenewableKeyStore: SecureKeyStore {
    /// A PEM signing request for the new key (made now, or the one made before and not yet
    /// certified), with the device's serial as its subject.
    func renewalRequest(serial: DeviceSerial) throws -> String
    /// True while a new key waits for its certificate.
    var renewalPending: Bool { get }
    /// Installs the certificate chain (PEM, leaf first) for the new key and makes the new key and
    /// certificate the device's identity. Throws, changing nothing, if the leaf is not for the new
    /// key.
    func installRenewedCertificate(_ pem: String) throws
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
    /// Re-keying: the new key until its certificate is installed, and that certificate while the
    /// switch is under way.
    public var renewalKeyPath: String { folder.appendingPathComponent("device.key.next.sealed").path }
    var renewalCertificatePath: String { folder.appendingPathComponent("device.pem.next").path }

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
        try finishRenewal()
        let key = try privateKey()
        guard let chain = try? NIOSSLCertificate.fromPEMFile(certificatePath), !chain.isEmpty else {
            throw DeviceError("no device certificate at \(certificatePath)")
        }
        return TLSIdentity(
            certificateChain: chain,
            privateKey: try NIOSSLPrivateKey(bytes: Array(key.pemRepresentation.utf8), format: .pem))
    }

    /// Opens the sealed key, after checking the file's owner and mode.
    func privateKey(_ path: String? = nil) throws -> P256.Signing.PrivateKey {
        let path = path ?? sealedKeyPath
        guard FileManager.default.fileExists(atPath: path) else {
            throw DeviceError("no sealed device key at \(path)")
        }
        try Self.requirePrivate(path)
        guard let sealed = FileManager.default.contents(atPath: path) else {
            throw DeviceError("cannot read \(path)")
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

    func seal(_ key: P256.Signing.PrivateKey, to path: String? = nil) throws {
        let path = path ?? sealedKeyPath
        let box = try AES.GCM.seal(
            key.rawRepresentation, using: uniqueKey.sealingKey, authenticating: Self.associatedData)
        guard let combined = box.combined else { throw DeviceError("sealing failed") }
        try Self.replace(path, with: [UInt8](combined))
    }

    /// Writes `bytes` to a temporary file (0600, synced) and renames it over `path`.
    static func replace(_ path: String, with bytes: [UInt8]) throws {
        let temporary = path + ".tmp"
        try OfflineQueue.writeFile(temporary, bytes, flags: O_WRONLY | O_CREAT | O_TRUNC)
        guard rename(temporary, path) == 0 else { throw DeviceError("cannot write \(path)") }
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

extension FileKeyStore: RenewableKeyStore {
    public var renewalPending: Bool { FileManager.default.fileExists(atPath: renewalKeyPath) }

    public func renewalRequest(serial: DeviceSerial) throws -> String {
        let key: P256.Signing.PrivateKey
        if renewalPending {
            key = try privateKey(renewalKeyPath)
        } else {
            key = P256.Signing.PrivateKey()
            try seal(key, to: renewalKeyPath)
        }
        let csr = try CertificateSigningRequest(
            version: .v1, subject: try DistinguishedName { CommonName(serial.rawValue) },
            privateKey: Certificate.PrivateKey(key), attributes: CertificateSigningRequest.Attributes(),
            signatureAlgorithm: .ecdsaWithSHA256
        )
        return try csr.serializeAsPEM().pemString
    }

    public func installRenewedCertificate(_ pem: String) throws {
        guard renewalPending else { throw DeviceError("no new key waits for a certificate") }
        let key = try privateKey(renewalKeyPath)
        guard let leaf = try? NIOSSLCertificate.fromPEMBytes(Array(pem.utf8)).first,
            let der = try? leaf.toDERBytes(), let certificate = try? Certificate(derEncoded: der),
            certificate.publicKey == Certificate.PublicKey(key.publicKey)
        else { throw DeviceError("the certificate received is not for the device's new key") }
        try Self.replace(renewalCertificatePath, with: Array(pem.utf8))
        try finishRenewal()
    }

    /// Completes a switch a power cut interrupted: once the new certificate is on disk, the new
    /// key and then the certificate are renamed into place (each rename atomic; run again, it
    /// picks up where it stopped).
    func finishRenewal() throws {
        guard FileManager.default.fileExists(atPath: renewalCertificatePath) else { return }
        if renewalPending, rename(renewalKeyPath, sealedKeyPath) != 0 {
            throw DeviceError("cannot move the new key into place")
        }
        guard rename(renewalCertificatePath, certificatePath) == 0 else {
            throw DeviceError("cannot move the new certificate into place")
        }
    }
}

import Crypto
import Foundation
import HearthCore
import HearthCrypto
import SwiftASN1
import X509

/// The data folder: everything a deployment keeps on disk.
///
/// ```
/// DATA/                  0700
///   kek.key              0600  32 random bytes: the key-encryption key (unless --kek-file)
///   root-ca.pem                deployment root CA certificate (trust anchor for HTTPS clients)
///   root-ca.key.sealed   0600  its key, envelope-encrypted with the KEK
///   device-ca.pem              device CA certificate (trust anchor for device identities)
///   device-ca.key.sealed 0600
///   server.pem                 HTTPS server certificate, issued by the root CA
///   server.key.sealed    0600
///   hearth.sqlite        0600  the database (WAL)
///   telemetry.sqlite     0600  device readings (WAL, group-committed)
///   broker.sqlite        0600  persistent MQTT sessions and retained messages
///   targets/             0700  firmware images of the update repository (SHA256.NAME)
///   serving.json         0600  the running server's listeners and settings (for `hearth assess`)
///   maker-statements.json      what only the maker can say, for `hearth assess` (optional)
/// ```
/// Opening refuses a folder or key file that others can read (Code of Practice guideline 4).
public struct DataFolder: Sendable {
    public let url: URL
    public let kek: KeyEncryptionKey
    public let rootCA: CertificateAuthority
    public let deviceCA: CertificateAuthority
    public let serverCertificate: Certificate
    public let serverKey: P256.Signing.PrivateKey
    /// True when this call created the folder's keys.
    public let created: Bool
    /// True when the KEK is read from a file outside the folder (`--kek-file`).
    public let kekOutside: Bool

    public var databasePath: String { url.appendingPathComponent("hearth.sqlite").path }
    public var telemetryPath: String { url.appendingPathComponent("telemetry.sqlite").path }
    public var brokerStatePath: String { url.appendingPathComponent("broker.sqlite").path }
    public var rootCAPath: String { url.appendingPathComponent(Self.rootCAFile).path }
    private static let rootCAFile = "root-ca.pem"

    /// Whether `path` holds a deployment (its root CA exists), without creating anything there.
    public static func holdsDeployment(_ path: String) -> Bool {
        FileManager.default.fileExists(atPath: URL(fileURLWithPath: path).appendingPathComponent(rootCAFile).path)
    }
    public var deviceCAPath: String { url.appendingPathComponent("device-ca.pem").path }
    /// Firmware images of the update repository, named `SHA256.NAME`.
    public var targetsDirectory: URL { url.appendingPathComponent("targets") }

    /// Opens the folder at `path`, creating it and its keys on first use.
    /// - Parameters:
    ///   - kekFile: the KEK's path, if the operator keeps it outside the data folder (recommended:
    ///     then a copy of the data folder alone reveals nothing). It must exist and be 0600 or stricter.
    ///   - hostnames: names and addresses the server certificate must cover; it is re-issued when
    /// The names the server certificate covers, and so the Host names answered, unless
    /// `--hostname` says otherwise.
    public static let defaultHostnames = ["localhost", "127.0.0.1", "::1"]

    ///     they change or it is within 30 days of expiry.
    public static func open(
        path: String, kekFile: String? = nil, hostnames: [String] = defaultHostnames, now: Date = Date()
    ) throws -> DataFolder {
        // Everything this process creates from here on (database, WAL, bundles) is private.
        umask(0o077)
        let fm = FileManager.default
        let url = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        let existed = fm.fileExists(atPath: path, isDirectory: &isDirectory)
        if existed {
            guard isDirectory.boolValue else {
                throw HearthError(.invalidInput, field: "data", "\(path) is not a folder")
            }
            try requirePrivate(path, maxMode: 0o700, what: "the data folder")
        } else {
            try fm.createDirectory(at: url, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            chmod(path, 0o700)
        }

        let kek = try loadOrCreateKEK(folder: url, kekFile: kekFile)
        let rootKeyFile = url.appendingPathComponent("root-ca.key.sealed")
        let created = !fm.fileExists(atPath: rootKeyFile.path)
        let rootCA = try loadOrCreateCA(
            folder: url, name: "root-ca", commonName: "Hearth Deployment Root CA", kek: kek, now: now)
        let deviceCA = try loadOrCreateCA(
            folder: url, name: "device-ca", commonName: "Hearth Device CA", kek: kek, now: now)
        let (serverCertificate, serverKey) = try loadOrIssueServerCertificate(
            folder: url, rootCA: rootCA, hostnames: hostnames, kek: kek, now: now)
        return DataFolder(
            url: url, kek: kek, rootCA: rootCA, deviceCA: deviceCA, serverCertificate: serverCertificate,
            serverKey: serverKey, created: created, kekOutside: kekFile != nil)
    }

    static func loadOrCreateKEK(folder: URL, kekFile: String?) throws -> KeyEncryptionKey {
        if let kekFile {
            guard FileManager.default.fileExists(atPath: kekFile) else {
                throw HearthError(
                    .invalidInput, field: "kek-file",
                    "\(kekFile) does not exist; create it with: head -c 32 /dev/urandom > \(kekFile) && chmod 600 \(kekFile)"
                )
            }
            try requirePrivate(kekFile, maxMode: 0o600, what: "the key-encryption key")
            return try KeyEncryptionKey(rawBytes: try Data(contentsOf: URL(fileURLWithPath: kekFile)))
        }
        let file = folder.appendingPathComponent("kek.key")
        if FileManager.default.fileExists(atPath: file.path) {
            try requirePrivate(file.path, maxMode: 0o600, what: "the key-encryption key")
            return try KeyEncryptionKey(rawBytes: try Data(contentsOf: file))
        }
        let (kek, raw) = KeyEncryptionKey.generate()
        try writePrivate(raw, to: file)
        return kek
    }

    static func loadOrCreateCA(folder: URL, name: String, commonName: String, kek: KeyEncryptionKey, now: Date) throws
        -> CertificateAuthority
    {
        let certFile = folder.appendingPathComponent("\(name).pem")
        let keyFile = folder.appendingPathComponent("\(name).key.sealed")
        if FileManager.default.fileExists(atPath: keyFile.path) {
            try requirePrivate(keyFile.path, maxMode: 0o600, what: "the \(name) key")
            let key = try P256.Signing.PrivateKey.unsealed(
                try Data(contentsOf: keyFile), context: "file:\(name).key", kek: kek)
            let certificate = try Certificate(pemEncoded: try String(contentsOf: certFile, encoding: .utf8))
            return try CertificateAuthority(certificate: certificate, privateKey: key)
        }
        let ca = try CertificateAuthority.create(commonName: commonName, now: now)
        try writePrivate(try ca.privateKey.sealed(context: "file:\(name).key", kek: kek), to: keyFile)
        try Data(try ca.certificate.pem().utf8).write(to: certFile, options: .atomic)
        return ca
    }

    static func loadOrIssueServerCertificate(
        folder: URL, rootCA: CertificateAuthority, hostnames: [String], kek: KeyEncryptionKey, now: Date
    ) throws -> (Certificate, P256.Signing.PrivateKey) {
        let certFile = folder.appendingPathComponent("server.pem")
        let keyFile = folder.appendingPathComponent("server.key.sealed")
        if FileManager.default.fileExists(atPath: keyFile.path), FileManager.default.fileExists(atPath: certFile.path) {
            try requirePrivate(keyFile.path, maxMode: 0o600, what: "the server key")
            let key = try P256.Signing.PrivateKey.unsealed(
                try Data(contentsOf: keyFile), context: "file:server.key", kek: kek)
            let certificate = try Certificate(pemEncoded: try String(contentsOf: certFile, encoding: .utf8))
            let fresh = certificate.notValidAfter > now.addingTimeInterval(30 * 86_400)
            if fresh, Set(certificate.subjectAlternativeHostnames) == Set(hostnames),
                certificate.publicKey == Certificate.PublicKey(key.publicKey),
                certificate.issuer == rootCA.certificate.subject
            {
                return (certificate, key)
            }
        }
        let key = P256.Signing.PrivateKey()
        let certificate = try rootCA.issueServerCertificate(publicKey: key.publicKey, hostnames: hostnames, now: now)
        try writePrivate(try key.sealed(context: "file:server.key", kek: kek), to: keyFile)
        try Data(try certificate.pem().utf8).write(to: certFile, options: .atomic)
        return (certificate, key)
    }

    /// Writes a file that only the owner can read, creating it with that mode (no window in which
    /// it is readable by others).
    public static func writePrivate(_ data: Data, to url: URL) throws {
        let fd = Foundation.open(url.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw HearthError(.internal, "cannot create \(url.path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        fchmod(fd, 0o600)
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == data.count, fsync(fd) == 0 else { throw HearthError(.internal, "cannot write \(url.path)") }
    }

    /// Refuses a path whose mode grants more than `maxMode` (e.g. group- or world-readable keys).
    public static func requirePrivate(_ path: String, maxMode: mode_t, what: String) throws {
        var st = stat()
        guard stat(path, &st) == 0 else { throw HearthError(.internal, "cannot read \(path)") }
        let mode = st.st_mode & 0o777
        if mode & ~maxMode != 0 {
            throw HearthError(
                .integrity, field: nil,
                "\(what) at \(path) has mode \(String(mode, radix: 8)); it must not be readable by others (chmod \(String(maxMode, radix: 8)) \(path))"
            )
        }
    }
}

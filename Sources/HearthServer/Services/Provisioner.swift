import Crypto
import Foundation
import HearthCore
import HearthCrypto
import HearthStorage
import NIOPosix
import X509

/// What a factory line flashes into one unit.
public struct ProvisionedUnit: Sendable {
    public let serial: DeviceSerial
    public let setupCode: SetupCode
    public let certificate: Certificate
    /// Nil when the device made its own key (CSR path): then the key never left the device.
    public let privateKey: P256.Signing.PrivateKey?
    public let label: DeviceLabel
}

/// Factory provisioning: a fresh identity per unit — serial, key pair, certificate from the device
/// CA, setup code from the CSPRNG — registered with the server and written as a bundle per unit
/// (Code of Practice guideline 1; EN 303 645 5.1-1, 5.1-2; PSTI Schedule 1 ¶1).
///
/// Bundle layout, `OUT/<serial>/` (0700):
/// - `device.key.pem` (0600): the device's private key (absent on the CSR path)
/// - `device.pem`: the device certificate followed by the device CA certificate
/// - `server-root-ca.pem`: the anchor for verifying the server
/// - `label.txt`: what is printed on the label
/// - `bundle.json`: serial, model, setup code and server URL for the firmware's first boot
/// - `firmware/` (when the model has a release): the update repository's root.json (the device's
///   trust anchor for updates and verified boot), the signed targets.json, and the newest image
public struct Provisioner: Sendable {
    /// The image and trust anchor flashed into each unit; nil for a model without releases.
    public var firmware: FactoryFirmware?
    public let store: any HearthStore
    public let deviceCA: CertificateAuthority
    public let rootCA: CertificateAuthority
    public let hasher: SecretHasher
    public let publicURL: String
    public let time: any TimeSource

    public init(
        store: any HearthStore, deviceCA: CertificateAuthority, rootCA: CertificateAuthority,
        hashCost: ScryptCost = .standard, publicURL: String, time: any TimeSource = SystemTimeSource()
    ) {
        self.store = store
        self.deviceCA = deviceCA
        self.rootCA = rootCA
        hasher = SecretHasher(cost: hashCost)
        self.publicURL = publicURL
        self.time = time
    }

    /// Provisions `count` units of `modelID`, writing bundles under `outDirectory` and registering
    /// the units in batches. `progress` is called with the number done so far.
    public func provision(
        modelID: ProductModelID, count: Int, outDirectory: URL?, batchSize: Int = 200,
        progress: @Sendable (Int) -> Void = { _ in }
    ) async throws -> [ProvisionedUnit] {
        guard (1...1_000_000).contains(count) else { throw HearthError.invalid("count", "between 1 and 1,000,000") }
        guard let model = try await store.model(modelID) else {
            throw HearthError(.notFound, field: "model", "no product model '\(modelID)'")
        }
        if let outDirectory { try Self.makePrivateDirectory(outDirectory) }
        var all: [ProvisionedUnit] = []
        all.reserveCapacity(count)
        // Codes are drawn here so that no two units of one run share a code.
        var issuedCodes = Set<String>()
        var rng = SystemRandomNumberGenerator()
        let workers = max(1, ProcessInfo.processInfo.activeProcessorCount)
        while all.count < count {
            let n = min(batchSize, count - all.count)
            var codes: [SetupCode] = []
            while codes.count < n {
                let code = SetupCode.generate(using: &rng)
                if issuedCodes.insert(code.digits).inserted { codes.append(code) }
            }
            // Key generation, certificates and scrypt spread over every core.
            let batch = try await withThrowingTaskGroup(of: [(ProvisionedUnit, DeviceRecord)].self) { group in
                var offset = 0
                for w in 0..<workers {
                    let share = codes[offset..<(offset + n / workers + (w < n % workers ? 1 : 0))]
                    offset = share.endIndex
                    guard !share.isEmpty else { continue }
                    group.addTask {
                        try await NIOThreadPool.singleton.runIfActive {
                            try share.map { try self.makeUnit(model: model, code: $0) }
                        }
                    }
                }
                var units: [(ProvisionedUnit, DeviceRecord)] = []
                for try await part in group { units += part }
                return units
            }
            try await register(batch, model: model, outDirectory: outDirectory)
            all += batch.map(\.0)
            progress(all.count)
        }
        return all
    }

    /// Signs a device's own CSR: the unit gets a serial, certificate and setup code; its key stays
    /// on the device.
    public func signCSR(pem: String, modelID: ProductModelID, outDirectory: URL?) async throws -> ProvisionedUnit {
        guard let model = try await store.model(modelID) else {
            throw HearthError(.notFound, field: "model", "no product model '\(modelID)'")
        }
        if let outDirectory { try Self.makePrivateDirectory(outDirectory) }
        let unit = try await NIOThreadPool.singleton.runIfActive {
            var rng = SystemRandomNumberGenerator()
            return try self.makeUnit(model: model, code: SetupCode.generate(using: &rng), csrPEM: pem)
        }
        try await register([unit], model: model, outDirectory: outDirectory)
        return unit.0
    }

    func makeUnit(model: ProductModel, code: SetupCode, csrPEM: String? = nil) throws -> (ProvisionedUnit, DeviceRecord)
    {
        var rng = SystemRandomNumberGenerator()
        let serial = DeviceSerial.random(using: &rng)
        let now = time.now()
        let key: P256.Signing.PrivateKey?
        let certificate: Certificate
        if let csrPEM {
            key = nil
            certificate = try deviceCA.signDeviceCSR(pem: csrPEM, serial: serial, model: model, now: now)
        } else {
            let fresh = P256.Signing.PrivateKey()
            key = fresh
            certificate = try deviceCA.issueDeviceCertificate(
                publicKey: .init(fresh.publicKey), serial: serial, model: model, now: now)
        }
        let label = DeviceLabel(model: model, serial: serial, setupCode: code, setupURL: "\(publicURL)/claim")
        let unit = ProvisionedUnit(
            serial: serial, setupCode: code, certificate: certificate, privateKey: key, label: label)
        let record = DeviceRecord(
            serial: serial, model: model.id, certificatePEM: try certificate.pem(),
            setupCodeHash: try hasher.hash(code.digits), provisionedAt: now)
        return (unit, record)
    }

    /// Bundles first, then the database: a unit is registered only once its bundle is on disk.
    func register(_ batch: [(ProvisionedUnit, DeviceRecord)], model: ProductModel, outDirectory: URL?) async throws {
        if let outDirectory {
            for (unit, _) in batch { try writeBundle(unit, model: model, into: outDirectory) }
        }
        let serials = batch.map(\.0.serial.rawValue)
        try await store.addDevices(
            batch.map(\.1),
            audit: AuditEntry(
                .devicesProvisioned, subject: model.id.rawValue,
                detail:
                    "\(batch.count) units: \(serials.prefix(3).joined(separator: ", "))\(serials.count > 3 ? " … \(serials.last!)" : "")",
                at: time.now()
            )
        )
    }

    func writeBundle(_ unit: ProvisionedUnit, model: ProductModel, into directory: URL) throws {
        let folder = directory.appendingPathComponent(unit.serial.rawValue)
        try Self.makePrivateDirectory(folder)
        if let key = unit.privateKey {
            try DataFolder.writePrivate(
                Data(key.pemRepresentation.utf8), to: folder.appendingPathComponent("device.key.pem"))
        }
        try Data((try unit.certificate.pem() + "\n" + deviceCA.certificate.pem()).utf8).write(
            to: folder.appendingPathComponent("device.pem"))
        try Data(try rootCA.certificate.pem().utf8).write(to: folder.appendingPathComponent("server-root-ca.pem"))
        try Data(unit.label.text.utf8).write(to: folder.appendingPathComponent("label.txt"))
        let bundle: JSONValue = [
            "serial": .string(unit.serial.rawValue), "model": .string(model.id.rawValue),
            "setupCode": .string(unit.setupCode.digits), "server": .string(publicURL),
        ]
        try DataFolder.writePrivate(bundle.serialized(), to: folder.appendingPathComponent("bundle.json"))
        if let firmware, firmware.model == model.id {
            let dir = folder.appendingPathComponent("firmware")
            try Self.makePrivateDirectory(dir)
            try Data(firmware.root).write(to: dir.appendingPathComponent("root.json"))
            try Data(firmware.targets).write(to: dir.appendingPathComponent("targets.json"))
            try Data(firmware.name.utf8).write(to: dir.appendingPathComponent("name"))
            try FileManager.default.copyItem(
                atPath: firmware.imagePath, toPath: dir.appendingPathComponent("image").path)
        }
    }

    static func makePrivateDirectory(_ url: URL) throws {
        try FileManager.default.createDirectory(
            at: url, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }
}

/// What the factory flashes for updates: the repository's current root.json and targets.json, and
/// the newest image of the model.
public struct FactoryFirmware: Sendable {
    public let model: ProductModelID
    public let root: [UInt8]
    public let targets: [UInt8]
    public let name: String
    public let imagePath: String
}

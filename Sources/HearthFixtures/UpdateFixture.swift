import Crypto
import Foundation
import HearthCore
import HearthDevice
import HearthUpdate
import Synchronization

/// A TUF repository made in code for device tests: a key per role, every document signed, served
/// by path (`metadata/…`, `targets/SHA256.NAME`) from memory. Tests change what it serves to stage
/// each attack.
public final class MemoryRepository: UpdateFetcher, @unchecked Sendable {
    public var keys: [TUFRole: [Curve25519.Signing.PrivateKey]] = Dictionary(
        uniqueKeysWithValues: TUFRole.allCases.map { ($0, [Curve25519.Signing.PrivateKey()]) })
    public var thresholds: [TUFRole: Int] = [:]
    /// Public keys root.json lists instead of this repository's own (a server's online keys).
    public var delegatedKeys: [TUFRole: [TUFKey]] = [:]
    public var now = Date()
    public var rootVersion = 1, targetsVersion = 0, snapshotVersion = 0, timestampVersion = 0
    public var images: [String: (bytes: [UInt8], custom: [String: JSONValue])] = [:]
    let files = Mutex<[String: [UInt8]]>([:])
    /// Every path fetched, in order.
    public let fetched = Mutex<[String]>([])

    public init() {}

    public func signed(_ signed: JSONValue, by role: TUFRole, keys override: [Curve25519.Signing.PrivateKey]? = nil)
        throws -> SignedMetadata
    {
        var md = SignedMetadata(signed: signed)
        for key in override ?? keys[role]! { try md.sign(with: key) }
        return md
    }

    public func rootDocument(version: Int, signers: [Curve25519.Signing.PrivateKey]? = nil) throws -> SignedMetadata {
        try signed(
            RootMetadata.make(
                version: version, expires: now.addingTimeInterval(365 * 86_400),
                keys: keys.mapValues { $0.map { TUFKey($0.publicKey) } }.merging(delegatedKeys) { _, delegated in
                    delegated
                }, thresholds: thresholds
            ),
            by: .root, keys: signers
        )
    }

    public func put(_ path: String, _ bytes: [UInt8]) { files.withLock { $0[path] = bytes } }
    public func file(_ path: String) -> [UInt8]? { files.withLock { $0[path] } }
    public func put(_ path: String, _ md: SignedMetadata) { put(path, Array(md.json.text.utf8)) }

    /// A firmware image for `model` at `version` and its custom metadata.
    public func addImage(
        model: String, version: String, minFrom: String = "0.0.0", size: Int = 64 * 1024,
        supportEnds: String = "2031-12-31"
    ) throws -> String {
        let v = try FirmwareVersion(version)
        let name = FirmwareTarget.name(model: try ProductModelID(model), version: v)
        var bytes = Array("HEARTH-FW \(model) \(version)\n".utf8)
        var rng = SplitMix64(state: name.utf8.reduce(UInt64(7)) { $0 &* 31 &+ UInt64($1) })
        while bytes.count < size { bytes.append(UInt8(truncatingIfNeeded: rng.next())) }
        let target = try FirmwareTarget(
            name: name, length: bytes.count, sha256: Data(SHA256.hash(data: bytes)).hex,
            model: try ProductModelID(model), version: v, minimumFrom: try FirmwareVersion(minFrom),
            fixes: "Fixes things in \(version), in plain words.", severity: .high, keepsWorking: true,
            downtimeSeconds: 5, supportEnds: CalendarDate(supportEnds)!
        )
        images[name] = (bytes, target.custom)
        return name
    }

    /// Signs and serves new targets, snapshot and timestamp over the current images (and root.json
    /// at `rootVersion`).
    @discardableResult
    public func publish(targetsSigners: [Curve25519.Signing.PrivateKey]? = nil) throws -> (
        targets: SignedMetadata, snapshot: SignedMetadata, timestamp: SignedMetadata
    ) {
        targetsVersion += 1
        snapshotVersion += 1
        timestampVersion += 1
        let targets = try signed(
            RoleMetadata.targets(version: targetsVersion, expires: now.addingTimeInterval(90 * 86_400), images: images),
            by: .targets, keys: targetsSigners)
        let snapshot = try signed(
            RoleMetadata.snapshot(
                version: snapshotVersion, expires: now.addingTimeInterval(7 * 86_400), targetsVersion: targetsVersion),
            by: .snapshot)
        let snapshotBytes = Array(snapshot.json.text.utf8)
        let timestamp = try signed(
            RoleMetadata.timestamp(
                version: timestampVersion, expires: now.addingTimeInterval(86_400), snapshotVersion: snapshotVersion,
                snapshotBytes: snapshotBytes), by: .timestamp)
        put("metadata/\(targetsVersion).targets.json", targets)
        put("metadata/\(snapshotVersion).snapshot.json", snapshotBytes)
        put("metadata/timestamp.json", timestamp)
        for (name, image) in images { put("targets/\(Data(SHA256.hash(data: image.bytes)).hex).\(name)", image.bytes) }
        return (targets, snapshot, timestamp)
    }

    /// Writes what the factory flashes into a device folder: root.json, targets.json and the image `name`.
    public func flashFactory(_ device: URL, name: String) throws {
        let dir = device.appendingPathComponent("firmware")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Data(try rootDocument(version: 1).json.text.utf8).write(to: dir.appendingPathComponent("root.json"))
        guard let targets = file("metadata/\(targetsVersion).targets.json") else { throw DeviceError("publish first") }
        try Data(targets).write(to: dir.appendingPathComponent("targets.json"))
        try Data(name.utf8).write(to: dir.appendingPathComponent("name"))
        try Data(images[name]!.bytes).write(to: dir.appendingPathComponent("image"))
    }

    /// What `hearth release` would write for a server: `metadata/N.root.json` up to `rootVersion`
    /// (each signed by `rootSigners[N]` or the current root keys), `metadata/targets.json`, `targets/NAME`.
    public func writePublication(
        to folder: URL, roots: [Int: SignedMetadata] = [:], targetsSigners: [Curve25519.Signing.PrivateKey]? = nil
    ) throws {
        let metadata = folder.appendingPathComponent("metadata")
        let targets = folder.appendingPathComponent("targets")
        try FileManager.default.createDirectory(at: metadata, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: targets, withIntermediateDirectories: true)
        for v in 1...rootVersion {
            try Data((try roots[v] ?? rootDocument(version: v)).json.text.utf8).write(
                to: metadata.appendingPathComponent("\(v).root.json"))
        }
        let signed = try signed(
            RoleMetadata.targets(version: targetsVersion, expires: now.addingTimeInterval(90 * 86_400), images: images),
            by: .targets, keys: targetsSigners)
        try Data(signed.json.text.utf8).write(to: metadata.appendingPathComponent("targets.json"))
        for (name, image) in images { try Data(image.bytes).write(to: targets.appendingPathComponent(name)) }
    }

    // MARK: UpdateFetcher

    public func fetch(_ path: String, limit: Int) async throws -> [UInt8]? {
        fetched.withLock { $0.append(path) }
        guard let bytes = file(path) else { return nil }
        guard bytes.count <= limit else { throw UpdateFetchError.tooLong(limit: limit) }
        return bytes
    }

    public func download(_ path: String, to file: URL, limit: Int) async throws {
        fetched.withLock { $0.append(path) }
        guard let bytes = self.file(path) else { throw UpdateFetchError.notFound }
        let have = (try? Data(contentsOf: file))?.count ?? 0
        let rest = Array(bytes.dropFirst(have))
        if !FileManager.default.fileExists(atPath: file.path) {
            FileManager.default.createFile(atPath: file.path, contents: nil)
        }
        let handle = try FileHandle(forWritingTo: file)
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: rest.prefix(max(0, limit - have + 1)))
        guard have + rest.count <= limit else { throw UpdateFetchError.tooLong(limit: limit) }
    }
}

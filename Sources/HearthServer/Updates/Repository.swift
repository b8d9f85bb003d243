import Crypto
import Foundation
import HearthCore
import HearthCrypto
import HearthStorage
import HearthUpdate

/// The server's TUF repository (The Update Framework 1.0). The maker's root and targets keys never
/// come here: `hearth release` signs on the maker's machine and `hearth updates import` brings the
/// signed documents and images in. The snapshot and timestamp keys are online, sealed with the
/// KEK; the server signs those two roles and renews them before they expire.
///
/// Served with consistent snapshots: `metadata/N.root.json`, `metadata/timestamp.json`,
/// `metadata/N.snapshot.json`, `metadata/N.targets.json`, and images at `targets/SHA256.NAME`.
public final class UpdateRepository: Sendable {
    public let store: any HearthStore & UpdateStore
    let kek: KeyEncryptionKey
    /// Where images live, named `SHA256.NAME`.
    public let targetsDirectory: URL
    let time: any TimeSource
    public let lifetimes: Lifetimes

    public struct Lifetimes: Sendable {
        public var timestamp: TimeInterval = 86_400
        public var snapshot: TimeInterval = 7 * 86_400
        /// Renew a role once less than this share of its lifetime is left.
        public var renewAtRemaining = 0.5
        public init() {}
    }

    /// Images are at most this large (the largest inactive slot Hearth's devices have).
    public static let maximumImageBytes = 256 * 1024 * 1024

    public init(
        store: any HearthStore & UpdateStore, kek: KeyEncryptionKey, targetsDirectory: URL,
        time: any TimeSource = SystemTimeSource(), lifetimes: Lifetimes = Lifetimes()
    ) throws {
        self.store = store
        self.kek = kek
        self.targetsDirectory = targetsDirectory
        self.time = time
        self.lifetimes = lifetimes
        try FileManager.default.createDirectory(
            at: targetsDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }

    // MARK: Online keys

    /// The snapshot or timestamp key, made on first use and sealed with the KEK.
    func onlineKey(_ role: TUFRole) async throws -> Curve25519.Signing.PrivateKey {
        let context = "tuf:\(role.rawValue)-key"
        let sealed: Data
        if let stored = try await store.onlineKey(role.rawValue) {
            sealed = stored
        } else {
            let fresh = Curve25519.Signing.PrivateKey()
            sealed = try await store.storeOnlineKey(
                role.rawValue, sealed: try Envelope.seal(fresh.rawRepresentation, context: context, kek: kek),
                audit: AuditEntry(
                    .updateKeyCreated, actor: "server", subject: role.rawValue,
                    detail: "key id \(TUFKey(fresh.publicKey).keyID.prefix(16))…", at: time.now())
            )
        }
        return try Curve25519.Signing.PrivateKey(
            rawRepresentation: try Envelope.open(sealed, context: context, kek: kek))
    }

    /// The online roles' public keys, for the maker's root.json (`hearth release` reads this file).
    public func onlinePublicKeys() async throws -> JSONValue {
        [
            "snapshot": TUFKey(try await onlineKey(.snapshot).publicKey).json,
            "timestamp": TUFKey(try await onlineKey(.timestamp).publicKey).json,
        ]
    }

    // MARK: Serving

    /// The bytes for a metadata file name, or nil.
    public func metadata(_ file: String) async throws -> [UInt8]? {
        let parts = file.split(separator: ".", omittingEmptySubsequences: false)
        guard file.utf8.count <= 64, parts.count == 2 || parts.count == 3, parts.last == "json" else { return nil }
        if parts.count == 2 {
            guard let role = TUFRole(rawValue: String(parts[0])) else { return nil }
            return try await store.tufDocument(role.rawValue, version: nil)?.bytes
        }
        guard let version = NetworkInput.nonNegativeInteger(parts[0], maximum: 1 << 53), version >= 1,
            let role = TUFRole(rawValue: String(parts[1])), role != .timestamp
        else { return nil }
        return try await store.tufDocument(role.rawValue, version: version)?.bytes
    }

    /// The file of a consistent-snapshot image name `SHA256.NAME`, if it is one the repository has.
    public func imagePath(_ file: String) -> String? {
        guard file.utf8.count <= 200, file.utf8.count > 65,
            file.utf8.allSatisfy({ $0 > 32 && $0 < 127 && $0 != UInt8(ascii: "/") }), !file.hasPrefix("."),
            file.utf8.prefix(64).allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }),
            file.utf8.dropFirst(64).first == UInt8(ascii: ".")
        else { return nil }
        let path = targetsDirectory.appendingPathComponent(file).path
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }

    /// The factory firmware for `model`: its newest release and the current root and targets; nil
    /// when the model has no release yet.
    public func factoryFirmware(_ model: ProductModelID) async throws -> FactoryFirmware? {
        guard let root = try await store.tufDocument("root", version: nil),
            let targets = try await store.tufDocument("targets", version: nil)
        else { return nil }
        let releases = try await store.releases(model: model)
        let versioned = releases.compactMap { r in (try? FirmwareVersion(r.version)).map { (release: r, version: $0) } }
        guard let newest = versioned.max(by: { $0.version < $1.version })?.release,
            let path = imagePath("\(newest.sha256).\(newest.target)")
        else { return nil }
        return FactoryFirmware(
            model: model, root: root.bytes, targets: targets.bytes, name: newest.target, imagePath: path)
    }

    // MARK: Import

    public struct Imported: Sendable {
        public var roots: [Int] = []
        public var targetsVersion: Int?
        public var releases: [FirmwareTarget] = []
    }

    /// Brings in what `hearth release` wrote to `folder` (`metadata/N.root.json`,
    /// `metadata/targets.json`, `targets/NAME`), checking everything before anything is stored:
    /// each new root is signed by the old root's keys and its own, delegates snapshot and
    /// timestamp to this server's online keys; targets are signed by the root's targets keys,
    /// newer than the stored version, unexpired; each new image matches its signed length and hash and is
    /// for a known model with a support period no shorter than the stored one. Then new snapshot
    /// and timestamp metadata are signed, and all of it is stored in one transaction.
    public func importPublication(from folder: URL) async throws -> Imported {
        let metadataFolder = folder.appendingPathComponent("metadata")
        let now = time.now()
        var result = Imported()
        var documents: [TUFDocument] = []

        // Roots, in order, each checked against the one before.
        let storedRoot = try await store.tufDocument("root", version: nil)
        var trustedRoot = try storedRoot.map { try SignedMetadata(json: try JSONValue.parse($0.bytes)).signed }
        var nextRoot = (storedRoot?.version ?? 0) + 1
        while let bytes = try? Self.read(metadataFolder.appendingPathComponent("\(nextRoot).root.json"), limit: 1 << 20)
        {
            let md = try Self.parse(bytes, "\(nextRoot).root.json")
            do {
                if let current = trustedRoot {
                    var client = try TrustedMetadata(trusting: current)
                    try client.updateRoot(md)
                } else {
                    _ = try TrustedMetadata(root: md)
                    guard Self.version(md) == 1 else {
                        throw UpdateRefusal.malformed("the first root must be version 1")
                    }
                }
            } catch let refusal as UpdateRefusal {
                throw HearthError(.integrity, field: "\(nextRoot).root.json", "refused: \(refusal)")
            }
            try await requireOnlineKeys(in: md.signed)
            documents.append(TUFDocument(role: "root", version: nextRoot, bytes: bytes))
            result.roots.append(nextRoot)
            trustedRoot = md.signed
            nextRoot += 1
        }
        guard let root = trustedRoot else {
            throw HearthError(
                .invalidInput, field: "metadata",
                "no root.json: run `hearth release init` first and import its publish folder")
        }

        // Targets.
        let storedTargets = try await store.tufDocument("targets", version: nil)
        var targetsVersion = storedTargets?.version ?? 0
        if let bytes = try? Self.read(metadataFolder.appendingPathComponent("targets.json"), limit: 8 << 20),
            bytes != storedTargets?.bytes
        {
            let md = try Self.parse(bytes, "targets.json")
            var client = try TrustedMetadata(trusting: root)
            let newVersion: Int
            do {
                newVersion = try client.checkTargets(md, newerThan: targetsVersion, now: now)
            } catch let refusal as UpdateRefusal {
                throw HearthError(.integrity, field: "targets.json", "refused: \(refusal)")
            }
            var known: Set<String> = []
            if let storedTargets,
                case .object(let s) = try SignedMetadata(json: try JSONValue.parse(storedTargets.bytes)).signed,
                case .object(let t)? = s["targets"]
            {
                known = Set(t.keys)
            }
            guard case .object(let signed) = md.signed, case .object(let entries)? = signed["targets"] else {
                throw HearthError.invalid("targets.json", "no targets")
            }
            guard known.isSubset(of: entries.keys) else {
                throw HearthError(
                    .integrity, field: "targets.json",
                    "a released image was removed; devices that have it would fail verified boot")
            }
            var releases: [ReleaseRecord] = []
            for name in entries.keys.sorted() where !known.contains(name) {
                let firmware: FirmwareTarget
                do { firmware = try client.firmware(name) } catch let refusal as UpdateRefusal {
                    throw HearthError(.integrity, field: name, "refused: \(refusal)")
                }
                guard name == FirmwareTarget.name(model: firmware.model, version: firmware.version) else {
                    throw HearthError.invalid(
                        name,
                        "a target is named MODEL-VERSION.img (\(FirmwareTarget.name(model: firmware.model, version: firmware.version)))"
                    )
                }
                guard let model = try await store.model(firmware.model) else {
                    throw HearthError(.notFound, field: name, "no product model \(firmware.model) on this server")
                }
                guard firmware.supportEnds >= model.supportEnds else {
                    throw HearthError(
                        .conflict, field: name,
                        "its support_ends \(firmware.supportEnds) is earlier than \(model.id)'s published \(model.supportEnds): a support period is never shortened"
                    )
                }
                try copyImage(
                    name: name, firmware: firmware,
                    from: folder.appendingPathComponent("targets").appendingPathComponent(name))
                releases.append(
                    ReleaseRecord(
                        target: name, model: firmware.model, version: firmware.version.description,
                        length: firmware.length, sha256: firmware.sha256,
                        custom: JSONValue.object(firmware.custom).text, publishedAt: now
                    ))
                result.releases.append(firmware)
            }
            targetsVersion = newVersion
            documents.append(TUFDocument(role: "targets", version: targetsVersion, bytes: bytes))
            result.targetsVersion = targetsVersion
            try await publishOnline(
                documents, releases: releases, targetsVersion: targetsVersion, now: now,
                why: "imported \(result.roots.map { "root v\($0)" } + ["targets v\(targetsVersion)"])")
            return result
        }
        guard targetsVersion > 0 else { throw HearthError(.invalidInput, field: "metadata", "no targets.json") }
        guard !documents.isEmpty else { return result }
        // A new root alone: new snapshot and timestamp too, so clients move to it.
        try await publishOnline(
            documents, releases: [], targetsVersion: targetsVersion, now: now,
            why: "imported \(result.roots.map { "root v\($0)" })")
        return result
    }

    /// The root must give snapshot and timestamp to this server's keys, or the server could not sign them.
    func requireOnlineKeys(in root: JSONValue) async throws {
        for role in [TUFRole.snapshot, .timestamp] {
            let key = TUFKey(try await onlineKey(role).publicKey)
            guard let delegation = try? RootMetadata.delegation(role, in: root), delegation.keys[key.keyID] != nil,
                delegation.threshold == 1
            else {
                throw HearthError(
                    .integrity, field: "root.json",
                    "root.json must delegate \(role.rawValue) to this server's online key (threshold 1); get them with `hearth updates online-keys`"
                )
            }
        }
    }

    func copyImage(name: String, firmware: FirmwareTarget, from source: URL) throws {
        guard firmware.length <= Self.maximumImageBytes else {
            throw HearthError(.payloadTooLarge, field: name, "an image is at most \(Self.maximumImageBytes) bytes")
        }
        let bytes = try Self.read(source, limit: firmware.length)
        guard bytes.count == firmware.length, Data(SHA256.hash(data: bytes)).hex == firmware.sha256 else {
            throw HearthError(.integrity, field: name, "the image file does not match its signed length and hash")
        }
        let final = targetsDirectory.appendingPathComponent("\(firmware.sha256).\(name)")
        let temporary = targetsDirectory.appendingPathComponent(".\(firmware.sha256).\(name).partial")
        try DataFolder.writePrivate(Data(bytes), to: temporary)
        guard rename(temporary.path, final.path) == 0 else { throw HearthError(.internal, "cannot store \(name)") }
        let dir = Foundation.open(targetsDirectory.path, O_RDONLY)
        if dir >= 0 {
            fsync(dir)
            close(dir)
        }
    }

    /// Signs a new snapshot and timestamp over `targetsVersion` and stores them with `documents`.
    func publishOnline(
        _ documents: [TUFDocument], releases: [ReleaseRecord], targetsVersion: Int, now: Date, why: String
    ) async throws {
        let snapshotVersion = (try await store.tufDocument("snapshot", version: nil)?.version ?? 0) + 1
        var snapshot = SignedMetadata(
            signed: RoleMetadata.snapshot(
                version: snapshotVersion, expires: now.addingTimeInterval(lifetimes.snapshot),
                targetsVersion: targetsVersion))
        try snapshot.sign(with: try await onlineKey(.snapshot))
        let snapshotBytes = Array(snapshot.json.text.utf8)
        let timestamp = try await timestampDocument(
            snapshotVersion: snapshotVersion, snapshotBytes: snapshotBytes, now: now)
        try await store.publish(
            documents + [TUFDocument(role: "snapshot", version: snapshotVersion, bytes: snapshotBytes), timestamp],
            releases: releases,
            audit: [
                AuditEntry(
                    .updateMetadataPublished, actor: "server", subject: "tuf",
                    detail: "\(why); snapshot v\(snapshotVersion), timestamp v\(timestamp.version)", at: now)
            ]
        )
    }

    func timestampDocument(snapshotVersion: Int, snapshotBytes: [UInt8], now: Date) async throws -> TUFDocument {
        let version = (try await store.tufDocument("timestamp", version: nil)?.version ?? 0) + 1
        var timestamp = SignedMetadata(
            signed: RoleMetadata.timestamp(
                version: version, expires: now.addingTimeInterval(lifetimes.timestamp),
                snapshotVersion: snapshotVersion, snapshotBytes: snapshotBytes))
        try timestamp.sign(with: try await onlineKey(.timestamp))
        return TUFDocument(role: "timestamp", version: version, bytes: Array(timestamp.json.text.utf8))
    }

    // MARK: Renewal

    /// Renews the online roles that are past `renewAtRemaining` of their lifetime: a new snapshot
    /// (and timestamp) when the snapshot is, else a new timestamp. Returns what it renewed.
    @discardableResult
    public func renewIfDue() async throws -> [TUFRole] {
        guard let targets = try await store.tufDocument("targets", version: nil),
            let snapshotDoc = try await store.tufDocument("snapshot", version: nil),
            let timestampDoc = try await store.tufDocument("timestamp", version: nil)
        else { return [] }
        let now = time.now()
        func due(_ doc: TUFDocument, lifetime: TimeInterval) throws -> Bool {
            guard case .object(let s) = try SignedMetadata(json: try JSONValue.parse(doc.bytes)).signed,
                case .string(let text)? = s["expires"],
                let expires = try? Date(text, strategy: Date.ISO8601FormatStyle())
            else { return true }
            return expires.timeIntervalSince(now) < lifetime * lifetimes.renewAtRemaining
        }
        if try due(snapshotDoc, lifetime: lifetimes.snapshot) {
            try await publishOnline(
                [], releases: [], targetsVersion: targets.version, now: now, why: "renewed before expiry")
            return [.snapshot, .timestamp]
        }
        if try due(timestampDoc, lifetime: lifetimes.timestamp) {
            let doc = try await timestampDocument(
                snapshotVersion: snapshotDoc.version, snapshotBytes: snapshotDoc.bytes, now: now)
            try await store.publish([doc], releases: [], audit: [])
            return [.timestamp]
        }
        return []
    }

    // MARK: Helpers

    static func read(_ url: URL, limit: Int) throws -> [UInt8] {
        guard let handle = try? FileHandle(forReadingFrom: url) else {
            throw HearthError(.notFound, field: url.lastPathComponent, "cannot read \(url.path)")
        }
        defer { try? handle.close() }
        let data = try handle.read(upToCount: limit + 1) ?? Data()
        guard data.count <= limit else {
            throw HearthError(
                .payloadTooLarge, field: url.lastPathComponent, "\(url.lastPathComponent) is larger than \(limit) bytes"
            )
        }
        return [UInt8](data)
    }

    static func parse(_ bytes: [UInt8], _ name: String) throws -> SignedMetadata {
        do { return try SignedMetadata(json: try JSONValue.parse(bytes)) } catch {
            throw HearthError.invalid(name, "not TUF metadata: \(error)")
        }
    }

    static func version(_ md: SignedMetadata) -> Int {
        if case .object(let o) = md.signed, case .number(let v)? = o["version"], let n = NetworkInput.wholeNumber(v) {
            n
        } else {
            0
        }
    }
}

import Crypto
import Foundation
import HearthCore
import HearthCrypto

/// Why an update's metadata or image was refused: each attack of the TUF specification (§ 1.5.2)
/// has its own case, so a device can report what it saw.
public enum UpdateRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    /// Fewer valid signatures from the role's keys than its threshold.
    case tooFewSignatures(TUFRole, valid: Int, threshold: Int)
    /// A version older than one already trusted (rollback attack).
    case rollback(TUFRole, offered: Int, trusted: Int)
    /// Past its expiry (freeze attack).
    case expired(TUFRole, at: Date)
    /// Not the version or hash the role above it names (mix-and-match attack).
    case mismatch(TUFRole, String)
    /// A target whose length or hash differs from its signed entry (arbitrary software).
    case targetMismatch(String)
    /// More bytes than the signed length, or than the device's cap (endless data).
    case tooLong(String, limit: Int)
    /// Not a well-formed document of the expected role.
    case malformed(String)
    /// A validly signed image for another product model.
    case wrongModel(String, for: String, device: String)
    /// A validly signed image that is not newer than what runs (firmware rollback).
    case downgrade(offered: String, running: String)
    /// The image cannot be installed over the running version (it needs a newer one first).
    case unsupportedPath(from: String, minimum: String)

    /// A short name for reports: the attack of the specification this refusal stopped.
    public var attack: String {
        switch self {
        case .tooFewSignatures: "too_few_signatures"
        case .rollback, .downgrade: "rollback"
        case .expired: "freeze"
        case .mismatch: "mix_and_match"
        case .targetMismatch: "arbitrary_software"
        case .tooLong: "endless_data"
        case .malformed: "malformed"
        case .wrongModel: "wrong_model"
        case .unsupportedPath: "unsupported_path"
        }
    }

    public var description: String {
        switch self {
        case .tooFewSignatures(let r, let v, let t): "\(r.rawValue): \(v) valid signatures, \(t) needed"
        case .rollback(let r, let o, let t): "\(r.rawValue): version \(o) is older than the trusted \(t) (rollback)"
        case .expired(let r, let at): "\(r.rawValue): expired at \(RootMetadata.timestamp(at)) (freeze)"
        case .mismatch(let r, let why): "\(r.rawValue): \(why) (mix-and-match)"
        case .targetMismatch(let why): "target: \(why) (arbitrary software)"
        case .tooLong(let what, let limit): "\(what) is longer than \(limit) bytes (endless data)"
        case .malformed(let why): "malformed metadata: \(why)"
        case .wrongModel(let name, let model, let device):
            "target: \(name) is for \(model), this device is \(device) (wrong model)"
        case .downgrade(let offered, let running):
            "target: version \(offered) is not newer than the running \(running) (rollback)"
        case .unsupportedPath(let from, let minimum):
            "target: cannot update from \(from); it needs \(minimum) or later first"
        }
    }
}

/// The TUF client workflow (specification § 5) as a value: trusted metadata in, each newly
/// fetched document checked against it, in the order root → timestamp → snapshot → targets.
/// The caller fetches bytes; this type decides. The clock is passed in.
public struct TrustedMetadata: Sendable {
    public private(set) var root: JSONValue
    public private(set) var timestamp: JSONValue?
    public private(set) var snapshot: JSONValue?
    public private(set) var targets: JSONValue?

    /// Starts from a root the device shipped with (trusted on first use, as the specification says).
    public init(root: SignedMetadata) throws {
        self.root = root.signed
        _ = try Self.require(root, .root, keysFrom: root.signed)
    }

    /// Restores what an earlier refresh trusted (the device's stored metadata), so a rollback
    /// across restarts is still caught. Signatures are checked against the trusted root; expiry is
    /// not (§ 5.2: stored metadata may have expired meanwhile — new metadata must not be).
    public mutating func restore(timestamp: SignedMetadata?, snapshot: SignedMetadata?, targets: SignedMetadata?) {
        func valid(_ md: SignedMetadata?, _ role: TUFRole) -> JSONValue? {
            guard let md, (try? Self.require(md, role, keysFrom: root)) != nil else { return nil }
            return md.signed
        }
        self.timestamp = valid(timestamp, .timestamp)
        self.snapshot = self.timestamp == nil ? nil : valid(snapshot, .snapshot)
        self.targets = self.snapshot == nil ? nil : valid(targets, .targets)
    }

    /// Verified boot: does `image` match its entry in `targets`, signed by the targets role of the
    /// trusted `root`? No clock: a device that was offline for a year must still boot.
    public static func verifyInstalled(root: JSONValue, targets: SignedMetadata, name: String, image: [UInt8]) throws
        -> FirmwareTarget
    {
        _ = try require(targets, .targets, keysFrom: root)
        var check = try TrustedMetadata(trusting: root)
        check.targets = targets.signed
        try check.verifyTarget(name, image, limit: Int.max)
        return try check.firmware(name)
    }

    /// Starts from a root already verified (the repository's stored one).
    public init(trusting root: JSONValue) throws { self.root = root }

    /// The repository's check of new targets metadata: signed by the root's targets keys, newer
    /// than `trustedVersion`, unexpired. Then it is what `target(_:)` and `firmware(_:)` read.
    @discardableResult
    public mutating func checkTargets(_ new: SignedMetadata, newerThan trustedVersion: Int, now: Date) throws -> Int {
        let offered = try Self.require(new, .targets, keysFrom: root)
        guard offered > trustedVersion else {
            throw UpdateRefusal.rollback(.targets, offered: offered, trusted: trustedVersion)
        }
        try Self.requireFresh(new.signed, .targets, now: now)
        targets = new.signed
        return offered
    }

    /// § 5.3: a new root must be signed by a threshold of the old root's root keys and of its own,
    /// and be exactly the next version. A rotated-out key cannot sign it alone.
    public mutating func updateRoot(_ new: SignedMetadata) throws {
        _ = try Self.require(new, .root, keysFrom: root)
        _ = try Self.require(new, .root, keysFrom: new.signed)
        let trusted = try Self.version(root)
        let offered = try Self.version(new.signed)
        guard offered == trusted + 1 else {
            throw offered <= trusted
                ? UpdateRefusal.rollback(.root, offered: offered, trusted: trusted)
                : .mismatch(.root, "version \(offered) skips \(trusted + 1)")
        }
        root = new.signed
        // A rotated timestamp or snapshot key: forget what the old keys vouched for (§ 5.3.11).
        timestamp = nil
        snapshot = nil
        targets = nil
    }

    /// § 5.3.10 then § 5.4: the timestamp, signed by its threshold, not older, not expired.
    public mutating func updateTimestamp(_ new: SignedMetadata, now: Date) throws {
        try checkRootFresh(now)
        let offered = try Self.require(new, .timestamp, keysFrom: root)
        if let timestamp {
            let trusted = try Self.version(timestamp)
            guard offered >= trusted else {
                throw UpdateRefusal.rollback(.timestamp, offered: offered, trusted: trusted)
            }
            let (trustedSnapshot, _) = try Self.meta("snapshot.json", in: timestamp)
            let (offeredSnapshot, _) = try Self.meta("snapshot.json", in: new.signed)
            guard offeredSnapshot >= trustedSnapshot else {
                throw UpdateRefusal.rollback(.snapshot, offered: offeredSnapshot, trusted: trustedSnapshot)
            }
        }
        try Self.requireFresh(new.signed, .timestamp, now: now)
        timestamp = new.signed
    }

    /// § 5.5: the snapshot the timestamp names (version, and hash and length if given), signed,
    /// not rolling back any target role's version, not expired.
    public mutating func updateSnapshot(_ new: SignedMetadata, bytes: [UInt8], now: Date) throws {
        guard let timestamp else { throw UpdateRefusal.malformed("a snapshot before its timestamp") }
        let (expectedVersion, hashes) = try Self.meta("snapshot.json", in: timestamp)
        if let sha = hashes {
            guard Data(SHA256.hash(data: bytes)).hex == sha else {
                throw UpdateRefusal.mismatch(.snapshot, "its hash is not the one the timestamp names")
            }
        }
        let offered = try Self.require(new, .snapshot, keysFrom: root)
        guard offered == expectedVersion else {
            throw UpdateRefusal.mismatch(.snapshot, "version \(offered), the timestamp names \(expectedVersion)")
        }
        if let snapshot {
            let (trustedTargets, _) = try Self.meta("targets.json", in: snapshot)
            let (offeredTargets, _) = try Self.meta("targets.json", in: new.signed)
            guard offeredTargets >= trustedTargets else {
                throw UpdateRefusal.rollback(.targets, offered: offeredTargets, trusted: trustedTargets)
            }
        }
        try Self.requireFresh(new.signed, .snapshot, now: now)
        snapshot = new.signed
    }

    /// § 5.6: the targets the snapshot names, signed by the targets threshold, not expired.
    public mutating func updateTargets(_ new: SignedMetadata, now: Date) throws {
        guard let snapshot else { throw UpdateRefusal.malformed("targets before the snapshot") }
        let (expectedVersion, _) = try Self.meta("targets.json", in: snapshot)
        let offered = try Self.require(new, .targets, keysFrom: root)
        guard offered == expectedVersion else {
            throw UpdateRefusal.mismatch(.targets, "version \(offered), the snapshot names \(expectedVersion)")
        }
        try Self.requireFresh(new.signed, .targets, now: now)
        targets = new.signed
    }

    /// A target's signed entry: its length, SHA-256 and custom fields.
    public func target(_ name: String) throws -> (length: Int, sha256: String, custom: [String: JSONValue]) {
        guard case .object(let t)? = targets, case .object(let all)? = t["targets"],
            case .object(let entry)? = all[name],
            case .number(let number)? = entry["length"], let length = NetworkInput.wholeNumber(number), length >= 0,
            case .object(let hashes)? = entry["hashes"], case .string(let sha)? = hashes["sha256"]
        else { throw UpdateRefusal.targetMismatch("no signed entry for \(name)") }
        var custom: [String: JSONValue] = [:]
        if case .object(let c)? = entry["custom"] { custom = c }
        return (length, sha, custom)
    }

    /// § 5.7.3: downloaded bytes must be exactly the signed length and hash. `limit` is the
    /// device's own cap (its inactive slot), checked first so endless data stops early.
    public func verifyTarget(_ name: String, _ bytes: [UInt8], limit: Int) throws {
        let entry = try target(name)
        guard bytes.count <= min(limit, entry.length) else {
            throw UpdateRefusal.tooLong(name, limit: min(limit, entry.length))
        }
        guard bytes.count == entry.length, Data(SHA256.hash(data: bytes)).hex == entry.sha256 else {
            throw UpdateRefusal.targetMismatch("\(name) does not match its signed length and hash")
        }
    }

    // MARK: Checks

    func checkRootFresh(_ now: Date) throws {
        try Self.requireFresh(root, .root, now: now)
    }

    /// The role's threshold of valid signatures from the keys `rootSigned` delegates to it, and the
    /// right `_type`; returns the version.
    static func require(_ md: SignedMetadata, _ role: TUFRole, keysFrom rootSigned: JSONValue) throws -> Int {
        guard case .object(let s) = md.signed, s["_type"] == .string(role.rawValue) else {
            throw UpdateRefusal.malformed("not \(role.rawValue) metadata")
        }
        let delegation: (keys: [String: TUFKey], threshold: Int)
        do { delegation = try RootMetadata.delegation(role, in: rootSigned) } catch {
            throw UpdateRefusal.malformed("\(error)")
        }
        let valid = md.validSignatures(by: delegation.keys)
        guard valid >= delegation.threshold else {
            throw UpdateRefusal.tooFewSignatures(role, valid: valid, threshold: delegation.threshold)
        }
        return try version(md.signed)
    }

    static func version(_ signed: JSONValue) throws -> Int {
        guard case .object(let s) = signed, case .number(let v)? = s["version"],
            let version = NetworkInput.wholeNumber(v), version >= 1
        else { throw UpdateRefusal.malformed("no version") }
        return version
    }

    static func requireFresh(_ signed: JSONValue, _ role: TUFRole, now: Date) throws {
        guard case .object(let s) = signed, case .string(let text)? = s["expires"],
            let expires = try? Date(text, strategy: Date.ISO8601FormatStyle())
        else {
            throw UpdateRefusal.malformed("\(role.rawValue) has no expiry")
        }
        guard now < expires else { throw UpdateRefusal.expired(role, at: expires) }
    }

    /// A `meta` entry: the version and, if present, the SHA-256 it names.
    static func meta(_ file: String, in signed: JSONValue) throws -> (version: Int, sha256: String?) {
        guard case .object(let s) = signed, case .object(let meta)? = s["meta"], case .object(let entry)? = meta[file],
            case .number(let v)? = entry["version"],
            let version = NetworkInput.wholeNumber(v), version >= 1
        else {
            throw UpdateRefusal.malformed("no meta entry for \(file)")
        }
        var sha: String?
        if case .object(let hashes)? = entry["hashes"], case .string(let h)? = hashes["sha256"] { sha = h }
        return (version, sha)
    }
}

/// Builds the `signed` parts of the other three roles (the server and `hearth release` use them).
public enum RoleMetadata {
    public static func timestamp(version: Int, expires: Date, snapshotVersion: Int, snapshotBytes: [UInt8]) -> JSONValue
    {
        [
            "_type": "timestamp", "spec_version": .string(RootMetadata.specVersion),
            "version": .number(Double(version)), "expires": .string(RootMetadata.timestamp(expires)),
            "meta": [
                "snapshot.json": [
                    "version": .number(Double(snapshotVersion)), "length": .number(Double(snapshotBytes.count)),
                    "hashes": ["sha256": .string(Data(SHA256.hash(data: snapshotBytes)).hex)],
                ]
            ],
        ]
    }

    public static func snapshot(version: Int, expires: Date, targetsVersion: Int) -> JSONValue {
        [
            "_type": "snapshot", "spec_version": .string(RootMetadata.specVersion), "version": .number(Double(version)),
            "expires": .string(RootMetadata.timestamp(expires)),
            "meta": ["targets.json": ["version": .number(Double(targetsVersion))]],
        ]
    }

    /// Targets by name: the image bytes and custom fields (model, version, release notes…).
    public static func targets(
        version: Int, expires: Date, images: [String: (bytes: [UInt8], custom: [String: JSONValue])]
    ) -> JSONValue {
        var entries: [String: JSONValue] = [:]
        for (name, image) in images {
            entries[name] = [
                "length": .number(Double(image.bytes.count)),
                "hashes": ["sha256": .string(Data(SHA256.hash(data: image.bytes)).hex)],
                "custom": .object(image.custom),
            ]
        }
        return [
            "_type": "targets", "spec_version": .string(RootMetadata.specVersion), "version": .number(Double(version)),
            "expires": .string(RootMetadata.timestamp(expires)),
            "targets": .object(entries),
        ]
    }
}

import Crypto
import Foundation
import HearthCore
import HearthUpdate

/// The two firmware slots.
public enum FirmwareSlot: String, Sendable, CaseIterable {
    case a, b
    public var other: FirmwareSlot { self == .a ? .b : .a }
}

/// What verified boot decided (Code of Practice guideline 7).
public enum BootOutcome: Sendable, Equatable {
    /// The active slot verified.
    case booted(FirmwareSlot, FirmwareTarget)
    /// A new version's first start: it must pass the health check, or the device goes back.
    case trial(FirmwareSlot, FirmwareTarget)
    /// A new version did not pass its health check before a restart: back on the known-good slot.
    case rolledBack(FirmwareSlot, FirmwareTarget, reason: String)
    /// The active slot failed verification; the other, verified, slot was started.
    case fellBack(FirmwareSlot, FirmwareTarget, reason: String)
    /// No slot verifies: the device must stop and only raise the alert.
    case integrityFailure(reason: String)

    public var firmware: FirmwareTarget? {
        switch self {
        case .booted(_, let f), .trial(_, let f), .rolledBack(_, let f, _), .fellBack(_, let f, _): f
        case .integrityFailure: nil
        }
    }
}

/// A device's firmware on its flash, and the TUF client that updates it. A folder stands for the
/// flash:
///
/// ```
/// firmware/              from the factory: root.json (the anchor), targets.json, image
/// update/boot.json       {"active", "trial", "tries"}: which slot starts, written atomically
/// update/slot-a/image    a slot's image, and manifest.json: {"name", "targets"} — the signed
/// update/slot-a/manifest.json   targets metadata that vouches for it
/// update/roots/N.root.json      roots trusted since the factory one, each signed by the one before
/// update/trusted/{timestamp,snapshot,targets}.json   what the last refresh trusted (rollback protection)
/// update/download/SHA256.partial                     an interrupted download, resumed later
/// ```
///
/// Every step is ordered so that a power cut at any point leaves a device that boots a verified
/// image, the old version or the new one: the inactive slot loses its manifest before its image is
/// replaced, gets it back only after the image is on disk, and only then does the atomic
/// `boot.json` switch make it active — on trial, until ``commit()``.
public actor FirmwareUpdater {
    public let folder: URL
    public let factory: URL
    public let model: ProductModelID
    let fetcher: (any UpdateFetcher)?
    let clock: any TimeSource
    /// The inactive slot's size: no image larger than this is downloaded.
    public let slotCapacity: Int
    public private(set) var running: FirmwareTarget?
    public private(set) var activeSlot: FirmwareSlot = .a

    public init(
        device folder: URL, model: ProductModelID, fetcher: (any UpdateFetcher)?,
        clock: any TimeSource = SystemTimeSource(), slotCapacity: Int = 64 * 1024 * 1024
    ) {
        self.folder = folder.appendingPathComponent("update")
        factory = folder.appendingPathComponent("firmware")
        self.model = model
        self.fetcher = fetcher
        self.clock = clock
        self.slotCapacity = slotCapacity
    }

    /// True if the device was provisioned with firmware (a factory root and image).
    public nonisolated static func hasFirmware(_ device: URL) -> Bool {
        FileManager.default.fileExists(atPath: device.appendingPathComponent("firmware/root.json").path)
    }

    func slot(_ s: FirmwareSlot) -> URL { folder.appendingPathComponent("slot-\(s.rawValue)") }
    var bootFile: URL { folder.appendingPathComponent("boot.json") }
    var rootsFolder: URL { folder.appendingPathComponent("roots") }
    var trustedFolder: URL { folder.appendingPathComponent("trusted") }
    var downloads: URL { folder.appendingPathComponent("download") }

    // MARK: Verified boot

    /// At start: flashes the factory image on first boot, then verifies the slot to start against
    /// the trusted keys; falls back to the other verified slot, or reports integrity failure.
    public func boot() throws -> BootOutcome {
        if !FileManager.default.fileExists(atPath: bootFile.path) { try flashFactory() }
        let root = try trustedRoot()
        var state = readBootState()
        var rolledBackReason: String?
        if state.trial {
            if state.tries >= 1 {
                rolledBackReason =
                    "version in slot \(state.active.rawValue) did not pass its health check before a restart"
                state = BootState(active: state.active.other, trial: false, tries: 0)
                try writeBootState(state)
            } else {
                state.tries = 1
                try writeBootState(state)
            }
        }
        switch verify(state.active, root: root) {
        case .success(let firmware):
            activeSlot = state.active
            running = firmware
            if let rolledBackReason { return .rolledBack(state.active, firmware, reason: rolledBackReason) }
            return state.trial ? .trial(state.active, firmware) : .booted(state.active, firmware)
        case .failure(let why):
            let other = state.active.other
            switch verify(other, root: root) {
            case .success(let firmware):
                try writeBootState(BootState(active: other, trial: false, tries: 0))
                activeSlot = other
                running = firmware
                return .fellBack(other, firmware, reason: "slot \(state.active.rawValue): \(why)")
            case .failure(let whyOther):
                running = nil
                return .integrityFailure(
                    reason: "slot \(state.active.rawValue): \(why); slot \(other.rawValue): \(whyOther)")
            }
        }
    }

    /// Verifies a slot's image against its manifest's signed targets, under the trusted root.
    func verify(_ s: FirmwareSlot, root: JSONValue) -> Result<FirmwareTarget, SlotError> {
        guard let image = FileManager.default.contents(atPath: slot(s).appendingPathComponent("image").path) else {
            return .failure(SlotError("no image"))
        }
        var last = SlotError("no manifest")
        for file in ["manifest.json", "manifest.next.json"] {
            guard let data = FileManager.default.contents(atPath: slot(s).appendingPathComponent(file).path) else {
                continue
            }
            guard case .object(let m)? = try? JSONValue.parse(Array(data)), case .string(let name)? = m["name"],
                let t = m["targets"], let targets = try? SignedMetadata(json: t)
            else {
                last = SlotError("malformed manifest")
                continue
            }
            do {
                let firmware = try TrustedMetadata.verifyInstalled(
                    root: root, targets: targets, name: name, image: Array(image))
                guard firmware.model == model else { return .failure(SlotError("the image is for \(firmware.model)")) }
                return .success(firmware)
            } catch {
                last = SlotError("\(error)")
            }
        }
        return .failure(last)
    }

    public struct SlotError: Error, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }

    /// The factory root, then each stored newer root that the one before it signed.
    func trustedRoot() throws -> JSONValue { try trustedChain().root }

    /// A client trusting the factory root and, in order, each stored newer root the one before signed.
    func trustedChain() throws -> TrustedMetadata {
        var client = try TrustedMetadata(root: try Self.readSigned(factory.appendingPathComponent("root.json")))
        var version = Self.version(client.root) + 1
        while let next = try? Self.readSigned(rootsFolder.appendingPathComponent("\(version).root.json")),
            (try? client.updateRoot(next)) != nil
        { version += 1 }
        return client
    }

    /// First boot: the factory image goes into slot A with the factory's targets as its manifest.
    func flashFactory() throws {
        for dir in [folder, slot(.a), slot(.b), rootsFolder, trustedFolder, downloads] {
            try FileManager.default.createDirectory(
                at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        guard let targets = FileManager.default.contents(atPath: factory.appendingPathComponent("targets.json").path),
            let name = try? String(contentsOf: factory.appendingPathComponent("name"), encoding: .utf8),
            let image = FileManager.default.contents(atPath: factory.appendingPathComponent("image").path)
        else { throw DeviceError("the factory firmware (firmware/targets.json, name, image) is missing") }
        try Self.writeAtomically(image, to: slot(.a).appendingPathComponent("image"))
        let manifest: JSONValue = [
            "name": .string(name.trimmingCharacters(in: .whitespacesAndNewlines)),
            "targets": try JSONValue.parse(Array(targets)),
        ]
        try Self.writeAtomically(Data(manifest.text.utf8), to: slot(.a).appendingPathComponent("manifest.json"))
        try writeBootState(BootState(active: .a, trial: false, tries: 0))
    }

    struct BootState: Equatable {
        var active: FirmwareSlot
        var trial: Bool
        var tries: Int
    }

    func readBootState() -> BootState {
        guard let data = FileManager.default.contents(atPath: bootFile.path),
            case .object(let o)? = try? JSONValue.parse(Array(data)),
            case .string(let a)? = o["active"], let active = FirmwareSlot(rawValue: a),
            case .bool(let trial)? = o["trial"], case .number(let tries)? = o["tries"]
        else { return BootState(active: .a, trial: false, tries: 0) }
        return BootState(
            active: active, trial: trial, tries: NetworkInput.wholeNumber(tries).map { min(max($0, 0), 1_000) } ?? 0)
    }

    func writeBootState(_ s: BootState) throws {
        try Self.writeAtomically(
            Data(
                JSONValue.object([
                    "active": .string(s.active.rawValue), "trial": .bool(s.trial), "tries": .number(Double(s.tries)),
                ]).text.utf8), to: bootFile)
    }

    // MARK: Commit and roll back

    /// The health check passed: the running slot becomes the known-good one.
    public func commit() throws {
        var state = readBootState()
        guard state.trial else { return }
        state.trial = false
        state.tries = 0
        try writeBootState(state)
    }

    /// The health check failed: the other slot starts next (the caller restarts).
    public func rollback() throws {
        let state = readBootState()
        guard state.trial else { return }
        try writeBootState(BootState(active: state.active.other, trial: false, tries: 0))
    }

    // MARK: Update

    /// The TUF workflow then the A/B install: refresh root → timestamp → snapshot → targets (every
    /// check of the specification), check the target is for this model and newer, download it into
    /// the inactive slot (resuming, capped), verify, install, switch. The device restarts next.
    /// `phase` is told each step. Throws ``UpdateRefusal`` for an attack, other errors otherwise;
    /// then nothing on the active slot has changed.
    public func install(_ name: String, phase: @Sendable (UpdatePhase) async -> Void) async throws -> FirmwareTarget {
        guard let fetcher, let current = running else {
            throw DeviceError("this device has no update repository or no running firmware")
        }
        let trusted = try await refresh(fetcher)
        let target = try trusted.firmware(name)
        try target.check(for: model, running: current.version)
        let limit = min(slotCapacity, target.length)
        await phase(.downloading)
        try FileManager.default.createDirectory(at: downloads, withIntermediateDirectories: true)
        let partial = downloads.appendingPathComponent("\(target.sha256).partial")
        do {
            try await fetcher.download("targets/\(target.sha256).\(name)", to: partial, limit: limit)
        } catch UpdateFetchError.tooLong(let l) {
            try? FileManager.default.removeItem(at: partial)
            throw UpdateRefusal.tooLong(name, limit: l)
        }
        await phase(.verifying)
        let (length, sha) = try Self.digest(partial)
        guard length <= limit else {
            try? FileManager.default.removeItem(at: partial)
            throw UpdateRefusal.tooLong(name, limit: limit)
        }
        guard length == target.length, sha == target.sha256 else {
            try? FileManager.default.removeItem(at: partial)
            throw UpdateRefusal.targetMismatch("\(name) does not match its signed length and hash")
        }
        await phase(.installing)
        let inactive = slot(activeSlot.other)
        try FileManager.default.createDirectory(at: inactive, withIntermediateDirectories: true)
        for file in ["manifest.json", "manifest.next.json"] {
            try? FileManager.default.removeItem(at: inactive.appendingPathComponent(file))
        }
        Self.syncDirectory(inactive)
        guard rename(partial.path, inactive.appendingPathComponent("image").path) == 0 else {
            throw DeviceError("cannot install into slot \(activeSlot.other.rawValue)")
        }
        Self.syncDirectory(inactive)
        let manifest: JSONValue = [
            "name": .string(name),
            "targets": try Self.readSigned(trustedFolder.appendingPathComponent("targets.json")).json,
        ]
        try Self.writeAtomically(Data(manifest.text.utf8), to: inactive.appendingPathComponent("manifest.json"))
        guard case .success = verify(activeSlot.other, root: trusted.root) else {
            throw DeviceError("slot \(activeSlot.other.rawValue) does not verify after install")
        }
        await phase(.rebooting)
        try writeBootState(BootState(active: activeSlot.other, trial: true, tries: 0))
        return target
    }

    /// § 5 of the specification, persisting what it trusts after each step.
    func refresh(_ fetcher: any UpdateFetcher) async throws -> TrustedMetadata {
        let now = clock.now()
        var client = try trustedChain()
        var version = Self.version(client.root) + 1
        client.restore(
            timestamp: try? Self.readSigned(trustedFolder.appendingPathComponent("timestamp.json")),
            snapshot: try? Self.readSigned(trustedFolder.appendingPathComponent("snapshot.json")),
            targets: try? Self.readSigned(trustedFolder.appendingPathComponent("targets.json"))
        )
        // 5.3: newer roots, one version at a time, at most 32 per refresh.
        var newRoots: [(Int, [UInt8])] = []
        for _ in 0..<32 {
            guard let bytes = try await fetchCapped(fetcher, "metadata/\(version).root.json", limit: 512 * 1024) else {
                break
            }
            try client.updateRoot(try Self.parse(bytes))
            newRoots.append((version, bytes))
            version += 1
        }
        guard let timestampBytes = try await fetchCapped(fetcher, "metadata/timestamp.json", limit: 16 * 1024) else {
            throw DeviceError("the repository has no timestamp.json")
        }
        try client.updateTimestamp(try Self.parse(timestampBytes), now: now)
        guard case .object(let ts)? = client.timestamp, case .object(let meta)? = ts["meta"],
            case .object(let snap)? = meta["snapshot.json"], case .number(let svNumber)? = snap["version"],
            let sv = NetworkInput.wholeNumber(svNumber), sv >= 1
        else {
            throw UpdateRefusal.malformed("timestamp without snapshot meta")
        }
        var snapshotLimit = 1 << 20
        if case .number(let l)? = snap["length"], let length = NetworkInput.wholeNumber(l), length >= 0 {
            snapshotLimit = min(snapshotLimit, length)
        }
        guard let snapshotBytes = try await fetchCapped(fetcher, "metadata/\(sv).snapshot.json", limit: snapshotLimit)
        else { throw UpdateRefusal.mismatch(.snapshot, "snapshot version \(sv) is missing") }
        try client.updateSnapshot(try Self.parse(snapshotBytes), bytes: snapshotBytes, now: now)
        guard case .object(let sn)? = client.snapshot, case .object(let smeta)? = sn["meta"],
            case .object(let tmeta)? = smeta["targets.json"], case .number(let tvNumber)? = tmeta["version"],
            let tv = NetworkInput.wholeNumber(tvNumber), tv >= 1
        else {
            throw UpdateRefusal.malformed("snapshot without targets meta")
        }
        guard let targetsBytes = try await fetchCapped(fetcher, "metadata/\(tv).targets.json", limit: 8 << 20) else {
            throw UpdateRefusal.mismatch(.targets, "targets version \(tv) is missing")
        }
        let targets = try Self.parse(targetsBytes)
        try client.updateTargets(targets, now: now)
        // Keep the slots bootable under new keys: each slot whose image the new targets still list
        // with the same hash gets the new manifest beside the old one before the new roots count.
        for s in FirmwareSlot.allCases {
            guard
                case .object(let m)? =
                    (FileManager.default.contents(atPath: slot(s).appendingPathComponent("manifest.json").path))
                    .flatMap({ try? JSONValue.parse(Array($0)) }),
                case .string(let name)? = m["name"],
                let image = FileManager.default.contents(atPath: slot(s).appendingPathComponent("image").path),
                (try? TrustedMetadata.verifyInstalled(
                    root: client.root, targets: targets, name: name, image: Array(image))) != nil
            else { continue }
            try Self.writeAtomically(
                Data(JSONValue.object(["name": .string(name), "targets": targets.json]).text.utf8),
                to: slot(s).appendingPathComponent("manifest.next.json"))
        }
        try FileManager.default.createDirectory(at: rootsFolder, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: trustedFolder, withIntermediateDirectories: true)
        for (v, bytes) in newRoots {
            try Self.writeAtomically(Data(bytes), to: rootsFolder.appendingPathComponent("\(v).root.json"))
        }
        try Self.writeAtomically(Data(targetsBytes), to: trustedFolder.appendingPathComponent("targets.json"))
        try Self.writeAtomically(Data(snapshotBytes), to: trustedFolder.appendingPathComponent("snapshot.json"))
        try Self.writeAtomically(Data(timestampBytes), to: trustedFolder.appendingPathComponent("timestamp.json"))
        for s in FirmwareSlot.allCases
        where FileManager.default.fileExists(atPath: slot(s).appendingPathComponent("manifest.next.json").path) {
            _ = rename(
                slot(s).appendingPathComponent("manifest.next.json").path,
                slot(s).appendingPathComponent("manifest.json").path)
            Self.syncDirectory(slot(s))
        }
        return client
    }

    func fetchCapped(_ fetcher: any UpdateFetcher, _ path: String, limit: Int) async throws -> [UInt8]? {
        do { return try await fetcher.fetch(path, limit: limit) } catch UpdateFetchError.tooLong(let l) {
            throw UpdateRefusal.tooLong(path, limit: l)
        }
    }

    // MARK: Files

    static func readSigned(_ url: URL) throws -> SignedMetadata {
        guard let data = FileManager.default.contents(atPath: url.path), data.count <= 8 << 20 else {
            throw DeviceError("cannot read \(url.lastPathComponent)")
        }
        return try parse(Array(data))
    }

    static func parse(_ bytes: [UInt8]) throws -> SignedMetadata {
        do { return try SignedMetadata(json: try JSONValue.parse(bytes)) } catch {
            throw UpdateRefusal.malformed("\(error)")
        }
    }

    static func version(_ signed: JSONValue) -> Int {
        if case .object(let o) = signed, case .number(let v)? = o["version"], let n = NetworkInput.wholeNumber(v) {
            n
        } else {
            1
        }
    }

    /// Length and SHA-256 of a file, read in 1 MiB pieces.
    static func digest(_ url: URL) throws -> (Int, String) {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        var hasher = SHA256()
        var length = 0
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            hasher.update(data: chunk)
            length += chunk.count
        }
        return (length, Data(hasher.finalize()).hex)
    }

    /// Temporary file, fsync, rename over, fsync the folder: the file is the old one or the new one.
    public static func writeAtomically(_ data: Data, to url: URL) throws {
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp")
        let fd = open(temporary.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw DeviceError("cannot write \(url.path)") }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        close(fd)
        guard written == data.count, synced == 0, rename(temporary.path, url.path) == 0 else {
            throw DeviceError("cannot write \(url.path)")
        }
        syncDirectory(url.deletingLastPathComponent())
    }

    static func syncDirectory(_ url: URL) {
        let fd = open(url.path, O_RDONLY)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }
}

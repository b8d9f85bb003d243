import Foundation
import HearthCore
import HearthCrypto
import HearthStorage
import HearthUpdate

/// What the owner's and the operator's pages show about a device, gathered in one place: its name,
/// whether it is online, its readings, its history, its logbook. Protocol-free, like ``Hearth``.
extension Hearth {
    /// The longest name an owner may give a device.
    public static let deviceNameLength = 40

    /// The owner's name for the device, if they gave one.
    public func name(of device: DeviceRecord) -> String? {
        guard let sealed = device.nameSealed,
            let plain = try? Envelope.open(sealed, context: "device:\(device.serial.rawValue):name", kek: kek)
        else { return nil }
        return String(decoding: plain, as: UTF8.self)
    }

    /// Names (or with an empty name un-names) the caller's device. 1 to 40 characters, no control
    /// characters; stored sealed.
    public func nameDevice(_ rawSerial: String, name rawName: String, by identity: Identity) async throws {
        let device = try await ownedDevice(rawSerial, by: identity)
        let name = rawName.trimmingCharacters(in: .whitespacesAndNewlines)
        guard name.count <= Self.deviceNameLength else {
            throw HearthError.invalid("name", "at most \(Self.deviceNameLength) characters")
        }
        guard
            !name.unicodeScalars.contains(where: {
                $0.properties.generalCategory == .control || $0.properties.generalCategory == .format
            })
        else {
            throw HearthError.invalid("name", "letters, digits, spaces and punctuation only")
        }
        let sealed =
            try name.isEmpty
            ? nil : Envelope.seal(Data(name.utf8), context: "device:\(device.serial.rawValue):name", kek: kek)
        let changed = try await store.nameDevice(
            device.serial, owner: identity.account.id, nameSealed: sealed,
            audit: AuditEntry(
                .deviceNamed, actor: identity.account.id.description, subject: device.serial.rawValue, at: time.now())
        )
        guard changed else { throw HearthError(.notFound, field: "serial", "you have no device with this serial") }
    }

    /// Which of `serials` are connected to the gateway now (none when this process runs no gateway).
    public func online(_ serials: [DeviceSerial]) async -> Set<DeviceSerial> {
        guard let presence = commands as? any DevicePresence else { return [] }
        return await presence.connected(serials)
    }

    /// The devices connected now, on which node and since when (operators only): the newest
    /// `limit` and the count per node. Empty when this process runs no gateway.
    public func liveConnections(limit: Int, by identity: Identity) async throws -> LiveConnections {
        guard identity.role == .operator else { throw HearthError(.forbidden, "this needs the operator role") }
        guard let presence = commands as? any DevicePresence else { return LiveConnections() }
        return await presence.connections(limit: limit)
    }

    /// Numeric readings' history for charts: slices of `slice` seconds over the `seconds` before now.
    /// Slices that ended more than a minute ago are settled (a reading is stamped when the gateway
    /// receives it, and committed within that minute), so the store may keep them.
    public func series(_ device: DeviceRecord, fields: [String], seconds: TimeInterval, slice: TimeInterval)
        async throws -> [String: [TelemetryBucket]]
    {
        let now = time.now()
        let start = now.addingTimeInterval(-seconds)
        let from = max(start, device.claimedAt ?? start)
        let telemetry = try requireTelemetry()
        let series = try await telemetry.series(
            device.serial, fields: fields, from: from, to: now, slice: slice,
            settledBefore: now.addingTimeInterval(-60))
        // Slices are aligned to their width (and cached), so the one the claim falls in may hold a
        // previous owner's readings: it is made again from this owner's readings alone.
        guard let claimedAt = device.claimedAt, slice.isFinite, slice >= 1 else { return series }
        let first = (from.timeIntervalSince1970 / slice).rounded(.down) * slice
        guard first < claimedAt.timeIntervalSince1970 else { return series }
        var result = series.mapValues { $0.filter { $0.start >= claimedAt } }
        var values: [String: [Double]] = [:]
        var after: Int64?
        while true {
            let page = try await telemetry.readings(
                device.serial, from: claimedAt, to: min(Date(timeIntervalSince1970: first + slice), now),
                after: after, limit: 1000)
            for record in page {
                for field in fields {
                    if case .number(let n)? = record.reading.values[field] { values[field, default: []].append(n) }
                }
            }
            guard page.count == 1000, let last = page.last else { break }
            after = last.position
        }
        for (field, v) in values {
            guard let lo = v.min(), let hi = v.max() else { continue }
            let bucket = TelemetryBucket(
                start: Date(timeIntervalSince1970: first), count: v.count, min: lo, max: hi,
                mean: v.reduce(0, +) / Double(v.count))
            result[field, default: []].insert(bucket, at: 0)
        }
        return result
    }

    /// The device's logbook, newest first: what was done to it (claims, names, commands,
    /// revocation) and what it reported about its software.
    /// `since` hides what happened before (an owner sees only their own time with the device).
    public func logbook(_ device: DeviceRecord, since: Date? = nil, limit: Int) async throws -> [LogbookEntry] {
        let audit = try await store.auditRecords(subject: device.serial.rawValue, limit: limit).compactMap(
            LogbookEntry.init(audit:))
        let updates = try await self.updates?.store.updateEvents(device.serial, limit: limit) ?? []
        let events = updates.map { e in
            LogbookEntry(
                at: e.at,
                text: "Software \(e.version): \(UpdatePhase(rawValue: e.phase)?.plainEnglish ?? e.phase)"
                    + (e.reason.map { " (\($0))" } ?? ""), alert: UpdatePhase(rawValue: e.phase)?.alert == true)
        }
        var refusals: [LogbookEntry] = []
        if let telemetry { refusals = try await telemetry.refusals(device.serial).map { LogbookEntry(refusal: $0) } }
        return Array(
            (audit + events + refusals).filter { $0.at >= since ?? .distantPast }.sorted { $0.at > $1.at }.prefix(limit)
        )
    }

    /// The operator's fleet: a page of devices matching `filter`, after `after`.
    public func fleet(after: DeviceSerial?, filter: FleetFilter, limit: Int, by identity: Identity) async throws -> (
        devices: [DeviceRecord], total: Int
    ) {
        guard identity.role == .operator else { throw HearthError(.forbidden, "this needs the operator role") }
        async let devices = store.fleet(after: after, filter: filter, limit: limit)
        async let total = store.fleetCount(filter)
        return (try await devices, try await total)
    }

    /// One device for the operator (no owner's details).
    public func fleetDevice(_ rawSerial: String, by identity: Identity) async throws -> DeviceRecord {
        guard identity.role == .operator else { throw HearthError(.forbidden, "this needs the operator role") }
        guard let serial = try? DeviceSerial(rawSerial), let device = try await store.device(serial) else {
            throw HearthError(.notFound, field: "serial", "no such device")
        }
        return device
    }
}

/// One line of a device's logbook.
public struct LogbookEntry: Sendable, Equatable {
    public let at: Date
    public let text: String
    public let alert: Bool

    public init(at: Date, text: String, alert: Bool = false) {
        self.at = at
        self.text = text
        self.alert = alert
    }

    /// The audit record in plain words; nil for kinds the owner's logbook does not show.
    init?(audit record: AuditRecord) {
        let at = Date(timeIntervalSince1970: Double(record.atMillis) / 1000)
        switch AuditKind(rawValue: record.kind) {
        case .devicesProvisioned: self.init(at: at, text: "Made and provisioned")
        case .deviceClaimed: self.init(at: at, text: "Set up (claimed) by its owner")
        case .deviceClaimFailed: self.init(at: at, text: "A set-up attempt with a wrong code was refused", alert: true)
        case .deviceReleased:
            let reason = record.detail.split(separator: ",").first.flatMap { ReleaseReason(rawValue: String($0)) }
            self.init(at: at, text: "Released by its owner (\(reason?.plainEnglish ?? "released"))")
        case .consentChanged: self.init(at: at, text: "Privacy choices changed: \(record.detail)")
        case .deviceRevoked:
            self.init(at: at, text: "Its certificate was revoked: it can no longer connect", alert: true)
        case .deviceNamed: self.init(at: at, text: "Renamed")
        case .commandSent: self.init(at: at, text: "Command sent: \(record.detail)")
        default: return nil
        }
    }

    init(refusal: RefusalCount) {
        self.init(
            at: refusal.lastAt,
            text:
                "Refused \(refusal.count) invalid message\(refusal.count == 1 ? "" : "s") from the device (\(refusal.kind.rawValue))",
            alert: true)
    }
}

extension ReleaseReason {
    var plainEnglish: String {
        switch self {
        case .unclaimed: "removed from the account"
        case .transferred: "handed on"
        case .disposed: "disposed of"
        case .factoryReset: "factory reset"
        case .accountDeleted: "account deleted"
        }
    }
}

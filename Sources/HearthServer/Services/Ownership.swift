import Foundation
import HearthCore
import HearthCrypto
import HearthStorage

/// How long a transferred device waits for its recipient: only they may claim it meanwhile.
let transferReservation: TimeInterval = 14 * 86_400

extension Hearth {
    /// Removes the caller's device from their account (EN 303 645 5.11-2, 5.11-4). With
    /// `keepHistory` its readings from their time stay theirs (in their export, removed with their
    /// account); otherwise they are deleted now. Anyone with the label's code may claim it next.
    public func unclaim(_ rawSerial: String, keepHistory: Bool, by identity: Identity) async throws -> OwnershipRecord {
        let device = try await ownedDevice(rawSerial, by: identity)
        return try await release(device, reason: .unclaimed, keepHistory: keepHistory, actor: identity)
    }

    /// Hands the caller's device to the person with e-mail address `to`: it leaves the caller's
    /// account now, and for 14 days only an account with that address can claim it (with the
    /// label's code; they need no account yet). The caller's history is never shown to them.
    public func transfer(_ rawSerial: String, to rawEmail: String, keepHistory: Bool, by identity: Identity)
        async throws -> OwnershipRecord
    {
        let device = try await ownedDevice(rawSerial, by: identity)
        guard let email = try? EmailAddress(rawEmail) else {
            throw HearthError.invalid("to", "an e-mail address, such as name@example.com")
        }
        let index = emailIndex.index(email.rawValue)
        guard index != identity.account.emailIndex else {
            throw HearthError.invalid("to", "this is your own address; give the new owner's")
        }
        let reservation = DeviceReservation(
            emailIndex: index, until: time.now().addingTimeInterval(transferReservation))
        return try await release(
            device, reason: .transferred, keepHistory: keepHistory, reservation: reservation, actor: identity)
    }

    /// Disposes of the caller's device (sold for scrap, broken, lost): its certificate is revoked
    /// so it never connects again, its live connection ends, and its history is deleted.
    public func dispose(_ rawSerial: String, by identity: Identity) async throws -> OwnershipRecord {
        let device = try await ownedDevice(rawSerial, by: identity)
        let ended = try await release(device, reason: .disposed, keepHistory: false, revoke: true, actor: identity)
        await (commands as? any DeviceDisconnecting)?.disconnect(
            device.serial, reason: "the device was disposed of by its owner")
        return ended
    }

    /// Ends the current owner's hold on `device` (see ``HearthStore/releaseDevice``): the gateway
    /// is told the device may send nothing optional, and a history not kept is deleted now (or by
    /// the next retention sweep, if this fails midway).
    func release(
        _ device: DeviceRecord, reason: ReleaseReason, keepHistory: Bool, reservation: DeviceReservation? = nil,
        revoke: Bool = false, actor: Identity?
    ) async throws -> OwnershipRecord {
        guard let owner = device.owner, let claimedAt = device.claimedAt else {
            throw HearthError(.notFound, field: "serial", "this device has no owner")
        }
        let now = time.now()
        let ended = OwnershipRecord(
            serial: device.serial, owner: owner, claimedAt: claimedAt, releasedAt: max(now, claimedAt),
            reason: reason, historyKept: keepHistory)
        let detail =
            "\(reason.rawValue), history \(keepHistory ? "kept" : "deleted")"
            + (revoke ? ", certificate revoked" : "") + (reservation != nil ? ", reserved for the recipient" : "")
        guard
            try await store.releaseDevice(
                ended, reservation: reservation, revoke: revoke,
                audit: AuditEntry(
                    .deviceReleased, actor: (actor?.account.id ?? owner).description, subject: device.serial.rawValue,
                    detail: detail, at: now))
        else {
            throw HearthError(.conflict, field: "serial", "this device changed meanwhile; reload and try again")
        }
        readingKeys?.forget(device.serial)
        if let model = try await store.model(device.model) {
            await policyChanged(device.serial, DevicePolicy(model: model, granted: []))
        }
        if !keepHistory { try? await purge(ended) }
        return ended
    }

    /// Deletes the readings of an ended hold whose owner did not keep them.
    func purge(_ ownership: OwnershipRecord) async throws {
        // The end is exclusive; readings stamped in the millisecond of the release are theirs too.
        try await telemetry?.deleteReadings(
            ownership.serial, from: ownership.claimedAt, to: ownership.releasedAt.addingTimeInterval(0.001))
        try await store.markPurged(ownership, at: time.now())
    }

    /// Retention (guideline 8; the storage limitation of UK GDPR art. 5(1)(e)): deletes, for every device, each field of its
    /// readings older than its model declares, and finishes history deletions a crash left
    /// undone. One audit entry for the sweep. Returns how many readings changed or went.
    @discardableResult
    public func enforceRetention() async throws -> (devices: Int, readings: Int) {
        guard let telemetry else { return (0, 0) }
        for pending in try await store.pendingPurges(limit: 1000) { try await purge(pending) }
        let now = time.now()
        var devices = 0
        var readings = 0
        for model in try await store.models() {
            let cutoffs = model.retentionCutoffs(now: now)
            guard !cutoffs.isEmpty else { continue }
            var after: DeviceSerial?
            while true {
                let page = try await store.fleet(after: after, filter: FleetFilter(model: model.id), limit: 500)
                for device in page {
                    let changed = try await telemetry.expire(device.serial, cutoffs: cutoffs)
                    if changed > 0 {
                        devices += 1
                        readings += changed
                    }
                }
                guard page.count == 500, let last = page.last else { break }
                after = last.serial
            }
        }
        if readings > 0 {
            try await store.appendAudit(
                AuditEntry(
                    .readingsExpired, detail: "\(readings) readings of \(devices) devices past their retention period",
                    at: now))
        }
        return (devices, readings)
    }

    /// What the owner is told about how long their device's readings are kept: each field's
    /// period, and when the oldest reading of theirs still kept was received.
    public func retention(_ device: DeviceRecord) async throws -> (periods: [(field: String, days: Int)], oldest: Date?)
    {
        guard let model = try await store.model(device.model) else { return ([], nil) }
        let periods = model.telemetry.compactMap { f in f.declaration.map { (f.name, $0.retentionDays) } }
        let first = try await telemetry?.readings(
            device.serial, from: device.claimedAt ?? .distantPast, to: .distantFuture, after: nil, limit: 1
        ).first
        return (periods, first?.reading.receivedAt)
    }

    /// The caller's past devices, oldest first.
    public func ownerships(of identity: Identity) async throws -> [OwnershipRecord] {
        try await store.ownerships(of: identity.account.id)
    }
}

extension ProductModel {
    /// Per telemetry field, the receipt time before which its values are no longer kept.
    public func retentionCutoffs(now: Date) -> [String: Date] {
        Dictionary(
            telemetry.compactMap { field in
                field.declaration.map { (field.name, now.addingTimeInterval(-Double($0.retentionDays) * 86_400)) }
            },
            uniquingKeysWith: min)
    }
}

/// A device's own factory reset (EN 303 645 5.11-1): the server ends its owner's claim, keeping
/// the owner's history (pressing a device's reset button is not the owner's choice to delete it;
/// they can still export it, and it goes with their account).
extension Hearth: DeviceResetChannel {
    public func deviceReset(_ payload: [UInt8], from serial: DeviceSerial) async throws {
        guard payload.count <= 256, case .object(let o) = try JSONValue.parse(payload), o.count == 1,
            case .string(let id)? = o["reset"], RequestID.isWellFormed(id)
        else {
            throw HearthError.invalid("reset", #"expected {"reset": ID}, ID 8-64 letters, digits or dashes"#)
        }
        let now = time.now()
        guard
            try await store.resetDevice(
                serial, resetID: id, at: now,
                audit: AuditEntry(
                    .deviceReset, actor: "device", subject: serial.rawValue, detail: "reset \(id)", at: now)) != nil
        else { return }
        readingKeys?.forget(serial)
        guard let device = try await store.device(serial), let model = try await store.model(device.model) else {
            return
        }
        await policyChanged(serial, DevicePolicy(model: model, granted: []))
    }
}

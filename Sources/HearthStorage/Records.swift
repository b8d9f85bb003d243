import Foundation
import HearthCore

/// An account. The e-mail address is stored sealed (envelope-encrypted) with a keyed blind index for
/// look-up; the password only as a slow salted hash.
public struct AccountRecord: Sendable, Equatable {
    public let id: AccountID
    public let role: Role
    public let emailIndex: String
    public let emailSealed: Data
    public let passwordHash: String
    public let createdAt: Date
    /// The SHA-256 of the account's recovery code (``RecoveryCode``); nil when it has none.
    public var recoveryHash: String?
    /// Set while the owner's request to delete the account waits out its grace period.
    public var deletion: DeletionRequest?

    public init(
        id: AccountID, role: Role, emailIndex: String, emailSealed: Data, passwordHash: String, createdAt: Date,
        recoveryHash: String? = nil, deletion: DeletionRequest? = nil
    ) {
        self.id = id
        self.role = role
        self.emailIndex = emailIndex
        self.emailSealed = emailSealed
        self.passwordHash = passwordHash
        self.createdAt = createdAt
        self.recoveryHash = recoveryHash
        self.deletion = deletion
    }
}

/// A signed-in session; only the hash of its token is stored.
public struct SessionRecord: Sendable, Equatable {
    public let tokenHash: String
    public let account: AccountID
    public let createdAt: Date
    public let expiresAt: Date

    public init(tokenHash: String, account: AccountID, createdAt: Date, expiresAt: Date) {
        self.tokenHash = tokenHash
        self.account = account
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }
}

/// The one-time link that creates the first operator account.
public struct SetupLinkRecord: Sendable, Equatable {
    public let tokenHash: String
    public let createdAt: Date
    public let expiresAt: Date

    public init(tokenHash: String, createdAt: Date, expiresAt: Date) {
        self.tokenHash = tokenHash
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }
}

/// A provisioned unit. The setup code is stored only as a slow salted hash; the device's private key
/// is never stored by the server.
public struct DeviceRecord: Sendable, Equatable {
    public let serial: DeviceSerial
    public let model: ProductModelID
    public let certificatePEM: String
    public let setupCodeHash: String
    public let provisionedAt: Date
    public var owner: AccountID?
    public var claimedAt: Date?
    /// Set once the device's certificate is revoked: the gateway refuses it from then on.
    public var revokedAt: Date?
    /// The name its owner gave it ("Hall thermostat"), sealed with the KEK like an e-mail address:
    /// it can say who lives where.
    public var nameSealed: Data?
    /// Set while a transfer is under way: only the account with this e-mail blind index may claim
    /// the device until `reservation.until` (the previous owner, who also knows the label code,
    /// cannot take it back meanwhile).
    public var reservation: DeviceReservation?
    /// A certificate issued for the device's new key (re-keying) that it has not connected with
    /// yet: both work until it does, then only the new one (the old one is revoked).
    public var pendingCertificatePEM: String?
    /// Why the device is quarantined, and since when: it may connect and update, nothing else.
    public var quarantine: DeviceQuarantine?

    public init(
        serial: DeviceSerial, model: ProductModelID, certificatePEM: String, setupCodeHash: String, provisionedAt: Date,
        owner: AccountID? = nil, claimedAt: Date? = nil,
        revokedAt: Date? = nil, nameSealed: Data? = nil, reservation: DeviceReservation? = nil,
        pendingCertificatePEM: String? = nil, quarantine: DeviceQuarantine? = nil
    ) {
        self.serial = serial
        self.model = model
        self.certificatePEM = certificatePEM
        self.setupCodeHash = setupCodeHash
        self.provisionedAt = provisionedAt
        self.owner = owner
        self.claimedAt = claimedAt
        self.revokedAt = revokedAt
        self.nameSealed = nameSealed
        self.reservation = reservation
        self.pendingCertificatePEM = pendingCertificatePEM
        self.quarantine = quarantine
    }
}

/// Who alone may claim a device being transferred (by the blind index of their e-mail address:
/// they need not have an account yet), and until when.
public struct DeviceReservation: Sendable, Equatable {
    public let emailIndex: String
    public let until: Date

    public init(emailIndex: String, until: Date) {
        self.emailIndex = emailIndex
        self.until = until
    }
}

/// Why an owner's hold on a device ended.
public enum ReleaseReason: String, Sendable, CaseIterable {
    /// The owner removed it from their account.
    case unclaimed
    /// The owner handed it to someone else, who claims it with the label's code.
    case transferred
    /// The owner disposed of it: its certificate is revoked, it never connects again.
    case disposed
    /// The device was reset to factory state (by itself, or by its owner).
    case factoryReset = "factory_reset"
    /// The owner's account was deleted.
    case accountDeleted = "account_deleted"
}

/// A past hold of a device by one owner, recorded when it ends: the readings received in
/// `claimedAt ..< releasedAt` were theirs. When they kept them, their export still holds them and
/// their account deletion removes them; otherwise they are deleted (`purgedAt` says when it was
/// done; a crash before that leaves the record for the next sweep to finish).
public struct OwnershipRecord: Sendable, Equatable {
    public let serial: DeviceSerial
    public let owner: AccountID
    public let claimedAt: Date
    public let releasedAt: Date
    public let reason: ReleaseReason
    public let historyKept: Bool
    public var purgedAt: Date?

    public init(
        serial: DeviceSerial, owner: AccountID, claimedAt: Date, releasedAt: Date, reason: ReleaseReason,
        historyKept: Bool, purgedAt: Date? = nil
    ) {
        self.serial = serial
        self.owner = owner
        self.claimedAt = claimedAt
        self.releasedAt = releasedAt
        self.reason = reason
        self.historyKept = historyKept
        self.purgedAt = purgedAt
    }
}

/// A vulnerability report. Its text (title, description, product, contact, credit) is stored
/// sealed with the KEK; the reporter's status token only as a hash.
public struct ReportRecord: Sendable, Equatable {
    public let id: ReportID
    public let receivedAt: Date
    public let state: ReportState
    public let statusTokenHash: String
    public let sealed: Data
    /// Every state change, oldest first; the first is `received`.
    public let events: [ReportEvent]

    public init(
        id: ReportID, receivedAt: Date, state: ReportState, statusTokenHash: String, sealed: Data, events: [ReportEvent]
    ) {
        self.id = id
        self.receivedAt = receivedAt
        self.state = state
        self.statusTokenHash = statusTokenHash
        self.sealed = sealed
        self.events = events
    }
}

/// One step of a report through the workflow. The note is shown to the reporter; it is sealed.
public struct ReportEvent: Sendable, Equatable {
    public let at: Date
    public let state: ReportState
    public let actor: String?
    public let noteSealed: Data?

    public init(at: Date, state: ReportState, actor: String?, noteSealed: Data?) {
        self.at = at
        self.state = state
        self.actor = actor
        self.noteSealed = noteSealed
    }
}

/// A published advisory: its CSAF and OSV renderings as published, and what owners' notices need.
public struct AdvisoryRecord: Sendable, Equatable {
    public let id: String
    public let reportID: ReportID
    public let publishedAt: Date
    public let title: String
    public let severity: String
    public let models: [ProductModelID]
    public let fixedVersion: String
    public let csaf: String
    public let osv: String

    public init(
        id: String, reportID: ReportID, publishedAt: Date, title: String, severity: String, models: [ProductModelID],
        fixedVersion: String, csaf: String, osv: String
    ) {
        self.id = id
        self.reportID = reportID
        self.publishedAt = publishedAt
        self.title = title
        self.severity = severity
        self.models = models
        self.fixedVersion = fixedVersion
        self.csaf = csaf
        self.osv = osv
    }
}

/// Which devices the operator's fleet page lists.
public struct FleetFilter: Sendable, Equatable {
    public var model: ProductModelID?
    /// true: claimed only; false: unclaimed only; nil: both.
    public var claimed: Bool?
    /// Serials that start with this (upper-case letters and digits only).
    public var serialPrefix: String?

    public init(model: ProductModelID? = nil, claimed: Bool? = nil, serialPrefix: String? = nil) {
        self.model = model
        self.claimed = claimed
        self.serialPrefix = serialPrefix
    }

    /// The filter as an SQL condition on the `devices` table with `?` placeholders and their
    /// values in order (no value is spliced into the text), for every SQL driver.
    public var sql: (clause: String, values: [String]) {
        var clauses = ["1 = 1"]
        var values: [String] = []
        if let model {
            clauses.append("model_id = ?")
            values.append(model.rawValue)
        }
        if let claimed { clauses.append(claimed ? "owner_id IS NOT NULL" : "owner_id IS NULL") }
        if let serialPrefix, !serialPrefix.isEmpty {
            // Serials are upper-case letters and digits: a prefix range needs no LIKE escaping
            // (both drivers compare serials in byte order).
            clauses.append("serial >= ? AND serial < ?")
            values += [serialPrefix, serialPrefix + "\u{7F}"]
        }
        return (clauses.joined(separator: " AND "), values)
    }
}

/// A reading as a driver stores it: its values as JSON text, or sealed (then `clear` is empty).
public struct StoredReadingValues: Sendable {
    public let reading: TelemetryReading
    public let clear: String
    public let keyID: String?
    public let sealed: Data?
}

/// Which data key a device's readings went under.
public struct KeyUse: Sendable, Hashable {
    public let serial: DeviceSerial
    public let keyID: String
}

/// Readings ready to store: what ``TelemetryStore/prepare(_:)`` made of them (values sealed or in
/// clear, in the order given) and the keys used. Batches prepared one after another join in order.
public struct PreparedReadings: Sendable {
    public private(set) var rows: [StoredReadingValues]
    public private(set) var keysUsed: Set<KeyUse>

    public init(rows: [StoredReadingValues] = [], keysUsed: Set<KeyUse> = []) {
        self.rows = rows
        self.keysUsed = keysUsed
    }

    public var isEmpty: Bool { rows.isEmpty }
    public var count: Int { rows.count }

    public mutating func append(_ other: PreparedReadings) {
        rows += other.rows
        keysUsed.formUnion(other.keysUsed)
    }

    /// The keys used, in one order (by serial, then key), so that every writer takes locks alike.
    public var sortedKeysUsed: [KeyUse] {
        keysUsed.sorted { ($0.serial.rawValue, $0.keyID) < ($1.serial.rawValue, $1.keyID) }
    }
}

/// How every SQL driver reads a device's readings back: in the order received (the server's clock),
/// then stored (`position`), which one index (serial, received_at, position) serves for pages,
/// time ranges and the latest alike. A second index by (serial, position) would cost every commit
/// a page written per device in the batch (issue 14's readings measure).
public enum ReadingQueries {
    /// The device's last reading. Arguments: serial.
    public static let latest =
        "SELECT * FROM readings WHERE serial = ? ORDER BY received_at DESC, position DESC LIMIT 1"
    /// When the cursor's reading was received (no row once it has gone). Arguments: position, serial.
    public static let receivedAt = "SELECT received_at FROM readings WHERE position = ? AND serial = ?"
    /// A page of a device's readings after the `after` cursor (none: the first page), at most
    /// `limit`: the query and its arguments in order, the serial first and then numbers.
    /// `cursorTime` is when the cursor's reading was received (``receivedAt``); nil when it has gone
    /// since, and the page then starts after the cursor's position within the range.
    public static func page(serial: String, from: Int64, to: Int64, after: Int64?, cursorTime: Int64?, limit: Int)
        -> (sql: String, serial: String, numbers: [Int64])
    {
        let limit = Int64(max(0, limit))
        if let after, let cursorTime {
            return (
                """
                SELECT * FROM readings WHERE serial = ? AND received_at >= ? AND received_at < ?
                AND (received_at > ? OR position > ?) ORDER BY received_at, position LIMIT ?
                """, serial, [max(from, cursorTime), to, cursorTime, after, limit]
            )
        }
        return (
            """
            SELECT * FROM readings WHERE serial = ? AND received_at >= ? AND received_at < ? AND position > ?
            ORDER BY received_at, position LIMIT ?
            """, serial, [from, to, after ?? 0, limit]
        )
    }
}

/// What every readings driver seals and slices the same way.
public enum ReadingFormat {
    /// The readings' values as stored: sealed under the data key each device's readings go under
    /// now (with `keys`), else in clear; and which key each device used.
    public static func prepare(_ readings: [TelemetryReading], keys: (any ReadingKeys)?) async throws
        -> PreparedReadings
    {
        var sealing: [DeviceSerial: any ReadingKey] = [:]
        if let keys {
            for serial in Set(readings.map(\.serial)) { sealing[serial] = try await keys.sealing(serial) }
        }
        let rows = try readings.map { r in
            let json = JSONValue.object(r.values).text
            guard let key = sealing[r.serial] else {
                return StoredReadingValues(reading: r, clear: json, keyID: nil, sealed: nil)
            }
            let sealed = try key.seal(Array(json.utf8), context: context(r.serial.rawValue, r.sequence))
            return StoredReadingValues(reading: r, clear: "", keyID: key.id, sealed: Data(sealed))
        }
        return PreparedReadings(rows: rows, keysUsed: Set(sealing.map { KeyUse(serial: $0.key, keyID: $0.value.id) }))
    }

    /// The associated data a reading's values are sealed with: which device, which reading.
    public static func context(_ serial: String, _ sequence: Int64) -> [UInt8] {
        Array("reading:\(serial):\(sequence)".utf8)
    }

    /// Division rounding towards minus infinity (history slices before 1970 line up too).
    public static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }
}

/// One consent choice: the owner of a device agreed to, or withdrew from, one optional purpose of
/// its model, having seen the privacy notice of `noticeVersion` (EN 303 645 6-2, 6-3). Kept as a
/// history; the latest choice per purpose counts, and only the current owner's.
public struct ConsentRecord: Sendable, Equatable {
    public let serial: DeviceSerial
    public let owner: AccountID
    public let purpose: String
    public let granted: Bool
    public let noticeVersion: String
    public let at: Date

    public init(serial: DeviceSerial, owner: AccountID, purpose: String, granted: Bool, noticeVersion: String, at: Date)
    {
        self.serial = serial
        self.owner = owner
        self.purpose = purpose
        self.granted = granted
        self.noticeVersion = noticeVersion
        self.at = at
    }
}

extension [ConsentRecord] {
    /// The choice that counts for each purpose: the latest (the history is oldest first).
    public var latest: [String: ConsentRecord] {
        Dictionary(map { ($0.purpose, $0) }) { _, later in later }
    }

    /// The purposes agreed to: those whose latest choice is a grant.
    public var granted: Set<String> { Set(latest.values.filter(\.granted).map(\.purpose)) }
}

/// An owner's request to delete their account: made at `requestedAt`, carried out after `after`
/// (the grace period, during which they can cancel). The receipt is fetched with a token whose
/// hash is `receiptTokenHash`.
public struct DeletionRequest: Sendable, Equatable {
    public let requestedAt: Date
    public let after: Date
    public let receiptTokenHash: String

    public init(requestedAt: Date, after: Date, receiptTokenHash: String) {
        self.requestedAt = requestedAt
        self.after = after
        self.receiptTokenHash = receiptTokenHash
    }
}

/// A data key as stored: wrapped by the KEK. One per owner (and one for the deployment, for
/// readings of devices nobody holds); deleted with the owner's account, which crypto-shreds
/// whatever was sealed under it.
public struct DataKeyRecord: Sendable, Equatable {
    public let id: String
    /// Nil: the deployment's key.
    public let owner: AccountID?
    public let wrapped: Data
    public let createdAt: Date

    public init(id: String, owner: AccountID?, wrapped: Data, createdAt: Date) {
        self.id = id
        self.owner = owner
        self.wrapped = wrapped
        self.createdAt = createdAt
    }
}

/// A security alert (guideline 10): what a detector found about one device, with its evidence,
/// and where the operator has got with it.
public struct AlertRecord: Sendable, Equatable {
    public enum State: String, Sendable, Equatable, CaseIterable {
        case open, acknowledged, resolved
    }

    public let id: String
    public let serial: DeviceSerial
    /// The detection's kind and severity (HearthMonitor's names).
    public let kind: String
    public let severity: String
    /// Counts, window, addresses as a JSON object; never a payload.
    public let evidence: String
    public let raisedAt: Date
    public var state: State
    public var updatedAt: Date

    public init(
        id: String, serial: DeviceSerial, kind: String, severity: String, evidence: String, raisedAt: Date,
        state: State = .open, updatedAt: Date? = nil
    ) {
        self.id = id
        self.serial = serial
        self.kind = kind
        self.severity = severity
        self.evidence = evidence
        self.raisedAt = raisedAt
        self.state = state
        self.updatedAt = updatedAt ?? raisedAt
    }
}

/// A device held in quarantine (guideline 10): why, and since when.
public struct DeviceQuarantine: Sendable, Equatable {
    public let reason: String
    public let since: Date

    public init(reason: String, since: Date) {
        self.reason = reason
        self.since = since
    }
}

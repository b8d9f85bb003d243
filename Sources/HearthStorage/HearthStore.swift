import Foundation
import HearthCore

/// What the server needs from a database. The embedded driver is SQLite (`HearthSQLite`); a
/// PostgreSQL driver comes later. Every driver passes the contract suite in
/// `Tests/HearthSQLiteTests/StoreContract.swift`.
///
/// Rules every driver keeps:
/// - a call that returns has committed durably (a crash afterwards loses nothing);
/// - a call that throws has changed nothing;
/// - the `audit` entry of a mutating call is appended in the same transaction as the change;
/// - uniqueness conflicts throw ``HearthError/Code/conflict``.
public protocol HearthStore: Sendable {
    // Accounts
    func createAccount(_ account: AccountRecord, audit: AuditEntry) async throws
    func account(emailIndex: String) async throws -> AccountRecord?
    func account(id: AccountID) async throws -> AccountRecord?
    func hasOperator() async throws -> Bool
    /// Commits a small write (the time of the last readiness check): throws if the database cannot
    /// take writes now (disk full, read-only, locked past the busy timeout). For `/readyz`.
    func checkWritable(at: Date) async throws
    /// Replaces the password hash if it is still `from` (so two changes cannot both win) and ends
    /// every session of the account but `keeping`; false, changing nothing, otherwise.
    func changePassword(_ account: AccountID, from: String, to: String, keeping: String?, audit: AuditEntry)
        async throws -> Bool
    /// Records (or with nil cancels) the account's deletion request; false, changing nothing, when
    /// cancelling one that is not there or requesting while one is.
    func setDeletion(_ account: AccountID, _ request: DeletionRequest?, audit: AuditEntry) async throws -> Bool
    /// Accounts whose deletion is due at `now`.
    func deletionsDue(now: Date, limit: Int) async throws -> [AccountRecord]
    /// Deletes an account whose deletion was requested, in one transaction: its sessions, consents,
    /// ownership history, data key (crypto-shredding its readings) and the account itself, storing
    /// `receipt` under the request's token hash.
    /// The caller has ended its holds and deleted its readings first. Throws `.conflict` if it still
    /// holds a device; false if the account or its request is gone.
    func deleteAccount(_ account: AccountID, receipt: String, audit: AuditEntry) async throws -> Bool
    /// The data key of `owner` (nil: the deployment's), if one was made.
    func dataKey(owner: AccountID?) async throws -> DataKeyRecord?
    /// Stores `key` unless its owner already has one; returns the one stored (so two racing
    /// first readings agree on one key).
    func addDataKey(_ key: DataKeyRecord) async throws -> DataKeyRecord
    /// The data keys with these ids that exist (a deleted account's is gone).
    func dataKeys(ids: Set<String>) async throws -> [DataKeyRecord]
    /// A stored deletion receipt, by the hash of its token.
    func deletionReceipt(tokenHash: String) async throws -> String?
    /// Replaces the account's recovery code hash.
    func setRecoveryHash(_ account: AccountID, _ hash: String, audit: AuditEntry) async throws
    /// Uses a recovery code once: if the account's recovery hash is still `used`, sets the new
    /// password and recovery hashes and ends every session; false, changing nothing, otherwise.
    func recoverAccount(
        _ account: AccountID, used: String, passwordHash: String, recoveryHash: String, audit: AuditEntry
    ) async throws -> Bool

    // The first operator's set-up link
    /// Stores `link` and removes every earlier link: only the newest can be used.
    func replaceSetupLink(_ link: SetupLinkRecord, audit: AuditEntry) async throws
    /// Atomically: checks the link exists and is unexpired at `now`, deletes it, and creates
    /// `account`. Throws `.expired` for an expired or unknown link (one answer for both).
    func redeemSetupLink(tokenHash: String, now: Date, creating account: AccountRecord, audit: [AuditEntry])
        async throws

    // Sessions
    func createSession(_ session: SessionRecord, audit: AuditEntry) async throws
    func session(tokenHash: String) async throws -> SessionRecord?
    func deleteSession(tokenHash: String, audit: AuditEntry) async throws
    /// The account's sessions, newest first.
    func sessions(of account: AccountID) async throws -> [SessionRecord]
    /// Ends every session of the account (sign out everywhere); returns how many.
    @discardableResult func deleteSessions(of account: AccountID, audit: AuditEntry) async throws -> Int
    @discardableResult func deleteExpiredSessions(now: Date) async throws -> Int

    // Product models
    func createModel(_ model: ProductModel, at: Date, audit: AuditEntry) async throws
    func model(_ id: ProductModelID) async throws -> ProductModel?
    func models() async throws -> [ProductModel]

    // Devices
    func addDevices(_ devices: [DeviceRecord], audit: AuditEntry) async throws
    func device(_ serial: DeviceSerial) async throws -> DeviceRecord?
    func devices(ownedBy owner: AccountID) async throws -> [DeviceRecord]
    /// Sets the owner if the device is unclaimed and not reserved for someone else (a transfer:
    /// reserved for another e-mail index and not yet expired at `at`), clearing any reservation;
    /// returns false (changing nothing) otherwise.
    func claimDevice(_ serial: DeviceSerial, owner: AccountID, emailIndex: String, at: Date, audit: AuditEntry)
        async throws -> Bool
    /// Ends `release.owner`'s hold on a device in one transaction: records `release` in their
    /// ownership history, returns the device to unclaimed (forgetting the name they gave it),
    /// reserves it for a transfer's recipient, and revokes its certificate when `revoke`. Its setup
    /// code is unchanged: it goes back to *its own* code. False, changing nothing, unless that
    /// owner holds it since `release.claimedAt`.
    func releaseDevice(
        _ release: OwnershipRecord, reservation: DeviceReservation?, revoke: Bool, audit: AuditEntry
    ) async throws -> Bool
    /// A device said it was reset to factory state (reset `resetID`, random per reset): in one
    /// transaction, ends its owner's hold as ``releaseDevice`` does (history kept: a reset is not the
    /// owner's choice to delete it) and remembers the ID. Nil, and nothing written, for an ID already
    /// seen (a message sent again); nil with only the audit entry for a device nobody held.
    func resetDevice(_ serial: DeviceSerial, resetID: String, at: Date, audit: AuditEntry) async throws
        -> OwnershipRecord?
    /// Re-keying: stores a certificate for the device's new key beside its current one. False,
    /// changing nothing, for an unknown or revoked device.
    func setPendingCertificate(_ serial: DeviceSerial, pem: String, audit: AuditEntry) async throws -> Bool
    /// The device connected with its pending certificate `pem`: it becomes the device's only
    /// certificate (the old one is refused from now on). False, changing nothing, unless `pem` is
    /// still the pending one.
    func promoteCertificate(_ serial: DeviceSerial, pem: String, audit: AuditEntry) async throws -> Bool
    /// Records a security alert with its audit entry.
    func addAlert(_ alert: AlertRecord, audit: AuditEntry) async throws
    /// Alerts in these states, newest first, at most `limit`.
    func alerts(in states: Set<AlertRecord.State>, limit: Int) async throws -> [AlertRecord]
    /// One device's alerts raised at or after `since`, newest first, at most `limit`.
    func alerts(of serial: DeviceSerial, since: Date, limit: Int) async throws -> [AlertRecord]
    /// Moves an alert to `state` (open → acknowledged → resolved; not back); false, changing
    /// nothing, for an unknown alert or a move that is not forward.
    func setAlertState(_ id: String, _ state: AlertRecord.State, at: Date, audit: AuditEntry) async throws -> Bool
    /// The webhook outbox: alerts raised at or after `since` that no receiver has taken yet and
    /// whose next attempt is due by `now`, oldest first, with the attempts made so far.
    func alertsToDeliver(since: Date, now: Date, limit: Int) async throws -> [(alert: AlertRecord, attempts: Int)]
    /// Records a delivery attempt: delivered (taken off the outbox), or failed with the time of the
    /// next attempt.
    func recordAlertDelivery(_ id: String, delivered: Bool, nextAttempt: Date?, at: Date) async throws
    /// Puts a device in quarantine (or with nil releases it). False, changing nothing, for an
    /// unknown device, or one already in (or out of) quarantine.
    func setQuarantine(_ serial: DeviceSerial, _ quarantine: DeviceQuarantine?, audit: AuditEntry) async throws -> Bool
    /// The devices `owner` held once, oldest first.
    func ownerships(of owner: AccountID) async throws -> [OwnershipRecord]
    /// Ended holds whose readings are to be deleted and are not yet, oldest first.
    func pendingPurges(limit: Int) async throws -> [OwnershipRecord]
    /// Records that the readings of a past hold were deleted.
    func markPurged(_ ownership: OwnershipRecord, at: Date) async throws
    func deviceCount() async throws -> Int
    /// Sets (or with nil clears) the sealed name of a device `owner` owns; false, changing
    /// nothing, when they do not own it.
    func nameDevice(_ serial: DeviceSerial, owner: AccountID, nameSealed: Data?, audit: AuditEntry) async throws -> Bool
    /// The fleet in serial order: at most `limit` devices after `after` that match `filter`.
    func fleet(after: DeviceSerial?, filter: FleetFilter, limit: Int) async throws -> [DeviceRecord]
    /// How many devices match `filter`.
    func fleetCount(_ filter: FleetFilter) async throws -> Int
    /// Revokes the device's certificate (lost, stolen, cloned key). Returns false if it already was.
    /// Throws `.notFound` for an unknown serial.
    func revokeDevice(_ serial: DeviceSerial, at: Date, audit: AuditEntry) async throws -> Bool

    /// Appends consent choices for a device, all of the same owner, in one transaction with the
    /// audit entry. False, and nothing written, unless that owner holds the device.
    func recordConsents(_ choices: [ConsentRecord], audit: AuditEntry) async throws -> Bool
    /// The consent history of a device with one owner, oldest first.
    func consents(_ serial: DeviceSerial, owner: AccountID) async throws -> [ConsentRecord]

    // Audit log
    func appendAudit(_ entry: AuditEntry) async throws
    func auditRecords() async throws -> [AuditRecord]
    /// The records about `subject` (a device serial, a report id), newest first, at most `limit`.
    func auditRecords(subject: String, limit: Int) async throws -> [AuditRecord]
    /// The records of what `actor` (an account id) did, oldest first, at most `limit`.
    func auditRecords(actor: String, limit: Int) async throws -> [AuditRecord]
    func auditHead() async throws -> AuditHead?

    // Vulnerability reports (coordinated disclosure)
    func createReport(_ report: ReportRecord, audit: AuditEntry) async throws
    func report(_ id: ReportID) async throws -> ReportRecord?
    func report(statusTokenHash: String) async throws -> ReportRecord?
    /// Every report, newest first.
    func reports() async throws -> [ReportRecord]
    /// Moves a report that is still in `from` (appending `event`); false if it was moved meanwhile.
    func moveReport(_ id: ReportID, from: ReportState, event: ReportEvent, audit: AuditEntry) async throws -> Bool
    /// The security team: operators who may read and handle vulnerability reports.
    func setSecurityTeam(_ account: AccountID, member: Bool, audit: AuditEntry) async throws
    func isSecurityTeam(_ account: AccountID) async throws -> Bool

    // Advisories
    /// Publishes an advisory and moves its report (still in `from`) to disclosed, in one
    /// transaction; false if the report was moved meanwhile.
    func publishAdvisory(_ advisory: AdvisoryRecord, reportFrom: ReportState, event: ReportEvent, audit: AuditEntry)
        async throws -> Bool
    /// Every advisory, newest first.
    func advisories() async throws -> [AdvisoryRecord]

    // Coordination between the nodes sharing the database
    /// Takes the lease `name` for `holder` until `until`, or renews it, if it is free, expired at
    /// `now` or already `holder`'s: true if `holder` holds it now. Periodic work runs on the
    /// lease's holder only, so once across the deployment.
    func acquireLease(_ name: String, holder: String, now: Date, until: Date) async throws -> Bool
    /// Throttle states, shared by every node and kept across restarts: in one transaction that
    /// no other update of these keys interleaves with, `step` gets the stored states of `keys`
    /// (absent: none stored) and returns its result and the states to store (nil deletes one).
    /// When `step` throws, nothing is stored.
    func updateThrottles<T: Sendable>(
        _ keys: [String],
        _ step: @escaping @Sendable ([String: StoredThrottle]) throws -> (T, [String: StoredThrottle?])
    ) async throws -> T
    /// Deletes throttle states with nothing in flight since `reservedBefore`, no block in force at
    /// `now` and no failure since `failedBefore`; returns how many.
    @discardableResult func deleteIdleThrottles(now: Date, reservedBefore: Date, failedBefore: Date) async throws -> Int
}

/// One key's throttle state as stored, with the time of its latest reservation (a reservation
/// its node never settled is dropped once old).
public struct StoredThrottle: Sendable, Equatable {
    public var state: ThrottleState
    public var reservedAt: Date?

    public init(state: ThrottleState, reservedAt: Date?) {
        self.state = state
        self.reservedAt = reservedAt
    }
}

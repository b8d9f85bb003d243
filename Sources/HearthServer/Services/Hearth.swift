import Crypto
import Foundation
import HearthCore
import HearthCrypto
import HearthMetrics
import HearthStorage
import NIOCore
import NIOPosix
import Synchronization

/// Settings a deployment may change; every default is the secure one.
public struct HearthSettings: Sendable {
    public var sessionLifetime: TimeInterval = 12 * 3600
    public var setupLinkLifetime: TimeInterval = 3600
    /// Largest request body any route accepts.
    public var maxBodyBytes = 16 * 1024
    /// scrypt cost for passwords and setup codes.
    public var hashCost: ScryptCost = .standard
    /// scrypt runs at once (default: one per core) and waiting (default: four per core); more
    /// are refused with 503 and Retry-After.
    public var hashConcurrency: Int?
    public var hashQueue: Int?
    /// The names clients reach this server by (the server certificate's names, `--hostname`):
    /// requests for any other Host are refused with 421.
    public var hostnames = DataFolder.defaultHostnames
    /// How long a command waits for the device's answer.
    public var commandTimeout: Duration = .seconds(10)
    /// security.txt contacts and languages, and the disclosure deadlines.
    public var disclosure = DisclosureSettings()

    public init() {}
}

/// Who is making a request, once their session token checked out.
public struct Identity: Sendable {
    public let account: AccountRecord
    public let email: EmailAddress
    public let tokenHash: String
    public var role: Role { account.role }
}

/// MACs audit records with a key derived from the KEK (HMAC-SHA-256).
public struct KEKAuditSealer: AuditSealer {
    let key: SymmetricKey
    public init(kek: KeyEncryptionKey) { key = kek.derivedKey(purpose: "audit-mac") }
    public func mac(_ data: Data) -> String { Data(HMAC<SHA256>.authenticationCode(for: data, using: key)).hex }
}

/// The common passwords Hearth refuses: Django's list of 19,640 common and breached passwords
/// (BSD licence), and the ranked dictionary for the guess estimate, shipped as resources.
public enum CommonPasswords {
    public static let list: Set<String> = {
        guard let url = Bundle.module.url(forResource: "common-passwords", withExtension: "txt"),
            let text = try? String(contentsOf: url, encoding: .utf8)
        else { return [] }
        return Set(text.split(separator: "\n").map { $0.lowercased() })
    }()

    /// zxcvbn's frequency lists (English words, names, TV and film words, passwords; MIT), merged
    /// in rank order, for the guess estimate (``PasswordStrength``).
    public static let dictionary: RankedWords? = {
        guard let url = Bundle.module.url(forResource: "password-dictionary", withExtension: "txt"),
            let text = try? String(contentsOf: url, encoding: .utf8)
        else { return nil }
        return RankedWords(rankedLines: text.split(separator: "\n"))
    }()
}

/// What a load balancer asks `/readyz` about: the parts this process starts (its listeners) are
/// expected first, then each says when it is up, and again when it stops (graceful shutdown: the
/// balancer stops sending before the listeners close).
public final class Readiness: Sendable {
    private let pending = Mutex<Set<String>>([])
    private let onReady: @Sendable () -> Void

    /// `onReady` runs once each time the last expected part comes up (systemd's `READY=1`).
    public init(expecting parts: Set<String> = [], onReady: @escaping @Sendable () -> Void = {}) {
        pending.withLock { $0 = parts }
        self.onReady = onReady
    }

    public func up(_ part: String) {
        let nowReady = pending.withLock { $0.remove(part) != nil && $0.isEmpty }
        if nowReady { onReady() }
    }
    public func down(_ part: String) { _ = pending.withLock { $0.insert(part) } }
    public var waiting: Set<String> { pending.withLock { $0 } }
}

/// The application core behind the HTTPS API and pages: accounts, sessions, the first operator's
/// set-up link, product models and device claims. Protocol-free: routes and pages call it.
public final class Hearth: Sendable {
    public let store: any HearthStore
    public let settings: HearthSettings
    public let time: any TimeSource
    let kek: KeyEncryptionKey
    let emailIndex: BlindIndex
    let hasher: SecretHasher
    let passwords: PasswordPolicy
    let throttles: Throttles
    let hashGate: HashGate
    let formKey: SymmetricKey
    let decoyHash: String
    let receiptSigner: DeploymentSigner
    /// Device readings; nil when this process runs no gateway.
    public let telemetry: (any TelemetryStore)?
    /// Delivers commands to devices (the MQTT gateway); nil when this process runs none.
    public let commands: (any DeviceCommandChannel)?
    /// The update repository, rollouts and support periods; nil when this process runs none.
    public let updates: Updates?
    /// The per-owner keys `telemetry` seals readings under (the same instance), told when a device
    /// changes hands and when an owner's key is destroyed; nil when readings are kept in clear.
    public let readingKeys: DataKeys?
    /// When this process started serving (the CSAF metadata's date while no advisory exists).
    public let startedAt: Date
    /// What `/metrics` shows (the HTTP middleware and the alert service record into it).
    public let metrics: HearthMetrics
    /// The listeners `/readyz` waits for.
    public let readiness: Readiness
    /// What `GET /api/v1/assessment` assesses; set by the server once it has its data folder.
    let assessments = Mutex<AssessmentService?>(nil)

    public init(
        store: any HearthStore, kek: KeyEncryptionKey, settings: HearthSettings,
        time: any TimeSource = SystemTimeSource(),
        telemetry: (any TelemetryStore)? = nil, readingKeys: DataKeys? = nil,
        commands: (any DeviceCommandChannel)? = nil, updates: Updates? = nil,
        metrics: HearthMetrics = HearthMetrics(), readiness: Readiness = Readiness()
    ) throws {
        let passwords = PasswordPolicy(blocklist: CommonPasswords.list, dictionary: CommonPasswords.dictionary)
        guard passwords.blocklist.count > 10_000, (passwords.dictionary?.count ?? 0) > 80_000 else {
            throw HearthError(.internal, "the common-password list is missing from the build")
        }
        self.store = store
        self.settings = settings
        self.time = time
        self.kek = kek
        self.passwords = passwords
        emailIndex = BlindIndex(kek: kek, purpose: "email-index")
        hasher = SecretHasher(cost: settings.hashCost)
        throttles = Throttles(store: store, kek: kek)
        formKey = kek.derivedKey(purpose: "form-token")
        let cores = System.coreCount
        hashGate = HashGate(running: settings.hashConcurrency ?? cores, queued: settings.hashQueue ?? 4 * cores)
        decoyHash = hasher.decoy()
        receiptSigner = try DeploymentSigner.receipts(kek: kek)
        self.telemetry = telemetry
        self.readingKeys = readingKeys
        self.commands = commands
        self.updates = updates
        startedAt = time.now()
        self.metrics = metrics
        self.readiness = readiness
    }

    /// `/readyz`: nil when the database takes a write and every expected listener is up; else
    /// what is not ready.
    public func notReady() async -> String? {
        let waiting = readiness.waiting
        if !waiting.isEmpty { return "waiting for \(waiting.sorted().joined(separator: ", "))" }
        do { try await store.checkWritable(at: time.now()) } catch { return "the database does not take writes" }
        return nil
    }

    /// Runs CPU-heavy work (scrypt) off the event loops and the cooperative pool, on NIO's blocking
    /// pool, through ``HashGate`` (bounded concurrency and queue; overload is shed with 503).
    func offload<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await hashGate.enter()
        do {
            let value = try await NIOThreadPool.singleton.runIfActive(work)
            await hashGate.leave()
            return value
        } catch {
            await hashGate.leave()
            throw error
        }
    }

    /// The hidden form token for a browser's `__Host-hearth_form` cookie value (HMAC-SHA-256 with a
    /// key derived from the KEK), so the token cannot be made without the server's key.
    func formToken(cookie: String) -> String {
        Data(HMAC<SHA256>.authenticationCode(for: Data("form|\(cookie)".utf8), using: formKey)).hex
    }

    /// Runs `body` as one throttled attempt under `keys` (see ``Throttles``): reserved before the
    /// work, settled after it as a failure when it threw one of `codes` (or always, when every
    /// attempt counts, as for sign-ups and reports).
    func throttled<T: Sendable>(
        _ keys: [Throttles.Key], failingOn codes: Set<HearthError.Code>, everyAttemptCounts: Bool = false,
        _ body: () async throws -> T
    ) async throws -> T {
        try await throttles.reserve(keys, now: time.now())
        do {
            let value = try await body()
            // A settle that fails (the database briefly away) leaves the reservation to go stale.
            try? await throttles.settle(keys, failed: everyAttemptCounts, now: time.now())
            return value
        } catch {
            let failed = everyAttemptCounts || (error as? HearthError).map { codes.contains($0.code) } == true
            try? await throttles.settle(keys, failed: failed, now: time.now())
            throw error
        }
    }

    func hash(_ secret: String) async throws -> String {
        let hasher = self.hasher
        return try await offload { try hasher.hash(secret) }
    }

    func verify(_ secret: String, _ encoded: String) async throws -> Bool {
        try await offload { SecretHasher.verify(secret, against: encoded) }
    }

    // MARK: The first operator

    /// Issues a new one-time set-up link if no operator exists yet; returns nil otherwise.
    /// Any earlier link stops working.
    public func issueSetupLinkIfNeeded(baseURL: String) async throws -> String? {
        guard try await !store.hasOperator() else { return nil }
        let token = SecureToken.generate()
        let now = time.now()
        try await store.replaceSetupLink(
            SetupLinkRecord(
                tokenHash: SecureToken.storageHash(token), createdAt: now,
                expiresAt: now.addingTimeInterval(settings.setupLinkLifetime)),
            audit: AuditEntry(.setupLinkIssued, detail: "valid for \(Int(settings.setupLinkLifetime)) s", at: now)
        )
        return "\(baseURL)/setup/\(token)"
    }

    /// Creates the first operator account from a set-up link token. Works once.
    public func redeemSetupLink(token: String, email rawEmail: String, password: String, source: String) async throws
        -> AccountRecord
    {
        try await throttled([.init(.perSource, source)], failingOn: [.expired]) {
            guard SecureToken.isWellFormed(token) else {
                throw HearthError(.expired, "this set-up link is used, expired or unknown")
            }
            let account = try await newAccount(role: .operator, email: rawEmail, password: password)
            let now = time.now()
            try await store.redeemSetupLink(
                tokenHash: SecureToken.storageHash(token), now: now, creating: account,
                audit: [
                    AuditEntry(.setupLinkUsed, actor: account.id.description, detail: "from \(source)", at: now),
                    AuditEntry(
                        .accountCreated, actor: account.id.description, subject: account.id.description,
                        detail: "role operator", at: now),
                ]
            )
            return account
        }
    }

    // MARK: Accounts and sessions

    /// Validates and hashes a new account's credentials (no storage yet).
    func newAccount(role: Role, email rawEmail: String, password: String, recoveryHash: String? = nil) async throws
        -> AccountRecord
    {
        let email = try EmailAddress(rawEmail)
        try checkPassword(password, email: email, field: "password")
        let id = AccountID()
        return AccountRecord(
            id: id, role: role, emailIndex: emailIndex.index(email.rawValue),
            emailSealed: try Envelope.seal(Data(email.rawValue.utf8), context: "account:\(id):email", kek: kek),
            passwordHash: try await hash(password), createdAt: time.now(), recoveryHash: recoveryHash
        )
    }

    /// The password policy, with the account's address as words a guesser would try first.
    func checkPassword(_ password: String, email: EmailAddress, field: String) throws {
        let domainWords =
            email.rawValue.split(separator: "@").last.map { $0.split(separator: ".").map(String.init) } ?? []
        try passwords.check(
            password, field: field, contextWords: [email.localPart, email.rawValue] + domainWords.dropLast())
    }

    /// Owner sign-up. Every sign-up counts against the source, successful or not: this bounds
    /// account floods. ``register(email:password:source:)`` also gives the account a recovery code.
    public func signUp(email: String, password: String, source: String, recoveryHash: String? = nil) async throws
        -> AccountRecord
    {
        try await throttled([.init(.signUpPerSource, source)], failingOn: [], everyAttemptCounts: true) {
            let account = try await newAccount(
                role: .owner, email: email, password: password, recoveryHash: recoveryHash)
            do {
                try await store.createAccount(
                    account,
                    audit: AuditEntry(
                        .accountCreated, actor: account.id.description, subject: account.id.description,
                        detail: "role owner, from \(source)", at: time.now()))
            } catch let error as HearthError where error.code == .conflict {
                throw HearthError(
                    .conflict, field: "email", "an account with this e-mail address exists; sign in instead")
            }
            return account
        }
    }

    /// Signs in; returns the session token (shown once, stored only hashed). Throttled per source,
    /// per account and source (5 free), and per account from everywhere (a far higher ceiling).
    public func signIn(email rawEmail: String, password: String, source: String) async throws -> (
        token: String, identity: Identity, expiresAt: Date
    ) {
        let email = try? EmailAddress(rawEmail)
        let index = email.map { emailIndex.index($0.rawValue) } ?? "invalid"
        let keys: [Throttles.Key] = [
            .init(.perSource, source), .init(.signInPerAccountAndSource, index + " " + source),
            .init(.signInPerAccount, index),
        ]
        return try await throttled(keys, failingOn: [.unauthorized]) {
            let account = try await store.account(emailIndex: index)
            // Unknown accounts cost the same scrypt work as known ones.
            let ok = try await verify(password, account?.passwordHash ?? decoyHash) && account != nil
            let now = time.now()
            guard ok, let account, let email else {
                try await store.appendAudit(
                    AuditEntry(.signInFailed, actor: account?.id.description, detail: "from \(source)", at: now))
                throw HearthError(.unauthorized, "the e-mail address or password is wrong")
            }
            let token = SecureToken.generate()
            let session = SessionRecord(
                tokenHash: SecureToken.storageHash(token), account: account.id, createdAt: now,
                expiresAt: now.addingTimeInterval(settings.sessionLifetime))
            try await store.createSession(
                session, audit: AuditEntry(.signIn, actor: account.id.description, detail: "from \(source)", at: now))
            return (token, Identity(account: account, email: email, tokenHash: session.tokenHash), session.expiresAt)
        }
    }

    /// Resolves a session token; nil if unknown, malformed or expired.
    public func authenticate(token: String) async throws -> Identity? {
        guard SecureToken.isWellFormed(token) else { return nil }
        let hash = SecureToken.storageHash(token)
        guard let session = try await store.session(tokenHash: hash), session.expiresAt > time.now(),
            let account = try await store.account(id: session.account)
        else { return nil }
        let email = try EmailAddress(
            String(
                decoding: try Envelope.open(account.emailSealed, context: "account:\(account.id):email", kek: kek),
                as: UTF8.self))
        return Identity(account: account, email: email, tokenHash: hash)
    }

    public func signOut(_ identity: Identity) async throws {
        try await store.deleteSession(
            tokenHash: identity.tokenHash,
            audit: AuditEntry(.signOut, actor: identity.account.id.description, at: time.now()))
    }

    /// Ends every session of the caller's account, on every browser and API client.
    @discardableResult
    public func signOutEverywhere(_ identity: Identity) async throws -> Int {
        try await store.deleteSessions(
            of: identity.account.id,
            audit: AuditEntry(.signOutEverywhere, actor: identity.account.id.description, at: time.now()))
    }

    /// The caller's sessions, newest first; `current` marks the one making this request.
    public func sessions(of identity: Identity) async throws -> [(session: SessionRecord, current: Bool)] {
        try await store.sessions(of: identity.account.id).filter { $0.expiresAt > time.now() }.map {
            ($0, $0.tokenHash == identity.tokenHash)
        }
    }

    // MARK: Product models

    /// Product models and revocation, shared with the CLI.
    var fleet: Fleet { Fleet(store: store, time: time) }

    public func createModel(_ json: JSONValue, by identity: Identity) async throws -> ProductModel {
        guard identity.role == .operator else { throw HearthError(.forbidden, "only operators define product models") }
        return try await fleet.createModel(json, actor: identity.account.id.description)
    }

    // MARK: Device set-up

    /// Claims an unclaimed device with the serial and setup code from its label. A wrong code and an
    /// unknown serial get the same answer after the same work (no enumeration). Failures are
    /// throttled per device and account, per device from every account (a far higher ceiling, so
    /// a stranger's wrong codes never block the label's holder), per account and per source.
    public func claim(serial rawSerial: String, setupCode rawCode: String, by identity: Identity, source: String)
        async throws -> DeviceRecord
    {
        let serial = try DeviceSerial(rawSerial)
        let code = try SetupCode(rawCode)
        let owner = identity.account.id
        let keys: [Throttles.Key] = [
            .init(.claimPerDeviceAndAccount, serial.rawValue + " " + owner.description),
            .init(.claimPerDevice, serial.rawValue),
            .init(.claimPerAccount, owner.description), .init(.perSource, source),
        ]
        return try await throttled(keys, failingOn: [.claimRejected]) {
            let device = try await store.device(serial)
            let matches = try await verify(code.digits, device?.setupCodeHash ?? decoyHash) && device != nil
            if let device, matches, device.owner == owner { return device }
            let claimedAt = time.now()
            // A disposed (revoked) device can never connect: it is not offered to anyone.
            if let device, matches, device.owner == nil, device.revokedAt == nil,
                try await store.claimDevice(
                    serial, owner: owner, emailIndex: identity.account.emailIndex, at: claimedAt,
                    audit: AuditEntry(
                        .deviceClaimed, actor: owner.description, subject: serial.rawValue, detail: "from \(source)",
                        at: claimedAt))
            {
                readingKeys?.forget(serial)
                var claimed = device
                claimed.owner = owner
                claimed.claimedAt = claimedAt
                // A new owner has agreed to nothing optional yet, whatever the last one chose.
                if let model = try await store.model(device.model) {
                    await policyChanged(serial, DevicePolicy(model: model, granted: []))
                }
                return claimed
            }
            try await store.appendAudit(
                AuditEntry(
                    .deviceClaimFailed, actor: owner.description, subject: serial.rawValue, detail: "from \(source)",
                    at: claimedAt))
            throw HearthError(
                .claimRejected, "no unclaimed device matches this serial and setup code; check both on the label")
        }
    }

    public func devices(of identity: Identity) async throws -> [DeviceRecord] {
        try await store.devices(ownedBy: identity.account.id)
    }

    /// The caller's device. Someone else's device and an unknown serial get the same answer.
    public func ownedDevice(_ rawSerial: String, by identity: Identity) async throws -> DeviceRecord {
        guard let serial = try? DeviceSerial(rawSerial), let device = try await store.device(serial),
            device.owner == identity.account.id
        else {
            throw HearthError(.notFound, field: "serial", "you have no device with this serial")
        }
        return device
    }

    func requireTelemetry() throws -> any TelemetryStore {
        guard let telemetry else { throw HearthError(.unavailable, "this server runs no device gateway") }
        return telemetry
    }

    public func latestReading(_ rawSerial: String, by identity: Identity) async throws -> TelemetryRecord? {
        let device = try await ownedDevice(rawSerial, by: identity)
        return try await latest(device)
    }

    /// A page of readings received in `from ..< to`, after `cursor`.
    public func readings(
        _ rawSerial: String, from: Date, to: Date, after cursor: Int64?, limit: Int, by identity: Identity
    ) async throws -> [TelemetryRecord] {
        let device = try await ownedDevice(rawSerial, by: identity)
        guard (1...1000).contains(limit) else { throw HearthError.invalid("limit", "between 1 and 1000") }
        guard from < to else { throw HearthError.invalid("from", "must be before 'to'") }
        // Only what arrived since this owner claimed it: a previous owner's history is not theirs.
        let since = max(from, device.claimedAt ?? from)
        guard since < to else { return [] }
        return try await requireTelemetry().readings(device.serial, from: since, to: to, after: cursor, limit: limit)
    }

    /// The device's latest reading, if it arrived since its current owner claimed it.
    public func latest(_ device: DeviceRecord) async throws -> TelemetryRecord? {
        guard let record = try await telemetry?.latest(device.serial) else { return nil }
        if let claimedAt = device.claimedAt, record.reading.receivedAt < claimedAt { return nil }
        return record
    }

    /// Checks a command against the device's model, sends it, and waits for the device's answer.
    public func sendCommand(to rawSerial: String, name: String, parameters: [String: JSONValue], by identity: Identity)
        async throws -> CommandOutcome
    {
        let device = try await ownedDevice(rawSerial, by: identity)
        if device.quarantine != nil {
            throw HearthError(
                .conflict, field: "serial", "the device is quarantined: it takes no commands until released")
        }
        guard let model = try await store.model(device.model) else {
            throw HearthError(.integrity, "the device's product model is missing")
        }
        do {
            _ = try CommandMessage.validate(name, parameters: parameters, model: model)
        } catch {
            throw HearthError(
                error.kind == .unknownField ? .unknownField : .invalidInput, field: error.field, error.message)
        }
        guard let commands else { throw HearthError(.unavailable, "this server runs no device gateway") }
        try await store.appendAudit(
            AuditEntry(
                .commandSent, actor: identity.account.id.description, subject: device.serial.rawValue, detail: name,
                at: time.now()))
        return await commands.send(
            command: name, parameters: parameters, to: device.serial, timeout: settings.commandTimeout)
    }

    /// Revokes a device's certificate (operators): the gateway refuses it from then on.
    public func revoke(_ rawSerial: String, by identity: Identity) async throws -> Bool {
        guard identity.role == .operator else { throw HearthError(.forbidden, "this needs the operator role") }
        guard let serial = try? DeviceSerial(rawSerial) else {
            throw HearthError(.notFound, field: "serial", "no such device")
        }
        return try await fleet.revoke(serial, actor: identity.account.id.description)
    }
}

/// Throttle states, one policy per purpose, kept in the store: shared by every node of the
/// deployment and kept across restarts, so neither another node nor a restart resets a guesser's
/// count.
///
/// Every throttled operation is one atomic step (``Hearth/throttled(_:failingOn:everyAttemptCounts:_:)``):
/// its attempt is reserved under every key it touches, all or none, in one transaction, before
/// any work; its outcome settles the reservation afterwards. Parallel requests, on one node or
/// several, cannot all pass a check that none of them has yet counted against. A reservation
/// its node never settled (the node died mid-request) stops counting after `staleAfter`.
struct Throttles: Sendable {
    enum Purpose: String, CaseIterable {
        case perSource, signInPerAccountAndSource, signInPerAccount, signUpPerSource, claimPerDeviceAndAccount,
            claimPerDevice, claimPerAccount, reportPerSource

        var policy: ThrottlePolicy {
            switch self {
            case .perSource: .perSource
            case .signInPerAccountAndSource: .signInPerAccountAndSource
            case .signInPerAccount: .signInPerAccount
            case .signUpPerSource: ThrottlePolicy(freeFailures: 10, baseDelay: 60, maxDelay: 3_600, forgetAfter: 86_400)
            case .claimPerDeviceAndAccount: .claimPerDeviceAndAccount
            case .claimPerDevice: .claimPerDevice
            case .claimPerAccount: .claimPerAccount
            // Every report counts: 5 a day from one address freely, then a wait from a minute
            // doubling to an hour.
            case .reportPerSource: ThrottlePolicy(freeFailures: 5, baseDelay: 60, maxDelay: 3_600, forgetAfter: 86_400)
            }
        }
    }

    struct Key: Sendable, Hashable {
        let purpose: Purpose
        let key: String
        init(_ purpose: Purpose, _ key: String) {
            self.purpose = purpose
            self.key = key
        }
    }

    /// How long an unsettled reservation counts: far longer than any request.
    static let staleAfter: TimeInterval = 120
    /// The longest `forgetAfter` of every policy: idle states older than this are deleted.
    static let forgetAfter: TimeInterval = Purpose.allCases.map(\.policy.forgetAfter).max() ?? 86_400

    let store: any HearthStore
    let index: BlindIndex

    init(store: any HearthStore, kek: KeyEncryptionKey) {
        self.store = store
        index = BlindIndex(kek: kek, purpose: "throttle-key")
    }

    /// The stored name of a key: its purpose and a keyed hash of the key (source addresses are
    /// personal data: the database holds none of them in clear).
    func name(_ k: Key) -> String { k.purpose.rawValue + ":" + index.index(k.key) }

    static func current(_ stored: StoredThrottle?, now: Date) -> ThrottleState {
        guard let stored else { return ThrottleState() }
        if let at = stored.reservedAt, now.timeIntervalSince(at) > staleAfter {
            return stored.state.withoutAttemptsInFlight
        }
        return stored.state
    }

    /// Reserves one attempt under every key, or none: throws ``HearthError/Code/throttled`` with
    /// the longest wait if any key must wait.
    func reserve(_ keys: [Key], now: Date) async throws {
        let names = keys.map(name)
        try await store.updateThrottles(names) { stored in
            var wait = 0
            for (k, name) in zip(keys, names) {
                if case .wait(let seconds) = Self.current(stored[name], now: now).admits(
                    now: now, policy: k.purpose.policy)
                {
                    wait = max(wait, seconds)
                }
            }
            guard wait == 0 else {
                throw HearthError(.throttled, "too many attempts; try again in \(wait) s", retryAfter: wait)
            }
            var changes: [String: StoredThrottle?] = [:]
            for (k, name) in zip(keys, names) {
                var state = Self.current(stored[name], now: now)
                _ = state.reserve(now: now, policy: k.purpose.policy)
                changes[name] = StoredThrottle(state: state, reservedAt: now)
            }
            return ((), changes)
        }
    }

    /// Settles attempts reserved by ``reserve(_:now:)``; a key left with nothing to remember is deleted.
    func settle(_ keys: [Key], failed: Bool, now: Date) async throws {
        let names = keys.map(name)
        try await store.updateThrottles(names) { stored in
            var changes: [String: StoredThrottle?] = [:]
            for (k, name) in zip(keys, names) {
                var state = Self.current(stored[name], now: now)
                state.settle(failed: failed, now: now, policy: k.purpose.policy)
                let forget = state.failures == 0 && state.isIdle(now: now, policy: k.purpose.policy)
                changes[name] = forget ? .some(nil) : StoredThrottle(state: state, reservedAt: stored[name]?.reservedAt)
            }
            return ((), changes)
        }
    }
}

/// Bounds the concurrent scrypt work (passwords and setup codes): at most `running` at once on
/// NIO's blocking pool and `queued` waiting; past that a request is shed at once with 503 and
/// Retry-After instead of joining a queue that grows until every sign-in takes half a minute.
actor HashGate {
    let running: Int
    let queued: Int
    private var active = 0
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(running: Int, queued: Int) {
        self.running = max(1, running)
        self.queued = max(0, queued)
    }

    func enter() async throws {
        if active < running {
            active += 1
            return
        }
        guard waiting.count < queued else {
            throw HearthError(
                .unavailable, "the server is busy checking passwords; try again in a moment", retryAfter: 1)
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    /// Hands the slot to the next waiter, if any.
    func leave() {
        if waiting.isEmpty { active -= 1 } else { waiting.removeFirst().resume() }
    }

    var load: (active: Int, waiting: Int) { (active, waiting.count) }
}

import Crypto
import Foundation
import HearthCore
import HearthCrypto
import HearthStorage

/// How long a requested account deletion waits, cancellable, before it is carried out.
let deletionGrace: TimeInterval = 7 * 86_400

/// Signs what the deployment vouches for (deletion receipts, assessments) with a P-256 key derived
/// from the KEK (HKDF, one key per purpose), so a reader checks it with the public key
/// (`GET /api/v1/deletion-receipt-key`, `GET /api/v1/assessment-key`) without trusting whoever
/// shows it, and no new secret has to be stored.
public struct DeploymentSigner: Sendable {
    let key: P256.Signing.PrivateKey
    /// The member of the signed object that holds the document (`receipt`, `assessment`).
    let member: String

    init(kek: KeyEncryptionKey, purpose: String, member: String) throws {
        let raw = kek.derivedKey(purpose: purpose).withUnsafeBytes { Data($0) }
        key = try P256.Signing.PrivateKey(rawRepresentation: raw)
        self.member = member
    }

    static func receipts(kek: KeyEncryptionKey) throws -> DeploymentSigner {
        try DeploymentSigner(kek: kek, purpose: "deletion-receipt-signing", member: "receipt")
    }

    public static func assessments(kek: KeyEncryptionKey) throws -> DeploymentSigner {
        try DeploymentSigner(kek: kek, purpose: "assessment-signing", member: "assessment")
    }

    public var publicKeyPEM: String { key.publicKey.pemRepresentation }

    /// DER ECDSA-SHA256 over exactly `bytes` (a detached signature `openssl dgst -verify` checks).
    public func signature(for bytes: Data) throws -> Data { try key.signature(for: bytes).derRepresentation }

    /// `{MEMBER: document, "signature": base64 DER ECDSA-SHA256 over the document's canonical JSON text}`.
    public func sign(_ document: JSONValue) throws -> JSONValue {
        .object([
            member: document, "signature": .string(try signature(for: document.serialized()).base64EncodedString()),
        ])
    }

    /// Whether `signature` (DER) over `bytes` verifies with the public key in `pem`.
    public static func verify(_ signature: Data, over bytes: Data, publicKeyPEM pem: String) -> Bool {
        guard let key = try? P256.Signing.PublicKey(pemRepresentation: pem),
            let parsed = try? P256.Signing.ECDSASignature(derRepresentation: signature)
        else { return false }
        return key.isValidSignature(parsed, for: bytes)
    }
}

extension Hearth {
    /// Asks for the caller's account to be deleted (owners; needs the password). Carried out after
    /// the grace period unless cancelled. Returns when, and the token that fetches the signed receipt
    /// (shown once: the account that could show it will be gone).
    public func requestDeletion(password: String, by identity: Identity, source: String) async throws -> (
        after: Date, receiptToken: String
    ) {
        guard identity.role == .owner else {
            throw HearthError(.forbidden, "an operator account is removed by another operator, not deleted by itself")
        }
        let account = identity.account
        try await confirmPassword(password, of: identity, source: source, field: "password")
        let now = time.now()
        let token = SecureToken.generate()
        let request = DeletionRequest(
            requestedAt: now, after: now.addingTimeInterval(deletionGrace),
            receiptTokenHash: SecureToken.storageHash(token))
        guard
            try await store.setDeletion(
                account.id, request,
                audit: AuditEntry(
                    .deletionRequested, actor: account.id.description, subject: account.id.description,
                    detail: "carried out after \(request.after.formatted(Date.ISO8601FormatStyle()))", at: now))
        else { throw HearthError(.conflict, "your account's deletion is already requested") }
        return (request.after, token)
    }

    /// Cancels the caller's pending deletion.
    public func cancelDeletion(by identity: Identity) async throws {
        guard
            try await store.setDeletion(
                identity.account.id, nil,
                audit: AuditEntry(
                    .deletionCancelled, actor: identity.account.id.description,
                    subject: identity.account.id.description, at: time.now()))
        else { throw HearthError(.conflict, "your account's deletion is not requested") }
    }

    /// Carries out every deletion whose grace period is over: each device the owner holds is
    /// released with its history deleted, the readings of devices they held before are deleted,
    /// then (one transaction) their sessions, consents, ownership history and account, with a
    /// signed receipt stored for the token. Audit entries about the account stay (the security
    /// log), holding its random id and no e-mail. Returns how many accounts went.
    @discardableResult
    public func carryOutDeletions() async throws -> Int {
        var deleted = 0
        for account in try await store.deletionsDue(now: time.now(), limit: 100) {
            guard let request = account.deletion else { continue }
            var devices = 0
            for device in try await store.devices(ownedBy: account.id) {
                _ = try await release(device, reason: .accountDeleted, keepHistory: false, actor: nil)
                devices += 1
            }
            // Every earlier hold's readings, kept or not (a purge a crash left undone included).
            let holds = try await store.ownerships(of: account.id)
            for hold in holds { try await purge(hold) }
            var consents = 0
            for serial in Set(holds.map(\.serial)) {
                consents += try await store.consents(serial, owner: account.id).count
            }
            let sessions = try await store.sessions(of: account.id).count
            let now = time.now()
            let receipt = try receiptSigner.sign([
                "account": .string(account.id.description), "requestedAt": .string(iso(request.requestedAt)),
                "graceEnded": .string(iso(request.after)), "deletedAt": .string(iso(now)),
                "deleted": [
                    "account": "e-mail address, password hash, recovery code hash",
                    "devicesReleased": .number(Double(devices)),
                    "deviceHoldsWithReadings": .number(Double(holds.count)),
                    "consentChoices": .number(Double(consents)), "sessions": .number(Double(sessions)),
                    "dataKey": .string(
                        "destroyed: readings sealed under it, wherever copies of them remain (the database's log, backups), can no longer be read"
                    ),
                ],
                "kept": .string(
                    "the audit log's entries about this account (its random id, times, and the network addresses of sign-ins), as the security log"
                ),
                "issuer": .string(settings.hostnames.first ?? "hearth"),
            ])
            if try await store.deleteAccount(
                account.id, receipt: receipt.text,
                audit: AuditEntry(
                    .accountDeleted, subject: account.id.description,
                    detail: "\(devices) devices released, \(holds.count) holds' readings deleted, data key destroyed",
                    at: now))
            {
                readingKeys?.destroyed(owner: account.id)
                deleted += 1
            }
        }
        return deleted
    }

    /// A deletion's signed receipt, or where it stands while the grace period runs.
    public func deletionReceipt(token: String) async throws -> JSONValue {
        guard SecureToken.isWellFormed(token) else {
            throw HearthError(.notFound, "no deletion receipt for this token")
        }
        let hash = SecureToken.storageHash(token)
        if let text = try await store.deletionReceipt(tokenHash: hash) { return try JSONValue.parse(Array(text.utf8)) }
        throw HearthError(.notFound, "no deletion receipt for this token yet: the deletion is pending or unknown")
    }

    public var receiptPublicKeyPEM: String { receiptSigner.publicKeyPEM }

    func iso(_ date: Date) -> String { date.formatted(Date.ISO8601FormatStyle()) }
}

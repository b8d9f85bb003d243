import Foundation
import HearthCore
import HearthCrypto
import HearthStorage

/// Changing and recovering credentials (EN 303 645 5.1-4), without e-mail infrastructure: a
/// recovery code shown once at sign-up (and whenever the owner makes a new one) resets a forgotten
/// password; a change needs the current password; both end other sessions.
extension Hearth {
    /// Owner sign-up, returning the account's recovery code (shown once, stored only hashed).
    public func register(email: String, password: String, source: String) async throws -> (
        account: AccountRecord, recoveryCode: String
    ) {
        let code = RecoveryCode.generate()
        let account = try await signUp(
            email: email, password: password, source: source,
            recoveryHash: RecoveryCode.storageHash(RecoveryCode.canonical(code) ?? code))
        return (account, code)
    }

    /// Sets a new password; the current one is needed (throttled like a sign-in). Every other
    /// session of the account ends; the caller's stays. Returns how many ended.
    @discardableResult
    public func changePassword(current: String, new: String, by identity: Identity, source: String) async throws -> Int
    {
        let account = identity.account
        let hash = try await confirmPassword(current, of: identity, source: source, field: "currentPassword")
        guard current != new else {
            throw HearthError.invalid("newPassword", "choose a password other than the current one")
        }
        try checkPassword(new, email: identity.email, field: "newPassword")
        let before = try await store.sessions(of: account.id).count
        guard
            try await store.changePassword(
                account.id, from: hash, to: try await self.hash(new), keeping: identity.tokenHash,
                audit: AuditEntry(
                    .passwordChanged, actor: account.id.description, subject: account.id.description,
                    detail: "other sessions ended", at: time.now()))
        else {
            throw HearthError(.conflict, "the password was changed meanwhile; sign in again")
        }
        return max(0, before - 1)
    }

    /// Makes a new recovery code (the old one stops working); needs the password.
    public func newRecoveryCode(password: String, by identity: Identity, source: String) async throws -> String {
        let account = identity.account
        try await confirmPassword(password, of: identity, source: source, field: "password")
        let code = RecoveryCode.generate()
        try await store.setRecoveryHash(
            account.id, RecoveryCode.storageHash(RecoveryCode.canonical(code) ?? code),
            audit: AuditEntry(
                .recoveryCodeIssued, actor: account.id.description, subject: account.id.description, at: time.now()))
        return code
    }

    /// Resets a forgotten password with the account's recovery code, which then stops working:
    /// every session ends, and a new code is returned (shown once). Throttled like a sign-in; an
    /// unknown address and a wrong code get the same answer.
    public func recover(email rawEmail: String, recoveryCode: String, newPassword: String, source: String)
        async throws -> String
    {
        let email = try? EmailAddress(rawEmail)
        let index = email.map { emailIndex.index($0.rawValue) } ?? "invalid"
        let keys: [Throttles.Key] = [
            .init(.perSource, source), .init(.signInPerAccountAndSource, index + " " + source),
            .init(.signInPerAccount, index),
        ]
        let wrong = HearthError(.unauthorized, field: "recoveryCode", "the e-mail address or recovery code is wrong")
        let (account, used) = try await throttled(keys, failingOn: [.unauthorized]) {
            () -> (AccountRecord, String) in
            let account = try await store.account(emailIndex: index)
            let used = RecoveryCode.canonical(recoveryCode).map(RecoveryCode.storageHash)
            guard let account, let used, let stored = account.recoveryHash,
                Self.equalHashes(stored, used)
            else {
                try await store.appendAudit(
                    AuditEntry(
                        .signInFailed, actor: account?.id.description, detail: "recovery code, from \(source)",
                        at: time.now()))
                throw wrong
            }
            return (account, used)
        }
        guard let email else { throw wrong }
        try checkPassword(newPassword, email: email, field: "newPassword")
        let code = RecoveryCode.generate()
        guard
            try await store.recoverAccount(
                account.id, used: used, passwordHash: try await hash(newPassword),
                recoveryHash: RecoveryCode.storageHash(RecoveryCode.canonical(code) ?? code),
                audit: AuditEntry(
                    .accountRecovered, actor: account.id.description, subject: account.id.description,
                    detail: "password reset with the recovery code, from \(source); every session ended",
                    at: time.now()))
        else {
            // Used meanwhile by a parallel request: a code works once.
            throw wrong
        }
        return code
    }

    /// Checks the signed-in caller's password again, for a change that needs it; throttled like a
    /// sign-in (per source, per account and source, per account). Returns the stored hash.
    @discardableResult
    func confirmPassword(_ password: String, of identity: Identity, source: String, field: String) async throws
        -> String
    {
        let account = identity.account
        let keys: [Throttles.Key] = [
            .init(.perSource, source), .init(.signInPerAccountAndSource, account.emailIndex + " " + source),
            .init(.signInPerAccount, account.emailIndex),
        ]
        return try await throttled(keys, failingOn: [.unauthorized]) {
            guard let stored = try await store.account(id: account.id), try await verify(password, stored.passwordHash)
            else {
                throw HearthError(
                    .unauthorized, field: field,
                    field == "password" ? "the password is wrong" : "the current password is wrong")
            }
            return stored.passwordHash
        }
    }

    /// Compares two hex hashes in time independent of where they differ.
    static func equalHashes(_ a: String, _ b: String) -> Bool {
        let (x, y) = (Array(a.utf8), Array(b.utf8))
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

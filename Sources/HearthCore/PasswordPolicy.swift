/// Human passwords per NIST SP 800-63B (rev. 4): length, a blocklist and context words, and
/// nothing else — no composition rules, no forced change (Code of Practice guideline 1).
public struct PasswordPolicy: Sendable {
    /// 800-63B-4 §3.1.1.2: at least 15 characters when the password is the only factor.
    public var minimumLength = 15
    /// Long passphrases are welcome; the cap only bounds the work of hashing.
    public var maximumLength = 256
    /// Common and breached passwords, lower-cased.
    public let blocklist: Set<String>
    /// Words that belong to this service; a password built on them is guessable.
    public var serviceWords: [String] = ["hearth"]

    public init(blocklist: Set<String>) {
        self.blocklist = blocklist
    }

    /// Throws ``HearthError/Code/weakPassword`` with a reason a person can act on.
    public func check(_ password: String, field: String = "password", contextWords: [String] = []) throws {
        let length = password.count
        guard length >= minimumLength else {
            throw HearthError(.weakPassword, field: field, "use at least \(minimumLength) characters; a few unrelated words make a good passphrase")
        }
        guard length <= maximumLength else {
            throw HearthError(.weakPassword, field: field, "use at most \(maximumLength) characters")
        }
        guard !password.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw HearthError(.invalidInput, field: field, "a password cannot contain control characters")
        }
        let lower = password.lowercased()
        if Set(lower).count <= 3 {
            throw HearthError(.weakPassword, field: field, "this password repeats too few characters to be hard to guess")
        }
        // The list entry itself, or the entry with digits and punctuation added at the ends.
        let core = lower.trimmingCharacters(in: .decimalDigits.union(.punctuationCharacters).union(.whitespaces))
        if blocklist.contains(lower) || blocklist.contains(core) || isRepetition(of: core) {
            throw HearthError(.weakPassword, field: field, "this password is on a list of common or breached passwords")
        }
        let context = (serviceWords + contextWords).map { $0.lowercased() }.filter { $0.count >= 3 }
        for word in context where lower.contains(word) {
            let rest = lower.replacingOccurrences(of: word, with: "")
            if rest.count < 8 {
                throw HearthError(.weakPassword, field: field, "this password is too close to your e-mail address or the service's name")
            }
        }
    }

    /// `passwordpasswordpassword` is as weak as `password`.
    private func isRepetition(of text: String) -> Bool {
        let chars = Array(text)
        guard chars.count >= 2 else { return false }
        for period in 1...(chars.count / 2) where chars.count % period == 0 {
            let unit = String(chars[0..<period])
            if String(repeating: unit, count: chars.count / period) == text, blocklist.contains(unit) || period <= 3 {
                return true
            }
        }
        return false
    }
}

import Foundation

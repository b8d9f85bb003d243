import Foundation

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
    /// Ranked English words, names and common passwords for ``PasswordStrength``; nil skips the
    /// estimate (the blocklist and the other checks still apply).
    public let dictionary: RankedWords?
    /// The fewest estimated guesses accepted: 10^10, zxcvbn's "very unguessable" (score 4), far
    /// beyond what an online attack gets through the sign-in throttles and what a stolen hash
    /// yields quickly under scrypt.
    public var minimumGuesses = 1e10
    /// Passwords published as examples, which every breach corpus now holds (xkcd 936's
    /// passphrase and its counter-example), compared without spaces.
    public static let publishedExamples: Set<String> = ["correcthorsebatterystaple", "tr0ub4dor&3", "troub4dor&3"]

    public init(blocklist: Set<String>, dictionary: RankedWords? = nil) {
        self.blocklist = blocklist
        self.dictionary = dictionary
    }

    /// Throws ``HearthError/Code/weakPassword`` with a reason a person can act on.
    public func check(_ password: String, field: String = "password", contextWords: [String] = []) throws {
        let length = password.count
        guard length >= minimumLength else {
            throw HearthError(
                .weakPassword, field: field,
                "use at least \(minimumLength) characters; a few unrelated words make a good passphrase")
        }
        guard length <= maximumLength else {
            throw HearthError(.weakPassword, field: field, "use at most \(maximumLength) characters")
        }
        guard !password.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw HearthError(.invalidInput, field: field, "a password cannot contain control characters")
        }
        let lower = password.lowercased()
        if Set(lower).count <= 3 {
            throw HearthError(
                .weakPassword, field: field, "this password repeats too few characters to be hard to guess")
        }
        // The list entry itself, or the entry with digits and punctuation added at the ends.
        let core = lower.trimmingCharacters(in: .decimalDigits.union(.punctuationCharacters).union(.whitespaces))
        let squashed = lower.filter { !$0.isWhitespace }
        if blocklist.contains(lower) || blocklist.contains(core) || blocklist.contains(squashed)
            || Self.publishedExamples.contains(squashed) || isRepetition(of: core) || isRepetition(of: squashed)
        {
            throw HearthError(.weakPassword, field: field, "this password is on a list of common or breached passwords")
        }
        if let dictionary, PasswordStrength.guesses(password, dictionary: dictionary) < minimumGuesses {
            throw HearthError(
                .weakPassword, field: field,
                "this password is easy to guess: it is made of common words, names, runs (abcd, 1234), keyboard rows (qwerty) or repeats; add a few unrelated words"
            )
        }
        let context = (serviceWords + contextWords).map { $0.lowercased() }.filter { $0.count >= 3 }
        for word in context where lower.contains(word) {
            let rest = lower.replacingOccurrences(of: word, with: "")
            if rest.count < 8 {
                throw HearthError(
                    .weakPassword, field: field,
                    "this password is too close to your e-mail address or the service's name")
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

import HearthCore
import Testing

@Suite struct PasswordPolicyTests {
    let policy = PasswordPolicy(blocklist: ["password", "qwerty", "iloveyou", "passwordpassword1"])

    func rejects(_ password: String, context: [String] = [], code: HearthError.Code = .weakPassword) {
        #expect(throws: HearthError.self) {
            try policy.check(password, contextWords: context)
        }
        do { try policy.check(password, contextWords: context) } catch let e as HearthError {
            #expect(e.code == code)
            #expect(e.field == "password")
        } catch {}
    }

    @Test func longPassphrasesWithoutCompositionRulesAreAccepted() throws {
        try policy.check("lantern orbit velvet puzzle")
        try policy.check(String(repeating: "a long passphrase of many words ", count: 2))  // 64 characters
        try policy.check(String(repeating: "x1y2z3", count: 40))  // 240 characters
        try policy.check("ünïcödé pässwörd wörks")
    }

    @Test func shortAndOverlongAreRefused() {
        rejects("fourteen chars")
        rejects(String(repeating: "ab cd ", count: 43))
    }

    @Test func commonPasswordsAndVariationsAreRefused() {
        rejects("passwordpassword1")
        rejects("password1234567890")
        rejects("!!!qwertyqwerty!!!")
        rejects("qwertyqwertyqwerty")
        rejects("aaaaaaaaaaaaaaaaaaaa")
        rejects("abababababababab")
    }

    @Test func contextWordsAreRefused() {
        rejects("hearth hearth 2026", context: [])
        rejects("ann.smith@example.com", context: ["ann.smith", "ann.smith@example.com"])
        rejects("ann.smith1234567", context: ["ann.smith"])
    }

    /// NIST SP 800-63B: dictionary words, repetitive and sequential values, keyboard walks.
    @Test func sequencesWalksRepeatsAndDictionaryWordsAreRefused() throws {
        let words = RankedWords(
            rankedLines: [
                "# a comment", "iloveyou", "correct", "horse", "battery", "staple", "the", "long", "passphrase",
            ].map { Substring($0) })
        #expect(words.count == 8 && words.rank("iloveyou") == 1 && words.rank("# a comment") == nil)
        let strict = PasswordPolicy(blocklist: ["iloveyou"], dictionary: words)
        for weak in [
            "123456789012345", "qwertyuiopasdfgh", "abcdefghijklmnop", "correcthorsebatterystaple", "iloveyou iloveyou",
            "zyxwvutsrqponmlk", "1qaz2wsx3edc4rfv", "98765432109876543", "correct horse battery staple",
        ] {
            #expect(throws: HearthError.self, "\(weak)") { try strict.check(weak) }
        }
        #expect(PasswordStrength.guesses("qwertyuiopasdfgh", dictionary: words) < 1e6)
        #expect(PasswordStrength.guesses("correcthorsebattery", dictionary: words) < 1e10)
        for strong in ["lantern orbit velvet puzzle", "zq8#Lm2@vR9!pX4w", "a long passphrase of many unusual words"] {
            try strict.check(strong)
        }
    }

    @Test func controlCharactersAreInvalid() {
        rejects("correct horse\u{0} battery", code: .invalidInput)
    }
}

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
        try policy.check("correct horse battery staple")
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

    @Test func controlCharactersAreInvalid() {
        rejects("correct horse\u{0} battery", code: .invalidInput)
    }
}

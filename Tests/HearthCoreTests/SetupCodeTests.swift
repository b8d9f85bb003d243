import Foundation
import HearthCore
import Testing

@Suite struct SetupCodeTests {
    @Test(arguments: [
        "0000000000", "1111111111", "9999999999", "0123456789", "9876543210", "3456789012", "2109876543",
        "1212121212", "1234512345", "1231231231", "0012345678", "8765432100", "4444444455", "5512345678",
    ])
    func guessableCodesAreRefused(_ digits: String) {
        #expect(SetupCode.isGuessable(digits))
    }

    @Test(arguments: ["3141592653", "2718281828", "7350918264", "1029384756"])
    func ordinaryCodesAreAccepted(_ digits: String) {
        #expect(!SetupCode.isGuessable(digits))
    }

    @Test func generatedCodesAreTenDigitsUnguessableAndSpread() {
        var rng = SystemRandomNumberGenerator()
        var firstDigits = [Int](repeating: 0, count: 10)
        var seen = Set<String>()
        for _ in 0..<10_000 {
            let code = SetupCode.generate(using: &rng)
            #expect(code.digits.count == 10)
            #expect(!SetupCode.isGuessable(code.digits))
            seen.insert(code.digits)
            firstDigits[code.digits.first!.wholeNumberValue!] += 1
        }
        // 10^10 codes: a handful of collisions in 10,000 draws would mean a broken generator.
        #expect(seen.count >= 9_990)
        // Chi-square over the first digit, 9 degrees of freedom; 40 is far beyond p = 0.0001.
        let chi = firstDigits.reduce(0.0) { $0 + pow(Double($1) - 1000, 2) / 1000 }
        #expect(chi < 40, "first digits \(firstDigits)")
    }

    @Test func parsingAcceptsTheLabelFormAndRefusesOthers() throws {
        #expect(try SetupCode("31415-92653").digits == "3141592653")
        #expect(try SetupCode(" 31415 92653 ").digits == "3141592653")
        for bad in ["", "123", "31415926531", "3141592a53", "３１４１５９２６５３", "31415\u{0}92653"] {
            #expect(throws: HearthError.self) { try SetupCode(bad) }
        }
    }

    @Test func descriptionNeverShowsTheCode() throws {
        let code = try SetupCode("3141592653")
        #expect(!"\(code)".contains("3141592653"))
    }
}

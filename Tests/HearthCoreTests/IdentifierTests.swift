import HearthCore
import Testing

@Suite struct IdentifierTests {
    @Test func serialsAreCrockfordBase32() throws {
        var rng = SystemRandomNumberGenerator()
        let serial = DeviceSerial.random(using: &rng)
        #expect(serial.rawValue.count == 12)
        #expect(try DeviceSerial(serial.rawValue.lowercased()) == serial)
        for bad in ["", "ABC", "ABCDEFGHJKMNP", "ABCDEFGHJKMI", "ABCDEFGHJKM!", "<script>0000"] {
            #expect(throws: HearthError.self) { try DeviceSerial(bad) }
        }
    }

    @Test func emailAddressesAreCheckedAndNormalised() throws {
        #expect(try EmailAddress("Ann@Example.COM").rawValue == "ann@example.com")
        // Exactly what the published pattern says (browsers trim what a person types first).
        for bad in [
            " ann@example.com", "ann@example.com\n", "\"a\"@example.com", "ann@exämple.com", "ann@example.com.",
            "ann@.example.com", "", "ann", "ann@", "@example.com", "ann@example", "ann@@example.com",
            "a nn@example.com", "ann@example..com", "ann@exa\u{0}mple.com",
            String(repeating: "a", count: 65) + "@example.com",
        ] {
            #expect(throws: HearthError.self) { try EmailAddress(bad) }
        }
    }

    @Test func modelIDsAreSlugs() throws {
        #expect(try ProductModelID("thermostat-t1").rawValue == "thermostat-t1")
        for bad in ["", "a", "Thermo", "1thermo", "thermo_t1", String(repeating: "a", count: 33), "thérmo"] {
            #expect(throws: HearthError.self) { try ProductModelID(bad) }
        }
    }
}

/// The text rule and the patterns the OpenAPI document publishes are the validator's own: the
/// same characters pass and fail both ways.
@Suite struct TextRuleTests {
    @Test func theRuleAndItsPublishedPatternAgreeOnEveryBMPCharacter() throws {
        for multiline in [false, true] {
            let pattern = TextPattern(TextRule.pattern(multiline: multiline), "", example: "")
            var disagreements: [UInt32] = []
            for value in UInt32(0)...0xFFFF {
                guard let scalar = Unicode.Scalar(value) else { continue }
                let text = "a" + String(Character(scalar)) + "b"
                if pattern.matches(text) != TextRule.allows(scalar, multiline: multiline) {
                    disagreements.append(value)
                }
            }
            #expect(
                disagreements.isEmpty,
                "multiline \(multiline): \(disagreements.prefix(10).map { String($0, radix: 16) })")
        }
        #expect(!TextRule.allows("\u{202E}", multiline: true), "bidi override refused")
        #expect(!TextRule.allows("\u{200B}", multiline: false), "zero-width space refused")
        #expect(TextRule.allows("é", multiline: false) && TextRule.allows("😀", multiline: false))
    }

    @Test func identifierPatternsMatchWhatTheParsersTake() throws {
        let cases: [(TextPattern, (String) -> Bool, [String])] = [
            (
                DeviceSerial.pattern, { (try? DeviceSerial($0)) != nil },
                [
                    "7K3M9Q2XH4TD", "7k3m-9q2x-h4td", " 7K3M 9Q2X H4TD ", "7K3M9Q2XH4T", "7K3M9Q2XH4TDX",
                    "7K3M9Q2XH4TI", "ﬀ7K3M9Q2XH4", "7K3M9Q2XH4TD\n", "",
                ]
            ),
            (
                SetupCode.pattern, { (try? SetupCode($0)) != nil },
                ["4827193756", "4827-1937-56", "482719375", "48271937566", "482719375a", "４８２７１９３７５６", "4827193756\n"]
            ),
            (
                EmailAddress.pattern, { (try? EmailAddress($0)) != nil },
                [
                    "ann@example.com", "A.N+N@EX-AMPLE.co.uk", "ann@example", "ann@example.com\n", "a b@example.com",
                    String(repeating: "a", count: 64) + "@x.io", String(repeating: "a", count: 65) + "@x.io",
                ]
            ),
        ]
        for (pattern, parses, texts) in cases {
            for text in texts {
                #expect(pattern.matches(text) == parses(text), "\(pattern.regex) vs parser on \(text.debugDescription)")
            }
            #expect(parses(pattern.example), "the example parses")
        }
    }
}

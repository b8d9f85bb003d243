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
        #expect(try EmailAddress(" Ann@Example.COM ").rawValue == "ann@example.com")
        for bad in ["", "ann", "ann@", "@example.com", "ann@example", "ann@@example.com", "a nn@example.com", "ann@example..com", "ann@exa\u{0}mple.com", String(repeating: "a", count: 65) + "@example.com"] {
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

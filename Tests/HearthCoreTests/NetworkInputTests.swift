import HearthCore
import Testing

/// Values parsed from the network never trap and take exactly one form.
@Suite struct NetworkInputTests {
    static let garbage = [
        "", "-1", "+1", " 1", "1 ", "1.5", "1e3", "0x10", "١٢٣", "１２", "9223372036854775807", "9223372036854775808",
        "-9223372036854775808", "-9223372036854775807", String(repeating: "9", count: 100),
        "00000000000000000000000000000000000000001",
    ]

    @Test func wholeNumbersAreDigitsOnlyAndBounded() {
        #expect(NetworkInput.nonNegativeInteger("0") == 0)
        #expect(NetworkInput.nonNegativeInteger("007") == 7)
        #expect(NetworkInput.nonNegativeInteger("9223372036854775807") == Int.max)
        #expect(NetworkInput.nonNegativeInteger("1000", maximum: 1000) == 1000)
        #expect(NetworkInput.nonNegativeInteger("1001", maximum: 1000) == nil)
        for text in Self.garbage where text != "9223372036854775807" {
            #expect(NetworkInput.nonNegativeInteger(text) == nil, "\(text)")
        }
    }

    @Test func aResumeOffsetIsInsideTheResourceOrNothing() {
        #expect(NetworkInput.resumeOffset("bytes=0-", size: 10) == 0)
        #expect(NetworkInput.resumeOffset("bytes=9-", size: 10) == 9)
        for bad in [
            "bytes=10-", "bytes=-9223372036854775807-", "bytes=-5-", "bytes=-5", "bytes=+5-", "bytes= 5-", "bytes=5- ",
            "bytes=0-4", "bytes=0-,5-",
            "bytes=99999999999999999999999999-", "bytes=9223372036854775807-", "bytes=-", "bytes=", "Bytes=1-",
            "items=0-", "", "-",
        ] {
            #expect(NetworkInput.resumeOffset(bad, size: 10) == nil, "\(bad)")
        }
        #expect(NetworkInput.resumeOffset("bytes=0-", size: 0) == nil, "an empty resource has no offset")
    }

    @Test func jsonMeansExactlyJSONInUTF8() {
        for good in [
            "application/json", "Application/JSON", "application/json; charset=utf-8", "application/json;charset=UTF-8",
            "application/json; charset=\"utf-8\"",
        ] {
            #expect(NetworkInput.isJSONMediaType(good), "\(good)")
        }
        for bad in [
            nil, "", "application/jsonx", "application/json-patch+json", "application/json; charset=utf-16",
            "application/json; charset=latin1",
            "application/json; boundary=x", "application/json; charset=utf-8; charset=utf-8", "text/json",
            "application/json ;", "xapplication/json",
        ] as [String?] {
            #expect(!NetworkInput.isJSONMediaType(bad), "\(bad ?? "nil")")
        }
    }
}

extension NetworkInputTests {
    /// JSON numbers that become counts or versions: exact whole numbers only, never a trap.
    @Test func jsonWholeNumbersConvertOnlyWhenExact() {
        #expect(NetworkInput.wholeNumber(0) == 0)
        #expect(NetworkInput.wholeNumber(-7) == -7)
        #expect(NetworkInput.wholeNumber(9_007_199_254_740_992) == 9_007_199_254_740_992)
        for bad in [
            1.5, 1e300, -1e300, Double.infinity, -Double.infinity, Double.nan, 9_007_199_254_740_994,
            Double.greatestFiniteMagnitude,
        ] {
            #expect(NetworkInput.wholeNumber(bad) == nil, "\(bad)")
        }
    }
}

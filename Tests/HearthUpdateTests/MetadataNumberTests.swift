import HearthCore
import Testing

@testable import HearthUpdate

/// Versions, lengths and thresholds in metadata are JSON numbers: out-of-range ones are refused,
/// never converted with a trap (whoever holds an online key must not be able to crash a device).
@Suite struct MetadataNumberTests {
    static let bad: [Double] = [1e300, -1e300, .infinity, 1.5, 9_007_199_254_740_994]

    @Test func hugeOrFractionalNumbersAreRefusedNotTrapped() {
        for n in Self.bad {
            #expect(throws: (any Error).self, "version \(n)") {
                _ = try TrustedMetadata.version(["version": .number(n)])
            }
            #expect(throws: (any Error).self, "meta \(n)") {
                _ = try TrustedMetadata.meta("snapshot.json", in: ["meta": ["snapshot.json": ["version": .number(n)]]])
            }
            #expect(throws: (any Error).self, "threshold \(n)") {
                _ = try RootMetadata.delegation(
                    .timestamp, in: ["keys": [:], "roles": ["timestamp": ["keyids": [], "threshold": .number(n)]]])
            }
        }
        #expect((try? TrustedMetadata.version(["version": 3])) == 3)
    }
}

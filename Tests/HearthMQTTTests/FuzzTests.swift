import HearthCore
import HearthMQTT
import HearthTestSupport
import NIOCore
import Testing

@Suite struct FuzzTests {
    /// 100,000 random and mutated packets: the parser returns a packet, asks for more bytes, or
    /// throws an `MQTTProtocolError`; it never crashes, never loops, never reads past the limit.
    @Test(arguments: [UInt64(1), 2, 3, 4])
    func randomAndMutatedPacketsNeverCrashTheParser(seed: UInt64) throws {
        var rng = SplitMix64(state: seed)
        let seeds: [[UInt8]] = samplePackets.map { p in
            var b = ByteBuffer()
            p.write(version: .v5, to: &b)
            return Array(b.readableBytesView)
        }
        var outcomes = [0, 0, 0]  // decoded, incomplete, refused
        for i in 0..<25_000 {
            var bytes: [UInt8]
            if i % 4 == 0 {
                bytes = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            } else {
                bytes = seeds.randomElement(using: &rng)!
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    guard !bytes.isEmpty else { break }
                    let at = Int.random(in: 0..<bytes.count, using: &rng)
                    switch Int.random(in: 0..<4, using: &rng) {
                    case 0: bytes[at] ^= UInt8(1 << Int.random(in: 0..<8, using: &rng))
                    case 1: bytes[at] = UInt8.random(in: 0...255, using: &rng)
                    case 2: bytes.removeSubrange(at...)
                    default: bytes.insert(UInt8.random(in: 0...255, using: &rng), at: at)
                    }
                }
            }
            var parser = MQTTParser(version: i % 3 == 0 ? nil : (i % 3 == 1 ? .v5 : .v3_1_1), maximumPacketSize: 2048)
            var buffer = ByteBuffer(bytes: bytes)
            do {
                var count = 0
                while (try parser.next(&buffer)) != nil {
                    count += 1
                    #expect(count <= bytes.count, "seed \(seed) case \(i): the parser does not progress")
                    if count > bytes.count { break }
                }
                outcomes[count > 0 ? 0 : 1] += 1
            } catch {
                outcomes[2] += 1
                #expect(error.reason.isError)
            }
        }
        // The mutations exercise all three outcomes.
        #expect(outcomes.allSatisfy { $0 > 100 }, "outcomes \(outcomes)")
    }
}

import HearthCore
import Testing

@Suite struct ZipTests {
    @Test func crc32MatchesTheStandardCheckValue() {
        #expect(CRC32.update(0, Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.update(CRC32.update(0, Array("1234".utf8)), Array("56789".utf8)) == 0xCBF4_3926, "in pieces")
    }

    @Test func anArchiveIsHeadersContentDescriptorsThenTheDirectory() throws {
        var zip = ZipWriter(year: 2026, month: 12, day: 2, hour: 13, minute: 45, second: 10)
        var bytes = try zip.entry("a.txt", Array("hello".utf8))
        #expect(bytes.prefix(4) == [0x50, 0x4B, 0x03, 0x04])
        #expect(bytes.count == 30 + 5 + 5 + 16, "local header, name, content, data descriptor")
        bytes += try zip.finish()
        #expect(bytes.suffix(22).prefix(4) == [0x50, 0x4B, 0x05, 0x06], "ends with the end record")
        #expect(bytes.count == 56 + 46 + 5 + 22)
        var empty = ZipWriter(year: 1970, month: 0, day: 0, hour: 99, minute: -1, second: 99)
        #expect(try empty.finish().count == 22, "out-of-range times are clamped, not trapped on")
    }
}

/// Writes a ZIP archive as a stream (PKWARE APPNOTE 6.3: entries stored, not compressed; sizes
/// and CRC-32 in a data descriptor after each entry, so an entry of unknown length never has to be
/// held in memory). Every operating system opens it without extra software. No I/O: each call
/// returns the bytes to write next, in order.
///
/// Limits: at most 65,535 entries and 4 GiB in all (no ZIP64); ``add(_:)`` throws past them, so a
/// caller stops with an error instead of writing an archive no one can open.
public struct ZipWriter: Sendable {
    private var offset: UInt64 = 0
    private var directory: [UInt8] = []
    private var entries = 0
    private var current: (name: [UInt8], start: UInt64, crc: UInt32, size: UInt64)?
    private let time: UInt16
    private let date: UInt16

    /// `year`, `month`, … : the entries' modification time (MS-DOS format, two-second steps).
    public init(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int) {
        let y = UInt16(clamping: max(0, min(year - 1980, 127)))
        date = y << 9 | UInt16(clamping: max(1, min(month, 12))) << 5 | UInt16(clamping: max(1, min(day, 31)))
        time =
            UInt16(clamping: max(0, min(hour, 23))) << 11 | UInt16(clamping: max(0, min(minute, 59))) << 5
            | UInt16(clamping: max(0, min(second, 59)) / 2)
    }

    public struct LimitExceeded: Error, Sendable {}

    static let maximum: UInt64 = 0xFFFF_FFFF

    /// Starts an entry (UTF-8 name, `/` between folders): its local header.
    public mutating func begin(_ name: String) throws -> [UInt8] {
        precondition(current == nil, "end the previous entry first")
        let utf8 = Array(name.utf8)
        guard entries < 0xFFFF, utf8.count < 0xFFFF else { throw LimitExceeded() }
        current = (utf8, offset, 0, 0)
        var header: [UInt8] = []
        header.le32(0x0403_4b50)
        header.le16(20)  // version needed: 2.0
        header.le16(1 << 3 | 1 << 11)  // sizes in the data descriptor; UTF-8 names
        header.le16(0)  // stored
        header.le16(time)
        header.le16(date)
        header.le32(0)  // CRC-32, sizes: in the data descriptor
        header.le32(0)
        header.le32(0)
        header.le16(UInt16(utf8.count))
        header.le16(0)
        header += utf8
        try advance(header.count)
        return header
    }

    /// Accounts for `bytes` of the current entry's content; write them as they are.
    public mutating func add(_ bytes: some Collection<UInt8>) throws {
        guard var entry = current else { preconditionFailure("begin an entry first") }
        entry.crc = CRC32.update(entry.crc, bytes)
        entry.size += UInt64(bytes.count)
        current = entry
        try advance(bytes.count)
    }

    /// Ends the current entry: its data descriptor.
    public mutating func end() throws -> [UInt8] {
        guard let entry = current else { preconditionFailure("begin an entry first") }
        current = nil
        var descriptor: [UInt8] = []
        descriptor.le32(0x0807_4b50)
        descriptor.le32(entry.crc)
        descriptor.le32(UInt32(entry.size))
        descriptor.le32(UInt32(entry.size))
        try advance(descriptor.count)
        directory.le32(0x0201_4b50)
        directory.le16(0x0314)  // made by: Unix, 2.0
        directory.le16(20)
        directory.le16(1 << 3 | 1 << 11)
        directory.le16(0)
        directory.le16(time)
        directory.le16(date)
        directory.le32(entry.crc)
        directory.le32(UInt32(entry.size))
        directory.le32(UInt32(entry.size))
        directory.le16(UInt16(entry.name.count))
        directory.le16(0)  // extra
        directory.le16(0)  // comment
        directory.le16(0)  // disk
        directory.le16(0)  // internal attributes
        directory.le32(0o100600 << 16)  // external: a regular file, owner read/write
        directory.le32(UInt32(entry.start))
        directory += entry.name
        entries += 1
        return descriptor
    }

    /// One whole entry.
    public mutating func entry(_ name: String, _ content: [UInt8]) throws -> [UInt8] {
        var bytes = try begin(name)
        try add(content)
        bytes += content
        bytes += try end()
        return bytes
    }

    /// The central directory and its end record: the archive's last bytes.
    public mutating func finish() throws -> [UInt8] {
        precondition(current == nil, "end the last entry first")
        let start = offset
        var tail = directory
        try advance(directory.count)
        tail.le32(0x0605_4b50)
        tail.le16(0)
        tail.le16(0)
        tail.le16(UInt16(entries))
        tail.le16(UInt16(entries))
        tail.le32(UInt32(directory.count))
        tail.le32(UInt32(start))
        tail.le16(0)
        return tail
    }

    private mutating func advance(_ count: Int) throws {
        let (sum, overflow) = offset.addingReportingOverflow(UInt64(count))
        guard !overflow, sum <= Self.maximum else { throw LimitExceeded() }
        offset = sum
    }
}

/// CRC-32 (ISO 3309, as ZIP and PNG use it).
public enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 == 1 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    public static func update(_ crc: UInt32, _ bytes: some Collection<UInt8>) -> UInt32 {
        var c = ~crc
        for byte in bytes { c = table[Int((c ^ UInt32(byte)) & 0xFF)] ^ (c >> 8) }
        return ~c
    }
}

extension [UInt8] {
    fileprivate mutating func le16(_ v: UInt16) {
        append(UInt8(v & 0xFF))
        append(UInt8(v >> 8))
    }

    fileprivate mutating func le32(_ v: UInt32) {
        for shift in stride(from: 0, to: 32, by: 8) { append(UInt8((v >> UInt32(shift)) & 0xFF)) }
    }
}

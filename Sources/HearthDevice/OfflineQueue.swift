import Foundation
import HearthCore

/// What the offline queue does when it is full. Declared, so a maker states it in their product
/// documentation (Code of Practice guideline 9).
public enum QueueOverflow: String, Sendable, Equatable {
    /// Drop the oldest unsent reading: the newest state of the device matters most. Drops are
    /// counted, kept across power loss, and reported on the next reading sent (`"dropped": N`).
    case dropOldest = "drop-oldest"
}

public struct QueuePolicy: Sendable, Equatable {
    /// Unsent readings kept at most.
    public var capacity: Int
    public var overflow: QueueOverflow
    /// Readings sent per second while draining after a reconnect (the gateway's default limit is
    /// 100 per second per device; pacing below it leaves room for live readings).
    public var drainRate: Double

    public init(capacity: Int = 10_000, overflow: QueueOverflow = .dropOldest, drainRate: Double = 50) {
        self.capacity = max(1, capacity)
        self.overflow = overflow
        self.drainRate = max(1, drainRate)
    }
}

/// One queued reading: the device's sequence number, its clock, and the model's `values`.
public struct QueuedReading: Sendable, Equatable {
    public let sequence: Int64
    /// Milliseconds since 1970 on the device's clock.
    public let at: Int64
    public let values: [String: JSONValue]

    public init(sequence: Int64, at: Int64, values: [String: JSONValue]) {
        self.sequence = sequence
        self.at = at
        self.values = values
    }

    /// The telemetry envelope the gateway expects; `dropped` is added by the reading that reports
    /// earlier drops.
    /// The wire form; fields in `withheld` (purposes the owner has not agreed to) are left out.
    public func envelope(dropped: Int = 0, withheld: [String: String] = [:]) -> [UInt8] {
        let sent = withheld.isEmpty ? values : values.filter { withheld[$0.key] == nil }
        var object: [String: JSONValue] = [
            "seq": .number(Double(sequence)), "at": .number(Double(at)), "values": .object(sent),
        ]
        if dropped > 0 { object["dropped"] = .number(Double(dropped)) }
        return Array(JSONValue.object(object).text.utf8)
    }
}

/// The device's bounded, persistent queue of readings not yet acknowledged by the server: a
/// write-ahead log on disk, so a power cut loses nothing that was queued.
///
/// Every reading is appended and `fsync`ed before ``append(values:at:)`` returns; an
/// acknowledgement is appended without a sync (if it is lost the reading is sent again and the
/// server stores it once, by its sequence number). Each record carries a CRC-32, so a record torn by
/// a power cut ends the replay instead of corrupting it. The log is rewritten (to a temporary
/// file, synced, then renamed over) when most of it is acknowledged.
///
/// Not thread-safe: one owner (the device agent actor) uses it.
public final class OfflineQueue {
    public let path: String
    public let policy: QueuePolicy
    /// Readings not yet acknowledged, oldest first.
    public private(set) var pending: [QueuedReading] = []
    /// Readings dropped at the bound, ever.
    public private(set) var droppedTotal: Int64 = 0
    /// Drops the server has acknowledged hearing about.
    public private(set) var droppedReported: Int64 = 0
    var nextSequence: Int64 = 1
    var head = 0
    var records = 0

    /// Drops not yet reported to the server.
    public var unreportedDrops: Int { Int(droppedTotal - droppedReported) }
    public var count: Int { pending.count - head }
    public var readings: ArraySlice<QueuedReading> { pending[head...] }

    enum Kind: UInt8 {
        case enqueued = 1
        case acknowledged = 2
        case dropped = 3
        case reported = 4
        case watermark = 5
    }

    /// Opens (or creates, 0600) the log at `path` and replays it.
    public init(path: String, policy: QueuePolicy = QueuePolicy()) throws {
        self.path = path
        self.policy = policy
        if let data = FileManager.default.contents(atPath: path) {
            try replay([UInt8](data))
        } else {
            try compact()
        }
    }

    /// Queues a reading, durably; drops the oldest first if the queue is at its bound.
    @discardableResult
    public func append(values: [String: JSONValue], at: Date) throws -> QueuedReading {
        var out: [UInt8] = []
        while count >= policy.capacity {
            let victim = pending[head]
            head += 1
            droppedTotal += 1
            Self.record(.dropped, victim.sequence, into: &out)
        }
        let reading = QueuedReading(
            sequence: nextSequence, at: Int64((at.timeIntervalSince1970 * 1000).rounded()), values: values)
        nextSequence += 1
        Self.record(
            .enqueued, reading.sequence, reading.at, payload: Array(JSONValue.object(values).text.utf8), into: &out)
        try write(out, sync: true)
        pending.append(reading)
        records += 1
        return reading
    }

    /// The server acknowledged `sequence`; `reportedDrops` is the drop count that reading carried.
    public func acknowledge(_ sequence: Int64, reportedDrops: Int = 0) throws {
        guard let index = pending[head...].firstIndex(where: { $0.sequence == sequence }) else { return }
        var out: [UInt8] = []
        Self.record(.acknowledged, sequence, into: &out)
        if reportedDrops > 0 { Self.record(.reported, Int64(reportedDrops), into: &out) }
        try write(out, sync: false)
        if index == head { head += 1 } else { pending.remove(at: index) }
        records += 1
        droppedReported = min(droppedTotal, droppedReported + Int64(reportedDrops))
        if head > 1024 || records > 2 * count + 4096 { try compact() }
    }

    /// Factory reset: every queued reading and the drop counts are erased and the log rewritten
    /// without them. The sequence counter stays, so the server never takes a later reading for
    /// one it already has.
    public func erase() throws {
        pending = []
        head = 0
        droppedTotal = 0
        droppedReported = 0
        try compact()
    }

    // MARK: The log

    func replay(_ bytes: [UInt8]) throws {
        var offset = 0
        var sequences: [Int64: Int] = [:]
        var entries: [QueuedReading?] = []
        while offset + 8 <= bytes.count {
            let length = Int(Self.uint32(bytes, offset))
            let crc = Self.uint32(bytes, offset + 4)
            guard length >= 9, offset + 8 + length <= bytes.count else { break }
            let body = Array(bytes[(offset + 8)..<(offset + 8 + length)])
            guard CRC32.checksum(body) == crc, let kind = Kind(rawValue: body[0]) else { break }
            offset += 8 + length
            records += 1
            let number = Self.int64(body, 1)
            switch kind {
            case .enqueued:
                guard body.count >= 17, case .object(let values)? = try? JSONValue.parse(body[17...]) else { continue }
                sequences[number] = entries.count
                entries.append(QueuedReading(sequence: number, at: Self.int64(body, 9), values: values))
                nextSequence = max(nextSequence, number + 1)
            case .acknowledged:
                if let i = sequences.removeValue(forKey: number) { entries[i] = nil }
            case .dropped:
                if let i = sequences.removeValue(forKey: number) { entries[i] = nil }
                droppedTotal += 1
            case .reported:
                droppedReported += number
            case .watermark:
                nextSequence = max(nextSequence, number)
                droppedTotal = max(droppedTotal, body.count >= 25 ? Self.int64(body, 9) : 0)
                droppedReported = max(droppedReported, body.count >= 25 ? Self.int64(body, 17) : 0)
            }
        }
        droppedReported = min(droppedReported, droppedTotal)
        pending = entries.compactMap { $0 }
        if offset < bytes.count {
            // A torn tail (power cut mid-write): keep what replayed, rewrite without it.
            try compact()
        }
    }

    /// Rewrites the log as a watermark plus the pending readings.
    func compact() throws {
        pending.removeFirst(head)
        head = 0
        var out: [UInt8] = []
        Self.record(.watermark, nextSequence, droppedTotal, droppedReported, into: &out)
        for r in pending {
            Self.record(.enqueued, r.sequence, r.at, payload: Array(JSONValue.object(r.values).text.utf8), into: &out)
        }
        let temporary = path + ".tmp"
        try Self.writeFile(temporary, out, flags: O_WRONLY | O_CREAT | O_TRUNC)
        guard rename(temporary, path) == 0 else { throw Self.failure("rename", temporary) }
        let directory = (path as NSString).deletingLastPathComponent
        let fd = open(directory.isEmpty ? "." : directory, O_RDONLY)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
        records = pending.count + 1
    }

    func write(_ bytes: [UInt8], sync: Bool) throws {
        try Self.writeFile(path, bytes, flags: O_WRONLY | O_CREAT | O_APPEND, sync: sync)
    }

    static func writeFile(_ path: String, _ bytes: [UInt8], flags: Int32, sync: Bool = true) throws {
        let fd = open(path, flags | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw failure("open", path) }
        defer { close(fd) }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress! + written, bytes.count - written) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw failure("write", path) }
            written += n
        }
        if sync, fsync(fd) != 0 { throw failure("fsync", path) }
    }

    static func failure(_ call: String, _ path: String) -> HearthError {
        HearthError(.unavailable, "offline queue: \(call) \(path): \(String(cString: strerror(errno)))")
    }

    static func record(_ kind: Kind, _ numbers: Int64..., payload: [UInt8] = [], into out: inout [UInt8]) {
        var body: [UInt8] = [kind.rawValue]
        for n in numbers { withUnsafeBytes(of: n.littleEndian) { body += $0 } }
        body += payload
        withUnsafeBytes(of: UInt32(body.count).littleEndian) { out += $0 }
        withUnsafeBytes(of: CRC32.checksum(body).littleEndian) { out += $0 }
        out += body
    }

    static func uint32(_ b: [UInt8], _ at: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[at + $1]) << (8 * $1) }
    }

    static func int64(_ b: [UInt8], _ at: Int) -> Int64 {
        Int64(bitPattern: (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[at + $1]) << (8 * $1) })
    }
}

/// CRC-32 (IEEE 802.3), for torn-write detection in the queue log.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { i in
        (0..<8).reduce(UInt32(i)) { c, _ in c & 1 == 1 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        ~bytes.reduce(~UInt32(0)) { table[Int(($0 ^ UInt32($1)) & 0xFF)] ^ ($0 >> 8) }
    }
}

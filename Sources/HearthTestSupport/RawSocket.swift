import Foundation

/// A TCP client that never cooperates: it sends what a test tells it to (or nothing) and only
/// watches whether the server closes the connection. For tests of closes the server decides.
public final class RawSocket: @unchecked Sendable {
    public let fd: Int32

    /// Connects to 127.0.0.1:`port`; nil if the connection is refused. `receiveBuffer` shrinks
    /// the socket's receive buffer (a peer that reads slowly, or never, fills up sooner).
    public init?(port: Int, receiveBuffer: Int32? = nil) {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        guard onLoopback(fd, port: port, connect) == 0 else {
            close(fd)
            return nil
        }
    }

    /// Sends `bytes` in one call (MSG_NOSIGNAL: the server may have closed first): the bytes the
    /// kernel took, or nil.
    @discardableResult
    public func send(_ bytes: [UInt8]) -> Int? {
        let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        return sent < 0 ? nil : sent
    }

    /// Reads until the server closes the connection (end of stream or reset) or `timeout` passes.
    /// Returns what was read and whether the server closed.
    public func readUntilClosed(timeout: TimeInterval) async -> (bytes: [UInt8], closed: Bool) {
        await offPool {
            let deadline = Date().addingTimeInterval(timeout)
            var bytes: [UInt8] = []
            while true {
                switch self.receive(before: deadline) {
                case .bytes(let more): bytes += more
                case .closed: return (bytes, true)
                case .timedOut: return (bytes, false)
                }
            }
        }
    }

    enum Received {
        case bytes(ArraySlice<UInt8>)
        case closed
        case timedOut
    }

    /// One `recv` of what arrives before `deadline` (waiting with `poll`): bytes, the server's
    /// close (end of stream or reset), or nothing in time.
    func receive(before deadline: Date) -> Received {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            // At least one look even when the deadline has passed (a thread descheduled on a
            // loaded machine must not report "nothing" for a socket it never polled).
            let left = deadline.timeIntervalSinceNow
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, Int32(max(0, min(left * 1000, 1000))))
            if ready < 0, errno != EINTR { return .closed }
            if ready > 0 {
                let n = recv(fd, &buffer, buffer.count, 0)
                return n <= 0 ? .closed : .bytes(buffer[0..<n])
            }
            if left <= 0 { return .timedOut }
        }
    }

    /// Bytes still unread from the last ``readPacket(timeout:)``.
    private var unread: [UInt8] = []

    /// The next whole MQTT packet (fixed header included), or nil if none arrives within `timeout`
    /// or the server closes first (waiting with `poll` on a thread of its own, at most `timeout`).
    public func readPacket(timeout: TimeInterval = 10) async -> [UInt8]? {
        await offPool { self.nextPacket(before: Date().addingTimeInterval(timeout)) }
    }

    private func nextPacket(before deadline: Date) -> [UInt8]? {
        while true {
            if let length = Self.packetLength(unread), unread.count >= length {
                defer { unread.removeFirst(length) }
                return Array(unread.prefix(length))
            }
            guard case .bytes(let more) = receive(before: deadline) else { return nil }
            unread += more
        }
    }

    /// Every packet that arrives within `window` (until it passes quietly, or the server closes).
    public func readPackets(window: TimeInterval) async -> [[UInt8]] {
        await offPool {
            var packets: [[UInt8]] = []
            while let packet = self.nextPacket(before: Date().addingTimeInterval(window)) { packets.append(packet) }
            return packets
        }
    }

    /// The whole length of the packet at the start of `bytes`, once its fixed header is there.
    static func packetLength(_ bytes: [UInt8]) -> Int? {
        var remaining = 0
        for i in 0..<4 {
            guard bytes.count > 1 + i else { return nil }
            remaining |= Int(bytes[1 + i] & 0x7F) << (7 * i)
            if bytes[1 + i] & 0x80 == 0 { return 2 + i + remaining }
        }
        return nil
    }

    /// True once the server has closed the connection (end of stream or reset) within `timeout`,
    /// discarding anything else it sends meanwhile.
    public func closedByServer(within timeout: TimeInterval) async -> Bool {
        await offPool {
            let deadline = Date().addingTimeInterval(timeout)
            while true {
                switch self.receive(before: deadline) {
                case .bytes: continue
                case .closed: return true
                case .timedOut: return false
                }
            }
        }
    }

    /// Closes with a reset (SO_LINGER 0), as a scanner that connects and drops does.
    public func reset() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        closeNow()
    }

    private var closed = false
    public func closeNow() {
        guard !closed else { return }
        closed = true
        close(fd)
    }

    deinit { closeNow() }
}

/// A listener that never answers: connections complete in its backlog (the kernel accepts them)
/// and requests are taken, but nothing is ever read or sent, as a receiver that hangs. Closing it
/// resets what waits.
public final class SilentListener: Sendable {
    let fd: Int32

    /// Listens on 127.0.0.1:`port`; nil if the port cannot be bound.
    public init?(port: Int) {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard onLoopback(fd, port: port, bind) == 0, listen(fd, 16) == 0 else {
            close(fd)
            return nil
        }
    }

    public func closeNow() { close(fd) }
}

/// `connect` or `bind` of `fd` to 127.0.0.1:`port`; the call's result.
func onLoopback(_ fd: Int32, port: Int, _ call: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
}

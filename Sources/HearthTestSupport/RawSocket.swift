import Foundation

/// A TCP client that never cooperates: it sends what a test tells it to (or nothing) and only
/// watches whether the server closes the connection. For tests of closes the server decides.
public final class RawSocket: @unchecked Sendable {
    public let fd: Int32

    /// Connects to 127.0.0.1:`port`; nil if the connection is refused.
    public init?(port: Int) {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard connected == 0 else {
            close(fd)
            return nil
        }
    }

    public func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Reads until the server closes the connection (end of stream or reset) or `timeout` passes,
    /// on a thread of its own (it blocks). Returns what was read and whether the server closed.
    public func readUntilClosed(timeout: TimeInterval) async -> (bytes: [UInt8], closed: Bool) {
        let fd = self.fd
        return await withCheckedContinuation { continuation in
            Thread {
                let deadline = Date().addingTimeInterval(timeout)
                var bytes: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 4096)
                while true {
                    let left = deadline.timeIntervalSinceNow
                    guard left > 0 else { return continuation.resume(returning: (bytes, false)) }
                    var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                    let ready = poll(&pfd, 1, Int32(min(left * 1000, 1000)))
                    if ready < 0, errno != EINTR { return continuation.resume(returning: (bytes, true)) }
                    guard ready > 0 else { continue }
                    let n = recv(fd, &buffer, buffer.count, 0)
                    if n <= 0 { return continuation.resume(returning: (bytes, true)) }
                    bytes += buffer[0..<n]
                }
            }.start()
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

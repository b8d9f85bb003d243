import Foundation
import HearthGateway
import Logging
import NIOCore
import Testing

/// The gateway's development listener with clients no one here wrote.
@Suite(.serialized) struct DevelopmentListenerTests {
    /// Runs a gateway on a free loopback port for the duration of `body`.
    func withGateway(_ body: (Int) async throws -> Void) async throws {
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let gateway = try MQTTGateway(developmentHost: "127.0.0.1", port: 0, logger: Logger(label: "test")) { address in
            continuation.yield(address?.port ?? 0)
        }
        let task = Task { try await gateway.run() }
        var iterator = ports.makeAsyncIterator()
        let port = try #require(await iterator.next())
        defer { task.cancel() }
        try await body(port)
    }

    @Test func refusesToBindBeyondLoopback() {
        #expect(throws: GatewayError.self) { try MQTTGateway(developmentHost: "0.0.0.0", port: 0, logger: Logger(label: "t")) }
        #expect(throws: GatewayError.self) { try MQTTGateway(developmentHost: "192.168.1.2", port: 0, logger: Logger(label: "t")) }
        #expect(MQTTGateway.isLoopback("127.0.0.2") && MQTTGateway.isLoopback("::1"))
    }

    @Test(arguments: ["mqttv311", "mqttv5"])
    func retainedMessagesAtEveryQoSReachALaterSubscriber(_ version: String) async throws {
        guard let pub = try tool("mosquitto_pub"), let sub = try tool("mosquitto_sub") else { return }
        try await withGateway { port in
            for qos in 0...2 {
                let r = try run(pub, ["-h", "127.0.0.1", "-p", "\(port)", "-V", version, "-q", "\(qos)", "-r", "-t", "home/room\(qos)", "-m", "reading \(qos)"])
                #expect(r.status == 0, "\(r.output)")
            }
            let r = try run(sub, ["-h", "127.0.0.1", "-p", "\(port)", "-V", version, "-q", "2", "-t", "home/#", "-C", "3", "-W", "10", "-F", "%t|%q|%r|%p"])
            #expect(r.status == 0, "\(r.output)")
            let lines = Set(r.output.split(separator: "\n").map(String.init))
            #expect(lines == ["home/room0|0|1|reading 0", "home/room1|1|1|reading 1", "home/room2|2|1|reading 2"])
        }
    }

    @Test func liveMessagesWillsAndTheDeviceNamespace() async throws {
        guard let pub = try tool("mosquitto_pub"), let sub = try tool("mosquitto_sub") else { return }
        try await withGateway { port in
            let listener = try Background(sub, ["-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-q", "1", "-t", "#", "-C", "2", "-W", "15", "-F", "%t|%p"])
            // A client that will vanish, leaving a will.
            let doomed = try Background(sub, ["-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-t", "nothing", "--will-topic", "status/doomed", "--will-payload", "gone", "-W", "30"])
            try await Task.sleep(for: .milliseconds(800))  // both subscribed
            // Device traffic from a development client is refused and never delivered.
            let refused = try run(pub, ["-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-q", "1", "-t", "devices/AAAAAAAAAAAA/telemetry", "-m", "x"])
            #expect(refused.output.lowercased().contains("not authorized") || refused.status != 0, "\(refused.output)")
            #expect(try run(pub, ["-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-q", "1", "-t", "news/today", "-m", "hello"]).status == 0)
            doomed.kill()
            let output = try await listener.output(timeout: 15)
            #expect(Set(output.split(separator: "\n").map(String.init)) == ["news/today|hello", "status/doomed|gone"], "\(output)")
        }
    }

    @Test func malformedBytesCloseOnlyThatConnection() async throws {
        guard let pub = try tool("mosquitto_pub") else { return }
        try await withGateway { port in
            // A raw socket sends a CONNECT with a 5-byte remaining length.
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            #expect(connected == 0)
            let bad: [UInt8] = [0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]
            _ = bad.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            var buffer = [UInt8](repeating: 0, count: 16)
            let n = recv(fd, &buffer, 16, 0)
            #expect(n <= 0, "the server closed the connection without answering a malformed CONNECT")
            close(fd)
            // Others are unaffected.
            let other = try run(pub, ["-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-q", "1", "-t", "still/here", "-m", "ok"])
            #expect(other.status == 0)
        }
    }
}

func tool(_ name: String) throws -> String? {
    let path = "/usr/bin/\(name)"
    if FileManager.default.isExecutableFile(atPath: path) { return path }
    if ProcessInfo.processInfo.environment["HEARTH_REQUIRE_TOOLS"] == "1" {
        struct MissingTool: Error, CustomStringConvertible { let description: String }
        throw MissingTool(description: "\(name) is required (apt-get install mosquitto-clients)")
    }
    return nil
}

func run(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let p = try Background(path, arguments)
    p.process.waitUntilExit()
    return (p.process.terminationStatus, p.text)
}

/// A process whose output is collected while it runs.
final class Background: @unchecked Sendable {
    let process = Process()
    private let lock = NSLock()
    private var collected = Data()

    init(_ path: String, _ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self, !data.isEmpty else { return }
            self.lock.withLock { self.collected.append(data) }
        }
        try process.run()
    }

    var text: String {
        Thread.sleep(forTimeInterval: 0.05)
        return lock.withLock { String(decoding: collected, as: UTF8.self) }
    }

    func kill() { Foundation.kill(process.processIdentifier, SIGKILL) }

    func output(timeout: TimeInterval) async throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        if process.isRunning { process.terminate() }
        return text
    }

    deinit { if process.isRunning { process.terminate() } }
}

import Foundation
import HearthFixtures
import HearthGateway
import HearthTestSupport
import Logging
import NIOCore
import Testing

/// The gateway's development listener with clients no one here wrote.
@Suite(.serialized) struct DevelopmentListenerTests {
    /// Runs a gateway on a free loopback port for the duration of `body`.
    func withGateway(_ body: (Int) async throws -> Void) async throws {
        try await withRunningGateway(GatewayConfiguration(developmentListener: ("127.0.0.1", 0))) {
            try MQTTGateway(configuration: $0, logger: $1, onBound: $2)
        } _: { _, ports in
            try await body(ports[.development] ?? 0)
        }
    }

    @Test func refusesToBindBeyondLoopback() {
        #expect(throws: GatewayError.self) {
            try MQTTGateway(
                configuration: GatewayConfiguration(developmentListener: ("0.0.0.0", 0)), logger: Logger(label: "t"))
        }
        #expect(throws: GatewayError.self) {
            try MQTTGateway(
                configuration: GatewayConfiguration(developmentListener: ("192.168.1.2", 0)), logger: Logger(label: "t")
            )
        }
        // A device listener without credentials and a store cannot start.
        #expect(throws: GatewayError.self) {
            try MQTTGateway(
                configuration: GatewayConfiguration(deviceListener: ("127.0.0.1", 0)), logger: Logger(label: "t"))
        }
        #expect(MQTTGateway.isLoopback("127.0.0.2") && MQTTGateway.isLoopback("::1"))
    }

    @Test(.enabled(if: toolsPresentOrRequired("mosquitto_pub", "mosquitto_sub")), arguments: ["mqttv311", "mqttv5"])
    func retainedMessagesAtEveryQoSReachALaterSubscriber(_ version: String) async throws {
        let pub = try requiredTool("mosquitto_pub", package: "mosquitto-clients")
        let sub = try requiredTool("mosquitto_sub", package: "mosquitto-clients")
        try await withGateway { port in
            for qos in 0...2 {
                let r = try await ChildProcess.run(
                    pub,
                    [
                        "-h", "127.0.0.1", "-p", "\(port)", "-V", version, "-q", "\(qos)", "-r", "-t",
                        "home/room\(qos)", "-m", "reading \(qos)",
                    ])
                #expect(r.status == 0, "\(r.output)")
            }
            let r = try await ChildProcess.run(
                sub,
                [
                    "-h", "127.0.0.1", "-p", "\(port)", "-V", version, "-q", "2", "-t", "home/#", "-C", "3", "-W", "10",
                    "-F", "%t|%q|%r|%p",
                ])
            #expect(r.status == 0, "\(r.output)")
            let lines = Set(r.output.split(separator: "\n").map(String.init))
            #expect(lines == ["home/room0|0|1|reading 0", "home/room1|1|1|reading 1", "home/room2|2|1|reading 2"])
        }
    }

    @Test func liveMessagesWillsAndTheDeviceNamespace() async throws {
        let pub = try requiredTool("mosquitto_pub", package: "mosquitto-clients")
        let sub = try requiredTool("mosquitto_sub", package: "mosquitto-clients")
        try await withGateway { port in
            let listener = try ChildProcess.lineBuffered(
                sub,
                [
                    "-d", "-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-q", "1", "-t", "#", "-C", "2", "-F",
                    "%t|%p",
                ])
            // A client that will vanish, leaving a will.
            let doomed = try ChildProcess.lineBuffered(
                sub,
                [
                    "-d", "-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-t", "nothing", "--will-topic",
                    "status/doomed", "--will-payload", "gone",
                ])
            #expect(try await listener.waitForSubscription(), "\(listener.text)")
            #expect(try await doomed.waitForSubscription(), "\(doomed.text)")
            // Device traffic from a development client is refused and never delivered.
            let refused = try await ChildProcess.run(
                pub,
                [
                    "-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-q", "1", "-t",
                    "devices/AAAAAAAAAAAA/telemetry", "-m", "x",
                ])
            #expect(refused.output.lowercased().contains("not authorized") || refused.status != 0, "\(refused.output)")
            #expect(
                try await ChildProcess.run(
                    pub,
                    ["-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-q", "1", "-t", "news/today", "-m", "hello"]
                ).status == 0)
            doomed.signal(SIGKILL)
            _ = try await listener.waitForExit(timeout: 15)
            #expect(Set(listener.messageLines) == ["news/today|hello", "status/doomed|gone"], "\(listener.text)")
        }
    }

    @Test func malformedBytesCloseOnlyThatConnection() async throws {
        let pub = try requiredTool("mosquitto_pub", package: "mosquitto-clients")
        try await withGateway { port in
            // A raw socket sends a CONNECT with a 5-byte remaining length: the server closes it
            // without an answer, within 10 s (a read with a deadline, so a server that never
            // closes fails the test instead of hanging it).
            let socket = try #require(RawSocket(port: port))
            socket.send([0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])
            let (answer, closed) = await socket.readUntilClosed(timeout: 10)
            #expect(closed && answer.isEmpty, "closed without answering a malformed CONNECT: \(answer)")
            // Others are unaffected.
            let other = try await ChildProcess.run(
                pub, ["-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-q", "1", "-t", "still/here", "-m", "ok"])
            #expect(other.status == 0)
        }
    }
}

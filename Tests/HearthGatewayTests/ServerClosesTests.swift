import Foundation
import HearthCore
import HearthFixtures
import HearthGateway
import HearthStorage
import HearthTestSupport
import Synchronization
import Testing

/// Connections the server decides to end are really closed, whatever the client does (raw sockets
/// that never cooperate), and sockets that never authenticate cannot spend what devices need.
@Suite struct ServerClosesTests {
    /// MQTT 3.1.1 CONNECT, client id "abc", keep-alive 1 s, a will on status/x.
    static let connect311WithWill: [UInt8] =
        [0x10, 31, 0, 4] + Array("MQTT".utf8) + [4, 0x06, 0, 1, 0, 3] + Array("abc".utf8) + [0, 8]
        + Array("status/x".utf8) + [0, 4] + Array("gone".utf8)
    /// MQTT 5.0 CONNECT, client id "abd", keep-alive 1 s.
    static let connect5: [UInt8] =
        [0x10, 16, 0, 4] + Array("MQTT".utf8) + [5, 0x02, 0, 1, 0, 0, 3] + Array("abd".utf8)

    /// How long a test waits for a close the server owes. The timeouts under test are 1–3 s; the
    /// bound is generous because a two-core CI machine also runs Chromium and the fuzzers beside
    /// these tests (the code before the fix never closed at all, so any bound tells the two apart).
    static let patience: TimeInterval = 60

    /// Polls `condition` (bookkeeping that follows a close by a moment) for up to `timeout`.
    static func eventually(timeout: TimeInterval = patience, _ condition: () -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while !condition() {
            guard Date() < deadline else { return false }
            try await Task.sleep(for: .milliseconds(50))
        }
        return true
    }

    func pub() throws -> String { try requiredTool("mosquitto_pub", package: "mosquitto-clients") }

    @Test func aSilentSocketIsClosedAtTheConnectTimeout() async throws {
        let fixture = try await DeviceFixture()
        try await fixture.withGateway({ $0.limits.connectTimeout = 2 }) { gateway, _, devPort in
            let socket = try #require(RawSocket(port: devPort))
            let started = Date()
            let (_, closed) = await socket.readUntilClosed(timeout: Self.patience)
            #expect(closed, "the server never closed a socket that sent nothing")
            #expect(Date().timeIntervalSince(started) >= 1.5)
            #expect(
                try await Self.eventually { gateway.openConnections == 0 }, "the connection left the gateway's books")
        }
    }

    @Test(.enabled(if: toolsPresentOrRequired("mosquitto_sub")))
    func keepAliveExpiryClosesTheSocketAndPublishesTheWill() async throws {
        let sub = try requiredTool("mosquitto_sub", package: "mosquitto-clients")
        let fixture = try await DeviceFixture()
        try await fixture.withGateway { _, _, devPort in
            let watcher = try ChildProcess.lineBuffered(
                sub,
                [
                    "-d", "-h", "127.0.0.1", "-p", "\(devPort)", "-V", "mqttv311", "-t", "status/#", "-C", "1", "-F",
                    "%t|%p", "-W", "\(Int(Self.patience))",
                ])
            #expect(try await watcher.waitForSubscription(), "\(watcher.text)")
            let socket = try #require(RawSocket(port: devPort))
            socket.send(Self.connect311WithWill)
            let (bytes, closed) = await socket.readUntilClosed(timeout: Self.patience)
            #expect(bytes.prefix(4) == [0x20, 2, 0, 0], "CONNACK accepted: \(bytes)")
            #expect(closed, "a 3.1.1 client silent past 1.5 × keep-alive is closed")
            #expect(try await watcher.waitForExit(timeout: Self.patience) == 0)
            #expect(watcher.text.contains("status/x|gone"), "the will is published: \(watcher.text)")
        }
    }

    @Test func aV5KeepAliveTimeoutSendsDisconnectAndCloses() async throws {
        let fixture = try await DeviceFixture()
        try await fixture.withGateway { _, _, devPort in
            let socket = try #require(RawSocket(port: devPort))
            socket.send(Self.connect5)
            let (bytes, closed) = await socket.readUntilClosed(timeout: Self.patience)
            #expect(bytes.first == 0x20, "CONNACK first")
            let disconnect = bytes.firstIndex(of: 0xE0).map { Array(bytes[$0...]) } ?? []
            #expect(disconnect.count >= 3 && disconnect[2] == 0x8D, "DISCONNECT 0x8D keep-alive timeout: \(bytes)")
            #expect(closed, "and the socket is closed, not left open")
        }
    }

    /// Refused devices (a revoked certificate) that stay silent neither fill the connection cap
    /// nor stay open: they are closed at the connect timeout.
    @Test(.enabled(if: toolsPresentOrRequired("mosquitto_pub", "openssl")))
    func silentRefusedDevicesAreClosedAndDoNotCountAgainstTheCap() async throws {
        let pub = try pub()
        let openssl = try requiredTool("openssl", package: "openssl")
        let fixture = try await DeviceFixture()
        let revoked = fixture.thermostats[0]
        #expect(
            try await fixture.store.revokeDevice(
                revoked.serial, at: Date(), audit: AuditEntry(.deviceRevoked, at: Date())))
        try await fixture.withGateway({
            $0.maximumConnections = 2
            $0.limits.connectTimeout = 3
        }) { gateway, port, _ in
            let holders = try (0..<6).map { _ in
                try ChildProcess(
                    openssl,
                    [
                        "s_client", "-connect", "127.0.0.1:\(port)", "-cert", revoked.certPath, "-key", revoked.keyPath,
                        "-CAfile", fixture.rootCAPath, "-ign_eof", "-quiet",
                    ])
            }
            #expect(try await Self.eventually { gateway.unauthenticatedConnections == 6 }, "six refused sockets held")
            #expect(gateway.openConnections == 0, "none counts towards the cap")
            let ok = fixture.thermostats[1]
            let r = try await ChildProcess.run(
                pub,
                fixture.tlsArguments(ok, port: port) + [
                    "-V", "mqttv5", "-q", "1", "-t", "devices/\(ok.serial)/telemetry", "-m",
                    reading(1, ["temperature": 20, "heating": true, "target": 20]),
                ])
            #expect(r.status == 0, "a legitimate device gets in: \(r.output)")
            for holder in holders {
                #expect(
                    try await holder.waitForExit(timeout: Self.patience) != nil,
                    "the server closed the refused connection")
            }
            #expect(
                try await Self.eventually { gateway.unauthenticatedConnections == 0 },
                "\(gateway.unauthenticatedConnections) still counted")
        }
    }

    /// Connect-and-reset without TLS spends nothing a device needs.
    @Test(.enabled(if: toolsPresentOrRequired("mosquitto_pub"))) func tcpConnectsWithoutTLSDoNotSpendTheConnectRate()
        async throws
    {
        let pub = try pub()
        let fixture = try await DeviceFixture()
        try await fixture.withGateway({
            $0.connectsPerSecond = 5
            $0.connectBurst = 5
        }) { gateway, port, _ in
            for _ in 0..<300 { RawSocket(port: port)?.reset() }
            for device in fixture.thermostats.prefix(3) {
                let r = try await ChildProcess.run(
                    pub,
                    fixture.tlsArguments(device, port: port) + [
                        "-V", "mqttv5", "-q", "1", "-t", "devices/\(device.serial)/telemetry", "-m",
                        reading(1, ["temperature": 20, "heating": true, "target": 20]),
                    ])
                #expect(r.status == 0, "\(device.serial): \(r.output)")
            }
            #expect(gateway.counters.connectionsRefused == 0)
        }
    }

    @Test(.enabled(if: toolsPresentOrRequired("mosquitto_pub")))
    func oneSourceHoldsAtMostItsShareOfUnauthenticatedSockets() async throws {
        let pub = try pub()
        let fixture = try await DeviceFixture()
        // A long handshake deadline, so that only the per-source cap can close the fifth socket.
        try await fixture.withGateway({
            $0.maximumUnauthenticatedPerSource = 4
            $0.handshakeTimeout = .seconds(600)
        }) { gateway, port, _ in
            let held = (0..<4).compactMap { _ in RawSocket(port: port) }
            #expect(try await Self.eventually { gateway.unauthenticatedConnections == 4 })
            let extra = try #require(RawSocket(port: port))
            let (_, closed) = await extra.readUntilClosed(timeout: Self.patience / 2)
            #expect(closed, "the fifth is closed at once")
            #expect(gateway.counters.unauthenticatedRefused == 1)
            for socket in held { socket.closeNow() }
            #expect(try await Self.eventually { gateway.unauthenticatedConnections == 0 })
            let device = fixture.thermostats[0]
            let r = try await ChildProcess.run(
                pub,
                fixture.tlsArguments(device, port: port) + [
                    "-V", "mqttv5", "-q", "1", "-t", "devices/\(device.serial)/telemetry", "-m",
                    reading(1, ["temperature": 20, "heating": true, "target": 20]),
                ])
            #expect(r.status == 0, "\(r.output)")
        }
    }

    /// A gateway that stops closes every socket it accepted, even the ones that arrive while it
    /// stops (accepted before the listener closed, but not yet among the connections it ends): none
    /// is left for its handshake deadline, which is set far beyond the wait here.
    @Test func aStoppingGatewayClosesEveryConnectionItAcceptedEvenWhileStopping() async throws {
        let fixture = try await DeviceFixture()
        let sockets = Mutex<[RawSocket]>([])
        let (opened, openerDone) = AsyncStream<Void>.makeStream()
        var stopped: MQTTGateway?
        var listened = 0
        try await fixture.withGateway({
            $0.maximumUnauthenticatedPerSource = 10_000
            $0.handshakeTimeout = .seconds(300)
        }) { gateway, port, _ in
            stopped = gateway
            listened = port
            // Raw sockets, opened as fast as one thread can, before and all through the stop, until
            // the listener refuses them (or there are plenty).
            Thread {
                var refused = 0
                while refused < 20, sockets.withLock({ $0.count }) < 2000 {
                    if let socket = RawSocket(port: port) {
                        refused = 0
                        sockets.withLock { $0.append(socket) }
                    } else {
                        refused += 1
                    }
                }
                openerDone.finish()
            }.start()
            let started = try await Self.eventually { sockets.withLock { $0.count } >= 50 }
            #expect(started)
        }
        for await _ in opened {}
        let all = sockets.withLock { $0 }
        defer { for socket in all { socket.closeNow() } }
        let deadline = Date().addingTimeInterval(30)
        var open = 0
        for socket in all {
            let (_, closed) = await socket.readUntilClosed(timeout: max(0, deadline.timeIntervalSinceNow))
            if !closed { open += 1 }
        }
        let rebound = SilentListener(port: listened)
        rebound?.closeNow()
        let portTaken = rebound == nil
        #expect(
            open == 0,
            "\(open) of \(all.count) sockets left open by a stopped gateway; its port now taken: \(portTaken)")
        #expect(stopped?.openConnections == 0, "a stopped gateway holds no connection")
    }
}

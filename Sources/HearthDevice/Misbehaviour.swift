import Foundation
import HearthCore
import HearthMQTT
import HearthUpdate
import NIOCore
import NIOSSL

/// A device that misbehaves on purpose, with its own real identity, so that security monitoring
/// (Code of Practice guideline 10) can be shown and tested end to end: `hearth-device misbehave`
/// for tests, benchmarks and the demo. Each kind is what a compromised or cloned device does:
///
/// - `flood`: 200 messages in about a second (the detectors' floor is 120 a minute);
/// - `garbage`: 15 readings that are not readings (floor: 10 a minute);
/// - `probe`: reaches for another device's topic, `#` and `$SYS/#` (floor: 3 a minute);
/// - `clone`: its identity connects from two addresses taking turns (127.0.0.1 and 127.0.0.2:
///   the gateway must be on loopback; floor: 3 switches in 10 minutes);
/// - `fake-firmware`: reports running version 99.0.0, which the maker never released.
public enum Misbehaviour: String, Sendable, CaseIterable {
    case flood, garbage, probe, clone
    case fakeFirmware = "fake-firmware"

    /// The alert kind the server should raise (HearthMonitor's `Detection.Kind` names).
    public var expectedAlert: String {
        switch self {
        case .flood: "flood"
        case .garbage: "garbage"
        case .probe: "probe"
        case .clone: "clone"
        case .fakeFirmware: "unknownFirmware"
        }
    }

    /// Misbehaves once as the device of `bundle` against the gateway at `host:port`; `say` hears
    /// each step. Returns when the gateway has seen it all (acknowledgements received).
    public func perform(
        bundle: DeviceBundle, keyStore: any SecureKeyStore, host: String, port: Int,
        say: @Sendable (String) -> Void = { _ in }
    ) async throws {
        let tls = try DeviceAgent.tlsContext(keyStore: keyStore, trustRootsPEM: bundle.trustRootsPEM)
        let topics = DeviceTopics(bundle.serial)
        func session(from local: String? = nil) async throws -> (
            MQTTClientConnection, AsyncThrowingStream<MQTTPacket, any Error>.AsyncIterator
        ) {
            let conn = try await MQTTClientConnection.open(
                host: host, port: port, tls: tls, serverHostname: nil, version: .v5, timeout: .seconds(15),
                from: try local.map { try SocketAddress(ipAddress: $0, port: 0) })
            conn.send(
                .connect(Connect(version: .v5, clientID: bundle.serial.rawValue, cleanStart: true, keepAlive: 60)))
            var packets = conn.packets.makeAsyncIterator()
            guard case .connack(let ack)? = try await packets.next(), ack.reason == .success else {
                conn.close()
                throw DeviceError("the gateway refused the connection")
            }
            return (conn, packets)
        }
        /// Waits for `count` acknowledgements (PUBACK or SUBACK) or the connection's end.
        func acknowledged(_ count: Int, _ packets: inout AsyncThrowingStream<MQTTPacket, any Error>.AsyncIterator)
            async throws
        {
            var seen = 0
            while seen < count, let packet = try await packets.next() {
                switch packet {
                case .puback, .suback: seen += 1
                default: break
                }
            }
        }

        switch self {
        case .flood:
            var (conn, packets) = try await session()
            defer { conn.close() }
            for n in 0..<200 {
                conn.send(
                    .publish(Publish(topic: topics.events, payload: Array("{\"n\":\(n)}".utf8), qos: .atMostOnce)))
                try await Task.sleep(for: .milliseconds(5))
            }
            // A QoS 1 message last: once it is acknowledged, the gateway has seen the rest.
            conn.send(
                .publish(Publish(topic: topics.events, payload: Array("{}".utf8), qos: .atLeastOnce, packetID: 1)))
            try await acknowledged(1, &packets)
            say("sent 201 messages in about a second")
        case .garbage:
            var (conn, packets) = try await session()
            defer { conn.close() }
            for n in 1...15 {
                conn.send(
                    .publish(
                        Publish(
                            topic: topics.telemetry, payload: Array("not a reading \(n)".utf8), qos: .atLeastOnce,
                            packetID: UInt16(n))))
            }
            try await acknowledged(15, &packets)
            say("sent 15 readings that are not readings")
        case .probe:
            var (conn, packets) = try await session()
            defer { conn.close() }
            let other = DeviceTopics(try DeviceSerial("AAAAAAAAAAAA")).telemetry
            conn.send(.publish(Publish(topic: other, payload: Array("{}".utf8), qos: .atLeastOnce, packetID: 1)))
            conn.send(.subscribe(Subscribe(packetID: 2, requests: [.init(filter: "#", qos: .atMostOnce)])))
            conn.send(
                .subscribe(Subscribe(packetID: 3, requests: [.init(filter: "$SYS/#", qos: .atMostOnce)])))
            try await acknowledged(3, &packets)
            say("reached for \(other), # and $SYS/#")
        case .clone:
            guard HostPort.isLoopback(host) else {
                throw DeviceError(
                    "clone takes turns between 127.0.0.1 and 127.0.0.2: run it against a loopback gateway")
            }
            var open: [MQTTClientConnection] = []
            defer { for c in open { c.close() } }
            for address in ["127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2"] {
                let (conn, _) = try await session(from: address)
                open.append(conn)
                say("connected as \(bundle.serial) from \(address)")
            }
        case .fakeFirmware:
            var (conn, packets) = try await session()
            defer { conn.close() }
            conn.send(
                .publish(
                    Publish(
                        topic: topics.update, payload: UpdateReport(phase: .idle, version: "99.0.0").payload,
                        qos: .atLeastOnce, packetID: 1)))
            try await acknowledged(1, &packets)
            say("reported running firmware 99.0.0")
        }
    }
}

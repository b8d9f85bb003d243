import Crypto
import Foundation
import HearthCore
import HearthCrypto
import HearthGateway
import HearthSQLite
import HearthStorage
import HearthTestSupport
import Logging
import NIOCore
import X509

/// A deployment made in code for one test: CAs, a server certificate, a SQLite store with the demo
/// models and some provisioned devices, and PEM files for third-party clients. Nothing is shared
/// between tests.
public final class DeviceFixture: Sendable {
    public struct Device: Sendable {
        public let serial: DeviceSerial
        public let model: ProductModel
        public let certPath: String
        public let keyPath: String
    }

    public let folder: URL
    public let store: SQLiteStore
    public let telemetry: SQLiteTelemetryStore
    public let credentials: DeviceTLSCredentials
    public let rootCAPath: String
    public let deviceCA: CertificateAuthority
    public let thermostats: [Device]
    public let locks: [Device]

    public init(devices: Int = 2) async throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("hearth-gw-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        store = try SQLiteStore(path: folder.appendingPathComponent("hearth.sqlite").path, sealer: TestSealer())
        telemetry = try SQLiteTelemetryStore(path: folder.appendingPathComponent("telemetry.sqlite").path)
        let root = try CertificateAuthority.create(commonName: "Test Root")
        deviceCA = try CertificateAuthority.create(commonName: "Test Device CA")
        let serverKey = P256.Signing.PrivateKey()
        let serverCert = try root.issueServerCertificate(
            publicKey: serverKey.publicKey, hostnames: ["localhost", "127.0.0.1"])
        credentials = DeviceTLSCredentials(
            serverCertificatePEM: try serverCert.pem(), serverKeyPEM: serverKey.pemRepresentation,
            deviceCAPEM: try deviceCA.certificate.pem())
        rootCAPath = folder.appendingPathComponent("root-ca.pem").path
        try Data(try root.certificate.pem().utf8).write(to: URL(fileURLWithPath: rootCAPath))
        var made: [ProductModelID: [Device]] = [:]
        var records: [DeviceRecord] = []
        for model in ProductModel.demoModels() {
            try await store.createModel(model, at: Date(), audit: AuditEntry(.modelCreated, at: Date()))
            for _ in 0..<devices {
                let (device, record) = try Self.makeDevice(model: model, ca: deviceCA, in: folder)
                made[model.id, default: []].append(device)
                records.append(record)
            }
        }
        try await store.addDevices(records, audit: AuditEntry(.devicesProvisioned, at: Date()))
        thermostats = made[try ProductModelID("thermostat-t1")] ?? []
        locks = made[try ProductModelID("lock-l1")] ?? []
    }

    /// A key and certificate for `serial` from `ca`, written as PEM files (not registered).
    public static func makeDevice(
        model: ProductModel, ca: CertificateAuthority, in folder: URL, serial: DeviceSerial? = nil
    ) throws -> (Device, DeviceRecord) {
        var rng = SystemRandomNumberGenerator()
        let serial = serial ?? DeviceSerial.random(using: &rng)
        let key = P256.Signing.PrivateKey()
        let cert = try ca.issueDeviceCertificate(publicKey: .init(key.publicKey), serial: serial, model: model)
        let certPath = folder.appendingPathComponent("\(serial)-\(UUID().uuidString.prefix(4)).pem").path
        let keyPath = certPath.replacingOccurrences(of: ".pem", with: ".key")
        try Data(try cert.pem().utf8).write(to: URL(fileURLWithPath: certPath))
        try Data(key.pemRepresentation.utf8).write(to: URL(fileURLWithPath: keyPath))
        let record = DeviceRecord(
            serial: serial, model: model.id, certificatePEM: try cert.pem(), setupCodeHash: "unused",
            provisionedAt: Date())
        return (Device(serial: serial, model: model, certPath: certPath, keyPath: keyPath), record)
    }

    /// Runs a gateway with a device listener (and a development listener) on free ports for the
    /// duration of `body` (see ``withRunningGateway(_:_:)``).
    public func withGateway(
        brokerState: (any BrokerStateStore)? = nil, telemetry: (any TelemetryStore)? = nil,
        _ configure: (inout GatewayConfiguration) -> Void = { _ in },
        _ body: (_ gateway: MQTTGateway, _ devicePort: Int, _ devPort: Int) async throws -> Void
    ) async throws {
        var configuration = GatewayConfiguration(
            deviceListener: ("127.0.0.1", 0), developmentListener: ("127.0.0.1", 0))
        configure(&configuration)
        try await withRunningGateway(configuration) { configuration, logger, onBound in
            try MQTTGateway(
                configuration: configuration, credentials: credentials, store: store,
                telemetry: telemetry ?? self.telemetry, brokerState: brokerState, logger: logger, onBound: onBound)
        } _: { gateway, ports in
            try await body(gateway, ports[.devices] ?? 0, ports[.development] ?? 0)
        }
    }

    /// mosquitto_pub/sub arguments that authenticate as `device` over mutual TLS.
    public func tlsArguments(_ device: Device, port: Int) -> [String] {
        [
            "-h", "127.0.0.1", "-p", "\(port)", "--cafile", rootCAPath, "--cert", device.certPath, "--key",
            device.keyPath,
        ]
    }

    /// paho arguments for the same.
    public func pahoArguments(_ device: Device, port: Int) -> [String] {
        [
            "--host", "127.0.0.1", "--port", "\(port)", "--cafile", rootCAPath, "--cert", device.certPath, "--key",
            device.keyPath,
        ]
    }

    public static var script: String { pahoScript }

    /// A device folder as `hearth factory provision` writes it (bundle.json, device.pem with the
    /// device CA, the plaintext factory key, the server's root CA), in a fresh 0700 folder.
    public func bundle(for device: Device) throws -> URL {
        let dir = folder.appendingPathComponent("bundle-\(device.serial)-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(
            at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let json: JSONValue = [
            "serial": .string(device.serial.rawValue), "model": .string(device.model.id.rawValue),
            "setupCode": "0000000000", "server": "https://127.0.0.1:8443",
        ]
        try Self.writePrivate(Array(json.text.utf8), dir.appendingPathComponent("bundle.json"))
        try Self.writePrivate(
            Array(
                (try String(contentsOfFile: device.certPath, encoding: .utf8) + "\n" + deviceCA.certificate.pem()).utf8),
            dir.appendingPathComponent("device.pem"))
        try Self.writePrivate(
            Array(try String(contentsOfFile: device.keyPath, encoding: .utf8).utf8),
            dir.appendingPathComponent("device.key.pem"))
        try FileManager.default.copyItem(
            atPath: rootCAPath, toPath: dir.appendingPathComponent("server-root-ca.pem").path)
        return dir
    }

    static func writePrivate(_ bytes: [UInt8], _ url: URL) throws {
        guard
            FileManager.default.createFile(
                atPath: url.path, contents: Data(bytes), attributes: [.posixPermissions: 0o600])
        else {
            throw HearthError(.internal, "cannot write \(url.path)")
        }
    }

    deinit { try? FileManager.default.removeItem(at: folder) }
}

/// An audit sealer for tests (HMAC with a fixed per-process key).
public struct TestSealer: AuditSealer {
    let key = SymmetricKey(size: .bits256)
    public init() {}
    public func mac(_ data: Data) -> String {
        Data(HMAC<SHA256>.authenticationCode(for: data, using: key)).map { String(format: "%02x", $0) }.joined()
    }
}

/// A telemetry payload as a device sends it.
public func reading(_ seq: Int, _ values: [String: JSONValue]) -> String {
    JSONValue.object(["seq": .number(Double(seq)), "values": .object(values)]).text
}

/// The JSON lines a script printed.
public func jsonLines(_ output: String) -> [[String: JSONValue]] {
    output.split(separator: "\n").compactMap { line in
        guard let value = try? JSONValue.parse(Array(line.utf8)), case .object(let o) = value else { return nil }
        return o
    }
}

/// The reason code of the CONNACK the paho script printed. Not simply its first line: paho
/// reports a DISCONNECT from its network thread, which can print before the CONNACK line.
public func connackCode(_ lines: [[String: JSONValue]]) -> JSONValue? {
    lines.lazy.compactMap { $0["connack"] }.first
}

public struct GatewayDidNotStart: Error, CustomStringConvertible {
    public var description: String { "the gateway stopped before it listened" }
}

/// Runs the gateway `make` builds from `configuration` (with a test logger and the callback that
/// reports its ports) for the duration of `body`, then stops it, whether `body` returns or throws:
/// the gateway has closed its listeners and every connection before this returns, so a port it held
/// is free again and nothing it accepted lingers into the next test. A gateway that cannot start
/// ends the wait for its ports with its error.
public func withRunningGateway(
    _ configuration: GatewayConfiguration,
    _ make: (GatewayConfiguration, Logger, @escaping @Sendable (ListenerKind, SocketAddress?) async -> Void) throws ->
        MQTTGateway,
    _ body: (_ gateway: MQTTGateway, _ ports: [ListenerKind: Int]) async throws -> Void
) async throws {
    let (bound, continuation) = AsyncStream<(ListenerKind, Int)>.makeStream()
    var logger = Logger(label: "test")
    logger.logLevel = .warning
    let gateway = try make(configuration, logger) { kind, address in continuation.yield((kind, address?.port ?? 0)) }
    let expected = [configuration.deviceListener, configuration.developmentListener].compactMap { $0 }.count
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
            defer { continuation.finish() }
            try await gateway.run()
        }
        var ports: [ListenerKind: Int] = [:]
        for await (kind, port) in bound {
            ports[kind] = port
            if ports.count == expected { break }
        }
        guard ports.count == expected else {
            try await group.next()
            throw GatewayDidNotStart()
        }
        try await body(gateway, ports)
        group.cancelAll()
    }
}

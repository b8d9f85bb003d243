import Crypto
import Foundation
import HearthCore
import HearthCrypto
import HearthDevice
import HearthFixtures
import HearthGateway
import HearthServer
import HearthStorage
import HearthTestSupport
import SwiftASN1
import Synchronization
import Testing
import X509

/// EN 303 645 5.1-4 for a device's credential: the owner asks, the running thermostat makes a new
/// key inside the device, gets its certificate over its authenticated connection, reconnects with
/// it, and from then on the old certificate is refused (tested with mosquitto_pub, a client no one
/// here wrote). A lost answer or a power cut midway never locks the device out.
@Suite("Re-keying")
struct RekeyTests {
    /// The first certificate of a PEM chain.
    static func leaf(_ chain: String) throws -> Certificate {
        guard let first = try PEMDocument.parseMultiple(pemString: chain).first else {
            throw DeviceError("no certificate in the chain")
        }
        return try Certificate(derEncoded: first.derBytes)
    }

    static func reading(_ seq: Int) -> String {
        #"{"seq":\#(seq),"values":{"temperature":20,"heating":false,"target":21}}"#
    }

    @Test func aRekeyedThermostatUsesItsNewKeyAndTheOldCertificateIsRefused() async throws {
        let pub = try requiredTool("mosquitto_pub", package: "mosquitto-clients")
        let fixture = try await DeviceFixture(devices: 1)
        let unit = fixture.thermostats[0]
        let serial = unit.serial
        let original = try #require(try await fixture.store.device(serial)).certificatePEM
        let events = Mutex<[DeviceEvent]>([])
        try await fixture.withGateway { gateway, port, _ in
            gateway.attach(certificates: DeviceCertificates(store: fixture.store, deviceCA: fixture.deviceCA))
            func publishWithTheOldKey(_ seq: Int) async throws -> Int32 {
                try await ChildProcess.run(
                    pub,
                    fixture.tlsArguments(unit, port: port) + [
                        "-V", "mqttv5", "-q", "1", "-t", "devices/\(serial)/telemetry", "-m", Self.reading(seq),
                    ]
                ).status
            }
            #expect(try await publishWithTheOldKey(1_000_000) == 0, "the factory identity works before")

            let device = try makeDevice(fixture, unit, port: port, reportEvery: 0.2) { event in
                events.withLock { $0.append(event) }
            }
            let tasks = running(device)
            defer { for task in tasks { task.cancel() } }
            try await eventually("connected") { await device.agent.acceptsCommands }
            let connectionsBefore = await device.agent.connections

            await gateway.requestRekey(serial, id: "owner-request-1")
            try await eventually("the device installs its new certificate") {
                events.withLock { $0.contains(.rekeyed) }
            }
            try await eventually("it connects with it, which retires the old one") {
                let record = try await fixture.store.device(serial)
                return record?.pendingCertificatePEM == nil && record?.certificatePEM != original
            }
            try await eventually("reconnected") { await device.agent.connections > connectionsBefore }
            let stored = try #require(try await fixture.store.device(serial)).certificatePEM
            let certificate = try Certificate(pemEncoded: stored)
            #expect(certificate.subject.description.contains(serial.rawValue), "issued to the same serial")
            #expect(
                try Certificate(pemEncoded: original).publicKey != certificate.publicKey, "for a new key")

            // Readings keep flowing over the new identity.
            let latest = try await fixture.telemetry.latest(serial)?.reading.receivedAt ?? .distantPast
            try await eventually("readings after the switch") {
                (try await fixture.telemetry.latest(serial)?.reading.receivedAt ?? .distantPast) > latest
            }
            #expect(try await publishWithTheOldKey(1_000_001) != 0, "the old certificate is refused")
            let audit = try await fixture.store.auditRecords(subject: serial.rawValue, limit: 100).map(\.kind)
            #expect(
                audit.contains(AuditKind.deviceCertificateIssued.rawValue)
                    && audit.contains(AuditKind.deviceCertificateReplaced.rawValue), "\(audit)")
            #expect(!events.withLock { $0.contains { if case .rekeyFailed = $0 { true } else { false } } })
        }
    }

    /// Requests the certificate service refuses change nothing: not JSON, no CSR, a malformed id,
    /// a CSR whose signature does not verify, a revoked device.
    @Test func badCertificateRequestsAreRefusedAndChangeNothing() async throws {
        let fixture = try await DeviceFixture(devices: 2)
        let service = DeviceCertificates(store: fixture.store, deviceCA: fixture.deviceCA)
        let unit = fixture.thermostats[0]
        let key = P256.Signing.PrivateKey()
        let csr = try CertificateSigningRequest(
            version: .v1, subject: try DistinguishedName { CommonName(unit.serial.rawValue) },
            privateKey: Certificate.PrivateKey(key), attributes: CertificateSigningRequest.Attributes(),
            signatureAlgorithm: .ecdsaWithSHA256
        ).serializeAsPEM().pemString
        var tampered = Array(csr.utf8)
        tampered[tampered.count / 2] ^= 0x01
        let bad = [
            "not json", #"{"id":"abcdefgh"}"#, #"{"id":"no","csr":"x"}"#, #"{"id":"abcdefgh","csr":"not a csr"}"#,
            JSONValue.object(["id": "abcdefgh", "csr": .string(String(decoding: tampered, as: UTF8.self))]).text,
            #"{"id":"../../etc","csr":""}"#, String(repeating: "x", count: 100_000),
        ]
        for payload in bad {
            await #expect(throws: HearthError.self, "\(payload.prefix(40))") {
                _ = try await service.certificateRequested(Array(payload.utf8), from: unit.serial, model: unit.model)
            }
        }
        #expect(try await fixture.store.device(unit.serial)?.pendingCertificatePEM == nil)

        let good = Array(JSONValue.object(["id": "abcdefgh", "csr": .string(csr)]).text.utf8)
        let revoked = fixture.thermostats[1]
        #expect(
            try await fixture.store.revokeDevice(
                revoked.serial, at: Date(),
                audit: AuditEntry(.deviceRevoked, subject: revoked.serial.rawValue, at: Date())))
        await #expect(throws: HearthError.self) {
            _ = try await service.certificateRequested(good, from: revoked.serial, model: revoked.model)
        }
        #expect(try await fixture.store.device(revoked.serial)?.pendingCertificatePEM == nil)

        let answer = try await service.certificateRequested(good, from: unit.serial, model: unit.model)
        guard case .object(let o) = try JSONValue.parse(answer), case .string(let chain)? = o["certificate"] else {
            throw DeviceError("no certificate in \(String(decoding: answer, as: UTF8.self))")
        }
        #expect(try Self.leaf(chain).publicKey == Certificate.PublicKey(key.publicKey))
        #expect(try await fixture.store.device(unit.serial)?.pendingCertificatePEM != nil)
        do {
            _ = try await service.certificateRequested(good, from: unit.serial, model: unit.model)
            Issue.record("a second certificate within the minute was issued")
        } catch let error as HearthError {
            #expect(error.code == .throttled, "one a minute: \(error)")
        }
    }

    /// The device side on its own: the new key waits beside the old one; a certificate for another
    /// key is refused; a switch cut short by a power loss is finished at the next start.
    @Test func theKeyStoreSwitchesKeysInOneStepThatSurvivesAPowerCut() async throws {
        let fixture = try await DeviceFixture(devices: 1)
        let unit = fixture.thermostats[0]
        let folder = try fixture.bundle(for: unit)
        let store = try FileKeyStore(
            folder: folder, uniqueKey: DeviceUniqueKey.simulated(file: folder.appendingPathComponent("hw.key").path))
        try store.sealFactoryKey()
        let oldChain = try String(contentsOfFile: store.certificatePath, encoding: .utf8)
        _ = try store.identity()
        let first = try store.renewalRequest(serial: unit.serial)
        let again = try store.renewalRequest(serial: unit.serial)
        func key(_ pem: String) throws -> Certificate.PublicKey {
            try CertificateSigningRequest(pemEncoded: pem).publicKey
        }
        #expect(try key(first) == key(again), "the same new key until it is certified")
        #expect(store.renewalPending)

        // A certificate for some other key is refused; nothing changes.
        #expect(throws: DeviceError.self) { try store.installRenewedCertificate(oldChain) }
        #expect(try String(contentsOfFile: store.certificatePath, encoding: .utf8) == oldChain)

        let issued = try fixture.deviceCA.signDeviceCSR(pem: first, serial: unit.serial, model: unit.model)
        let chain = try issued.pem() + "\n" + fixture.deviceCA.certificate.pem() + "\n"
        // Power cut after the certificate was written and the key moved, before the certificate was.
        try Data(chain.utf8).write(to: folder.appendingPathComponent("device.pem.next"))
        #expect(rename(store.renewalKeyPath, store.sealedKeyPath) == 0)
        _ = try store.identity()
        #expect(try String(contentsOfFile: store.certificatePath, encoding: .utf8) == chain, "finished at start")
        #expect(!store.renewalPending)
        #expect(try Self.leaf(chain).publicKey == key(first))
    }
}

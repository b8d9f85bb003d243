import Crypto
import Foundation
import HearthCore
import HearthCrypto
import HearthDevice
import HearthFixtures
import Testing
import X509

@Suite("Device key store (sealed, 0600)")
struct KeyStoreTests {
    @Test func firstBootSealsTheFactoryKeyAndDeletesThePlainCopy() async throws {
        let fixture = try await DeviceFixture(devices: 1)
        let device = fixture.thermostats[0]
        let folder = try fixture.bundle(for: device)
        let plain = try String(contentsOf: folder.appendingPathComponent("device.key.pem"), encoding: .utf8)
        let key = try DeviceUniqueKey.simulated(
            file: folder.appendingPathComponent("../hw-\(device.serial).key").standardized.path)
        let store = try DeviceBundle.load(folder).keyStore(uniqueKey: key)
        #expect(!FileManager.default.fileExists(atPath: store.factoryKeyPath), "the plaintext factory key is gone")
        let sealed = try Data(contentsOf: URL(fileURLWithPath: store.sealedKeyPath))
        let mode = try FileManager.default.attributesOfItem(atPath: store.sealedKeyPath)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        // Encrypted: neither the PEM nor the raw scalar appears in the file.
        let raw = try P256.Signing.PrivateKey(pemRepresentation: plain).rawRepresentation
        #expect(sealed.range(of: raw) == nil)
        #expect(sealed.range(of: Data("PRIVATE KEY".utf8)) == nil)
        // And it opens to the same key: the TLS identity works.
        #expect(try store.identity().certificateChain.count == 2)
    }

    @Test func refusesAKeyFileOthersCanRead() async throws {
        let fixture = try await DeviceFixture(devices: 1)
        let folder = try fixture.bundle(for: fixture.locks[0])
        let key = try DeviceUniqueKey.simulated(file: folder.appendingPathComponent("hw.key").path)
        let store = try DeviceBundle.load(folder).keyStore(uniqueKey: key)
        for mode in [0o644, 0o640, 0o604, 0o660] {
            chmod(store.sealedKeyPath, mode_t(mode))
            #expect(throws: DeviceError.self) { try store.identity() }
            do { _ = try store.identity() } catch { #expect("\(error)".contains("refusing to start")) }
        }
        chmod(store.sealedKeyPath, 0o600)
        #expect(try store.identity().certificateChain.count == 2)
        // A world-readable factory key is refused before it is sealed, too.
        let other = try fixture.bundle(for: fixture.thermostats[0])
        chmod(other.appendingPathComponent("device.key.pem").path, 0o644)
        #expect(throws: DeviceError.self) { try DeviceBundle.load(other).keyStore(uniqueKey: key) }
        // So is a world-readable hardware key.
        chmod(folder.appendingPathComponent("hw.key").path, 0o644)
        #expect(throws: DeviceError.self) {
            try DeviceUniqueKey.simulated(file: folder.appendingPathComponent("hw.key").path)
        }
    }

    @Test func aSealedKeyDoesNotOpenWithAnotherDevicesUniqueKey() async throws {
        let fixture = try await DeviceFixture(devices: 1)
        let folder = try fixture.bundle(for: fixture.thermostats[0])
        let bundle = try DeviceBundle.load(folder)
        _ = try bundle.keyStore(uniqueKey: try DeviceUniqueKey(secret: Array(repeating: 1, count: 32)))
        let copied = FileKeyStore(
            folder: folder, uniqueKey: try DeviceUniqueKey(secret: Array(repeating: 2, count: 32)))
        #expect(throws: DeviceError.self) { try copied.identity() }
        #expect(throws: DeviceError.self) { try DeviceUniqueKey(secret: [1, 2, 3]) }
    }

    @Test func firstBootWithoutAFactoryKeyMakesOneAndACSR() async throws {
        let fixture = try await DeviceFixture(devices: 1)
        let folder = try temporaryFolder()
        var rng = SystemRandomNumberGenerator()
        let serial = DeviceSerial.random(using: &rng)
        let store = FileKeyStore(folder: folder, uniqueKey: try DeviceUniqueKey(secret: Array(repeating: 9, count: 32)))
        let pem = try store.generateKey()
        #expect(throws: DeviceError.self) { try store.generateKey() }
        let csr = try CertificateSigningRequest(pemEncoded: pem)
        #expect(csr.publicKey.isValidSignature(csr.signature, for: csr))
        // The factory signs it; the device then has a working identity whose key never left it.
        let model = try #require(ProductModel.demoModels().first)
        let certificate = try fixture.deviceCA.signDeviceCSR(pem: pem, serial: serial, model: model)
        try Data((try certificate.pem() + "\n" + fixture.deviceCA.certificate.pem()).utf8).write(
            to: folder.appendingPathComponent("device.pem"))
        #expect(try store.identity().certificateChain.count == 2)
    }
}

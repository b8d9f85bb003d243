import Crypto
import Foundation
import HearthCore
import HearthCrypto
import SwiftASN1
import Testing
import X509

@Suite struct PKITests {
    let model = ProductModel.demoModels()[0]

    @Test func deviceCertificatesChainToTheDeviceCAOnly() async throws {
        let root = try CertificateAuthority.create(commonName: "Test Root")
        let deviceCA = try CertificateAuthority.create(commonName: "Test Device CA")
        var rng = SystemRandomNumberGenerator()
        let serial = DeviceSerial.random(using: &rng)
        let key = P256.Signing.PrivateKey()
        let cert = try deviceCA.issueDeviceCertificate(publicKey: .init(key.publicKey), serial: serial, model: model)
        #expect(await verifyChain(leaf: cert, root: deviceCA.certificate))
        #expect(!(await verifyChain(leaf: cert, root: root.certificate)))
        #expect(cert.commonName == serial.rawValue)
        #expect(try cert.extensions.extendedKeyUsage?.contains(.clientAuth) == true)
        #expect(try cert.extensions.extendedKeyUsage?.contains(.serverAuth) == false)

        let serverKey = P256.Signing.PrivateKey()
        let server = try root.issueServerCertificate(
            publicKey: serverKey.publicKey, hostnames: ["localhost", "127.0.0.1", "::1"])
        #expect(await verifyChain(leaf: server, root: root.certificate))
        #expect(!(await verifyChain(leaf: server, root: deviceCA.certificate)))
        #expect(Set(server.subjectAlternativeHostnames) == ["localhost", "127.0.0.1", "::1"])
    }

    @Test func aCSRIsSignedOnlyWhenItsSignatureVerifies() async throws {
        let deviceCA = try CertificateAuthority.create(commonName: "Test Device CA")
        let deviceKey = P256.Signing.PrivateKey()
        let csr = try CertificateSigningRequest(
            version: .v1, subject: try DistinguishedName { CommonName("my-device") },
            privateKey: .init(deviceKey), attributes: CertificateSigningRequest.Attributes()
        )
        var serializer = DER.Serializer()
        try serializer.serialize(csr)
        let pem = PEMDocument(type: "CERTIFICATE REQUEST", derBytes: serializer.serializedBytes).pemString
        var rng = SystemRandomNumberGenerator()
        let serial = DeviceSerial.random(using: &rng)
        let cert = try deviceCA.signDeviceCSR(pem: pem, serial: serial, model: model)
        #expect(cert.publicKey == Certificate.PublicKey(deviceKey.publicKey))
        #expect(cert.commonName == serial.rawValue, "the CA sets the identity, not the CSR")
        #expect(await verifyChain(leaf: cert, root: deviceCA.certificate))

        // Flip a bit inside the signed part: the self-signature no longer verifies.
        var der = serializer.serializedBytes
        der[der.count / 3] ^= 0x01
        let tampered = PEMDocument(type: "CERTIFICATE REQUEST", derBytes: der).pemString
        #expect(throws: HearthError.self) { try deviceCA.signDeviceCSR(pem: tampered, serial: serial, model: model) }
        #expect(throws: HearthError.self) { try deviceCA.signDeviceCSR(pem: "not a csr", serial: serial, model: model) }
    }
}

@Suite struct EnvelopeTests {
    @Test func sealsAndOpensOnlyInItsContextWithItsKEK() throws {
        let (kek, _) = KeyEncryptionKey.generate()
        let (other, _) = KeyEncryptionKey.generate()
        let secret = Data("the device CA key".utf8)
        let sealed = try Envelope.seal(secret, context: "file:a", kek: kek)
        #expect(try Envelope.open(sealed, context: "file:a", kek: kek) == secret)
        #expect(sealed.range(of: secret) == nil)
        #expect(throws: HearthError.self) { try Envelope.open(sealed, context: "file:b", kek: kek) }
        #expect(throws: HearthError.self) { try Envelope.open(sealed, context: "file:a", kek: other) }
        var tampered = sealed
        tampered[tampered.count - 1] ^= 1
        #expect(throws: HearthError.self) { try Envelope.open(tampered, context: "file:a", kek: kek) }
        #expect(throws: HearthError.self) { try Envelope.open(Data("HE1".utf8), context: "file:a", kek: kek) }
        #expect(throws: HearthError.self) { try KeyEncryptionKey(rawBytes: Data(count: 16)) }
    }
}

@Suite struct SecretHasherTests {
    @Test func verifiesOnlyTheRightSecretAndSaltsEachHash() throws {
        let hasher = SecretHasher(cost: .testing)
        let a = try hasher.hash("3141592653")
        let b = try hasher.hash("3141592653")
        #expect(a != b)
        #expect(a.hasPrefix("scrypt$4$8$1$"))
        #expect(SecretHasher.verify("3141592653", against: a))
        #expect(!SecretHasher.verify("3141592654", against: a))
        #expect(!SecretHasher.verify("3141592653", against: hasher.decoy()))
        // The decoy has the hasher's cost, a 16-byte salt and a 32-byte value, as a real hash: a
        // check against it costs what a real one does. Each is new.
        let decoy = hasher.decoy().split(separator: "$")
        #expect(decoy.count == 6 && decoy.prefix(4) == ["scrypt", "4", "8", "1"], "\(decoy)")
        #expect(decoy.count == 6 && Data(base64Encoded: String(decoy[4]))?.count == 16)
        #expect(decoy.count == 6 && Data(base64Encoded: String(decoy[5]))?.count == 32)
        #expect(hasher.decoy() != hasher.decoy())
        #expect(SecretHasher(cost: .standard).decoy().hasPrefix("scrypt$16$8$1$"))
        #expect(!SecretHasher.verify("x", against: "scrypt$99$8$1$AAAA$AAAA"))
        #expect(!SecretHasher.verify("x", against: "garbage"))
    }

    @Test func tokensAreLongRandomAndStoredHashed() {
        let t = SecureToken.generate()
        #expect(SecureToken.isWellFormed(t))
        #expect(t != SecureToken.generate())
        #expect(SecureToken.storageHash(t).count == 64)
        #expect(!SecureToken.isWellFormed(t + "A"))
        #expect(!SecureToken.isWellFormed(String(t.dropLast()) + "!"))
    }
}

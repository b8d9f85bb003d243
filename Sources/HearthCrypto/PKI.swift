import Crypto
import Foundation
import HearthCore
import SwiftASN1
import X509

/// A certificate authority: its certificate and its signing key (P-256).
///
/// A deployment has two, on purpose: the **root CA** anchors the server's HTTPS certificate, and the
/// separate **device CA** issues device identities, so a device certificate never passes as a server
/// and the MQTT gateway trusts only device identities (Code of Practice guidelines 1 and 5).
public struct CertificateAuthority: Sendable {
    public let certificate: Certificate
    public let privateKey: P256.Signing.PrivateKey

    public init(certificate: Certificate, privateKey: P256.Signing.PrivateKey) throws {
        guard certificate.publicKey == Certificate.PublicKey(privateKey.publicKey) else {
            throw HearthError(.integrity, "the CA key does not match the CA certificate")
        }
        self.certificate = certificate
        self.privateKey = privateKey
    }

    /// A new self-signed CA, valid for `years`.
    public static func create(commonName: String, organization: String = "Hearth", years: Int = 20, now: Date = Date())
        throws -> CertificateAuthority
    {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName {
            OrganizationName(organization)
            CommonName(commonName)
        }
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-300),
            notValidAfter: now.addingTimeInterval(Double(years) * 365.25 * 86_400),
            issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: .init(key.publicKey))
            },
            issuerPrivateKey: .init(key)
        )
        return try CertificateAuthority(certificate: certificate, privateKey: key)
    }

    /// The HTTPS (and later MQTT) server certificate for `hostnames` (DNS names or IP literals).
    public func issueServerCertificate(
        publicKey: P256.Signing.PublicKey, hostnames: [String], days: Int = 397, now: Date = Date()
    ) throws -> Certificate {
        var names: [GeneralName] = []
        for host in hostnames {
            if let ip = IPAddressBytes(host) {
                names.append(.ipAddress(ASN1OctetString(contentBytes: ip.bytes[...])))
            } else {
                names.append(.dnsName(host))
            }
        }
        return try issue(
            subject: try DistinguishedName { CommonName(hostnames.first ?? "hearth") },
            publicKey: .init(publicKey), lifetime: Double(days) * 86_400, now: now,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(names)
            }
        )
    }

    /// A device identity certificate: subject CN is the serial, O the maker, OU the model id.
    /// Client authentication only.
    public func issueDeviceCertificate(
        publicKey: Certificate.PublicKey, serial: DeviceSerial, model: ProductModel, years: Int = 20, now: Date = Date()
    ) throws -> Certificate {
        try issue(
            subject: try DistinguishedName {
                OrganizationName(model.maker)
                OrganizationalUnitName(model.id.rawValue)
                CommonName(serial.rawValue)
            },
            publicKey: publicKey, lifetime: Double(years * 366) * 86_400, now: now,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.clientAuth])
            }
        )
    }

    /// A device certificate for a conformance probe (`hearth assess`): ten minutes long, for a
    /// serial no device has, so it completes a mutual-TLS handshake and nothing more.
    public func issueProbeCertificate(publicKey: Certificate.PublicKey, serial: DeviceSerial, now: Date = Date())
        throws -> Certificate
    {
        try issue(
            subject: try DistinguishedName {
                OrganizationName("Hearth assessment probe")
                CommonName(serial.rawValue)
            },
            publicKey: publicKey, lifetime: 600, now: now,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.clientAuth])
            }
        )
    }

    /// Checks a device's CSR (PEM) — its self-signature proves it holds the key — and issues a
    /// device certificate for its public key. The private key never leaves the device.
    public func signDeviceCSR(pem: String, serial: DeviceSerial, model: ProductModel, now: Date = Date()) throws
        -> Certificate
    {
        let csr: CertificateSigningRequest
        do { csr = try CertificateSigningRequest(pemEncoded: pem) } catch {
            throw HearthError.invalid("csr", "not a PEM certificate signing request")
        }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
            throw HearthError.invalid("csr", "the request's signature does not verify")
        }
        guard P256.Signing.PublicKey(csr.publicKey) != nil || P384.Signing.PublicKey(csr.publicKey) != nil else {
            throw HearthError.invalid("csr", "device keys must be ECDSA P-256 or P-384")
        }
        return try issueDeviceCertificate(publicKey: csr.publicKey, serial: serial, model: model, now: now)
    }

    private func issue(
        subject: DistinguishedName, publicKey: Certificate.PublicKey, lifetime: TimeInterval, now: Date,
        extensions: Certificate.Extensions
    ) throws -> Certificate {
        var extensions = extensions
        try extensions.append(
            AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: .init(privateKey.publicKey)).keyIdentifier)
                .makeCertificateExtension())
        return try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-300),
            notValidAfter: now.addingTimeInterval(lifetime),
            issuer: certificate.subject,
            subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions,
            issuerPrivateKey: .init(privateKey)
        )
    }
}

extension Certificate {
    public func pem() throws -> String { try serializeAsPEM().pemString }

    /// The subject's common name, if any.
    public var commonName: String? {
        subject.flatMap { $0 }.first { $0.type == .RDNAttributeType.commonName }.map { String(describing: $0.value) }
    }

    /// The DNS names and IP addresses in the subject alternative names.
    public var subjectAlternativeHostnames: [String] {
        guard let sans = try? extensions.subjectAlternativeNames else { return [] }
        return sans.compactMap { name in
            switch name {
            case .dnsName(let dns): dns
            case .ipAddress(let octets): IPAddressBytes.format(Array(octets.bytes))
            default: nil
            }
        }
    }
}

/// Checks that `leaf` chains to `root` (signature, validity, CA constraints) with swift-certificates'
/// RFC 5280 verifier.
public func verifyChain(leaf: Certificate, root: Certificate) async -> Bool {
    var verifier = Verifier(rootCertificates: CertificateStore([root])) {
        RFC5280Policy()
    }
    let result = await verifier.validate(leaf: leaf, intermediates: CertificateStore())
    if case .validCertificate = result { return true }
    return false
}

/// An IPv4 or IPv6 literal as bytes, for a certificate's IP SAN.
struct IPAddressBytes {
    let bytes: [UInt8]

    init?(_ text: String) {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0) }
        } else {
            return nil
        }
    }

    static func format(_ bytes: [UInt8]) -> String? {
        var buffer = [CChar](repeating: 0, count: 64)
        let family = bytes.count == 4 ? AF_INET : bytes.count == 16 ? AF_INET6 : -1
        guard family != -1 else { return nil }
        let ok = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buffer, 64) } != nil
        return ok ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
    }
}

import Crypto
import Foundation
import HearthCore
import NIOCore
import NIOEmbedded
import NIOSSL
import NIOTLS
import Testing
import X509

@testable import HearthCrypto

/// The device listener's TLS handler against NIOSSL's client, in memory: every byte between them
/// is moved by the test, so splits, garbage and closes are exact.
@Suite struct MutualTLSTests {
    /// A deployment's worth of credentials: a root for the server, a device CA, one device.
    struct PKI {
        let server: MutualTLSServerContext
        let rootPEM: String
        let deviceCertificate: Certificate
        let deviceKeyPEM: String
        let devicePEM: String

        init() throws {
            let root = try CertificateAuthority.create(commonName: "Test Root")
            let deviceCA = try CertificateAuthority.create(commonName: "Test Device CA")
            let serverKey = P256.Signing.PrivateKey()
            let serverCertificate = try root.issueServerCertificate(
                publicKey: serverKey.publicKey, hostnames: ["localhost"])
            server = try MutualTLSServerContext(
                certificateChainPEM: try serverCertificate.serializeAsPEM().pemString,
                privateKeyPEM: serverKey.pemRepresentation,
                clientCAPEM: try deviceCA.certificate.serializeAsPEM().pemString)
            rootPEM = try root.certificate.serializeAsPEM().pemString
            let deviceKey = P256.Signing.PrivateKey()
            var rng = SystemRandomNumberGenerator()
            deviceCertificate = try deviceCA.issueDeviceCertificate(
                publicKey: .init(deviceKey.publicKey), serial: DeviceSerial.random(using: &rng),
                model: ProductModel.demoModels()[0])
            deviceKeyPEM = deviceKey.pemRepresentation
            devicePEM = try deviceCertificate.serializeAsPEM().pemString
        }

        /// A client with this device's certificate, or with `certificatePEM`/`keyPEM` instead.
        func client(certificatePEM: String? = nil, keyPEM: String? = nil, noCertificate: Bool = false) throws
            -> NIOSSLContext
        {
            let chain =
                noCertificate ? [] : try NIOSSLCertificate.fromPEMBytes(Array((certificatePEM ?? devicePEM).utf8))
            let key =
                noCertificate ? nil : try NIOSSLPrivateKey(bytes: Array((keyPEM ?? deviceKeyPEM).utf8), format: .pem)
            return try NIOSSLContext(
                configuration: TLSPolicy.client(
                    trustRoots: try NIOSSLCertificate.fromPEMBytes(Array(rootPEM.utf8)), certificateChain: chain,
                    privateKey: key))
        }
    }

    /// Records what reaches the end of a pipeline.
    final class Seen: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        var handshakes = 0
        var bytes: [UInt8] = []
        var errors: [any Error] = []
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            bytes += buffer.readBytes(length: buffer.readableBytes) ?? []
        }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .handshakeCompleted = event as? TLSUserEvent { handshakes += 1 }
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { errors.append(error) }
    }

    /// A server and a client channel, both active, and the bytes between them moved by hand.
    struct Pair {
        let server = EmbeddedChannel()
        let client = EmbeddedChannel()
        let handler: MutualTLSServerHandler
        let serverSeen = Seen()
        let clientSeen = Seen()

        init(_ pki: PKI, client clientContext: NIOSSLContext? = nil) throws {
            handler = MutualTLSServerHandler(context: pki.server)
            try server.pipeline.syncOperations.addHandlers([handler, serverSeen])
            try client.pipeline.syncOperations.addHandlers([
                try NIOSSLClientHandler(context: clientContext ?? pki.client(), serverHostname: "localhost"),
                clientSeen,
            ])
            let address = try SocketAddress(ipAddress: "127.0.0.1", port: 8883)
            try server.connect(to: address).wait()
            try client.connect(to: address).wait()
        }

        /// Moves bytes both ways until neither side has more, in pieces of at most `piece` bytes.
        func exchange(piece: Int = .max) throws {
            var moved = true
            while moved {
                moved = false
                while let bytes = try client.readOutbound(as: ByteBuffer.self) {
                    moved = true
                    var rest = bytes
                    while rest.readableBytes > 0, server.isActive,
                        let chunk = rest.readSlice(length: min(piece, rest.readableBytes))
                    {
                        try server.writeInbound(chunk)
                    }
                }
                while let bytes = try server.readOutbound(as: ByteBuffer.self) {
                    moved = true
                    if client.isActive { try client.writeInbound(bytes) }
                }
            }
        }
    }

    @Test func aDeviceCertificateFromTheCACompletesTheHandshakeAndBytesFlowBothWays() throws {
        let pki = try PKI()
        for piece in [Int.max, 1, 7] {
            let pair = try Pair(pki)
            try pair.exchange(piece: piece)
            #expect(pair.serverSeen.handshakes == 1, "pieces of \(piece)")
            #expect(pair.clientSeen.handshakes == 1)
            let der = try #require(pair.handler.peerCertificateDER)
            #expect(try Certificate(derEncoded: der) == pki.deviceCertificate)

            // Both ways, more than one record's worth (16 KiB) each way.
            let up = (0..<40_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let down = (0..<50_000).map { UInt8(truncatingIfNeeded: $0 &* 13) }
            try pair.client.writeAndFlush(ByteBuffer(bytes: up)).wait()
            pair.server.writeAndFlush(ByteBuffer(bytes: down), promise: nil)
            try pair.exchange(piece: piece == Int.max ? piece : 1_000)
            #expect(pair.serverSeen.bytes == up)
            #expect(pair.clientSeen.bytes == down)
            // Idle again: the handler holds no buffer (decision 96).
            #expect(pair.handler.heldCapacity == 0)
            #expect(pair.serverSeen.errors.isEmpty && pair.clientSeen.errors.isEmpty)
        }
    }

    @Test func writesBeforeTheHandshakeWaitAndTheirPromisesComplete() throws {
        let pki = try PKI()
        let pair = try Pair(pki)
        let written = pair.server.eventLoop.makePromise(of: Void.self)
        pair.server.writeAndFlush(ByteBuffer(string: "early"), promise: written)
        try pair.exchange()
        #expect(pair.clientSeen.bytes == Array("early".utf8))
        try written.futureResult.wait()
    }

    @Test func aClientWithoutACertificateOrFromAnotherCAIsRefused() throws {
        let pki = try PKI()
        let other = try CertificateAuthority.create(commonName: "Another CA")
        let key = P256.Signing.PrivateKey()
        var rng = SystemRandomNumberGenerator()
        let foreign = try other.issueDeviceCertificate(
            publicKey: .init(key.publicKey), serial: DeviceSerial.random(using: &rng),
            model: ProductModel.demoModels()[0])
        let clients = [
            ("no certificate", try pki.client(noCertificate: true)),
            (
                "another CA",
                try pki.client(certificatePEM: try foreign.serializeAsPEM().pemString, keyPEM: key.pemRepresentation)
            ),
        ]
        for (what, client) in clients {
            let pair = try Pair(pki, client: client)
            try pair.exchange()
            let errors = pair.serverSeen.errors.compactMap { $0 as? MutualTLSError }
            #expect(errors.count == 1, "\(what): \(errors)")
            if case .handshake(let why) = errors.first {
                #expect(why.contains("CERTIFICATE") || why.contains("certificate"), "\(what): \(why)")
            } else {
                Issue.record("\(what): not a handshake error: \(errors)")
            }
            #expect(!pair.server.isActive, "\(what): the server closed")
            #expect(pair.serverSeen.handshakes == 0)
            #expect(pair.handler.peerCertificateDER == nil)
        }
    }

    @Test func garbageIsAnErrorThatClosesNeverATrap() throws {
        let pki = try PKI()
        var rng = SystemRandomNumberGenerator()
        for round in 0..<200 {
            let pair = try Pair(pki)
            // Before the handshake (instead of a ClientHello), or after it (instead of records).
            if round % 2 == 1 { try pair.exchange() }
            _ = try pair.client.readOutbound(as: ByteBuffer.self)
            let length = Int.random(in: 1...3_000, using: &rng)
            var garbage = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // Half the rounds look like a TLS record header with an extreme length.
            if round % 4 >= 2 { garbage = [0x17, 0x03, 0x03, 0xFF, 0xFF] + garbage }
            try pair.server.writeInbound(ByteBuffer(bytes: garbage))
            try pair.server.writeInbound(ByteBuffer(bytes: garbage))
            // A short record may still wait for its end; anything else is refused and closed.
            for error in pair.serverSeen.errors {
                switch error as? MutualTLSError {
                case .handshake, .protocolError: break
                default: Issue.record("round \(round): \(error)")
                }
            }
            #expect(pair.server.isActive == pair.serverSeen.errors.isEmpty, "round \(round): closed on an error")
            if !pair.server.isActive { #expect(pair.handler.heldCapacity == 0) }
            #expect(pair.serverSeen.bytes.isEmpty, "garbage never reaches MQTT")
        }
    }

    @Test func closingSendsCloseNotifyAndClosesAtOnceAndThePeersCloseNotifyCloses() throws {
        let pki = try PKI()
        // The server ends the connection: it does not wait for the client's answer.
        let ended = try Pair(pki)
        try ended.exchange()
        try ended.server.close().wait()
        #expect(!ended.server.isActive)
        try ended.exchange()
        #expect(!ended.client.isActive, "the client saw close_notify and closed")
        #expect(ended.clientSeen.errors.isEmpty, "an orderly close, not a truncation")

        // The client ends it: the server closes too.
        let peer = try Pair(pki)
        try peer.exchange()
        peer.client.close(promise: nil)
        try peer.exchange()
        #expect(!peer.server.isActive)
        #expect(peer.serverSeen.errors.isEmpty)
    }

    @Test func aContextIsRefusedForCredentialsThatAreNotThere() throws {
        let pki = try PKI()
        #expect(throws: MutualTLSError.self) {
            try MutualTLSServerContext(
                certificateChainPEM: "", privateKeyPEM: pki.deviceKeyPEM, clientCAPEM: pki.rootPEM)
        }
        #expect(throws: MutualTLSError.self) {
            try MutualTLSServerContext(
                certificateChainPEM: pki.devicePEM, privateKeyPEM: "not a key", clientCAPEM: pki.rootPEM)
        }
        #expect(throws: MutualTLSError.self, "a key that is not the certificate's") {
            try MutualTLSServerContext(
                certificateChainPEM: pki.devicePEM, privateKeyPEM: P256.Signing.PrivateKey().pemRepresentation,
                clientCAPEM: pki.rootPEM)
        }
        #expect(throws: MutualTLSError.self) {
            try MutualTLSServerContext(
                certificateChainPEM: pki.devicePEM, privateKeyPEM: pki.deviceKeyPEM, clientCAPEM: "no CA")
        }
    }
}

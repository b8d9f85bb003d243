import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

/// The TLS settings of every Hearth listener and client, in one place (Code of Practice
/// guideline 5; EN 303 645 5.5-1): TLS 1.2 at least (1.3 preferred by negotiation), ECDHE with
/// AES-GCM or ChaCha20-Poly1305 for 1.2 (ECDSA keys: every Hearth certificate is P-256), and key
/// exchange over X25519 (with ML-KEM-768 where the peer offers it), P-256 or P-384 only.
public enum TLSPolicy {
    public static let minimumVersion = TLSVersion.tlsv12
    public static let cipherSuites = [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305",
    ].joined(separator: ":")
    public static let curves: [NIOTLSCurve] = [.x25519_MLKEM768, .x25519, .secp256r1, .secp384r1]

    /// A listener presenting `certificateChain`.
    public static func server(certificateChain: [NIOSSLCertificate], privateKey: NIOSSLPrivateKey) -> TLSConfiguration {
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: certificateChain.map { .certificate($0) }, privateKey: .privateKey(privateKey))
        apply(to: &tls)
        return tls
    }

    /// A client trusting only `trustRoots` (a deployment's own CA), with a certificate of its own
    /// when it has one (a device).
    public static func client(
        trustRoots: [NIOSSLCertificate], certificateChain: [NIOSSLCertificate] = [], privateKey: NIOSSLPrivateKey? = nil
    ) -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(trustRoots)
        tls.certificateChain = certificateChain.map { .certificate($0) }
        tls.privateKey = privateKey.map { .privateKey($0) }
        apply(to: &tls)
        return tls
    }

    /// A client of a service on the Internet (an operator's alert webhook): the system's trust
    /// store, the same versions and suites. Give the handler the server's name to check.
    public static func publicClient() -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        apply(to: &tls)
        return tls
    }

    static func apply(to tls: inout TLSConfiguration) {
        tls.minimumTLSVersion = minimumVersion
        tls.cipherSuites = cipherSuites
        tls.curves = curves
    }
}

/// One TLS client handshake, and how it ended: the negotiated version, or the error.
public enum TLSHandshake {
    /// A client handshake to `host:port`: the negotiated version when it completed, else the error
    /// that ended it (an alert from the server, a verification failure, a closed connection).
    public static func attempt(
        host: String, port: Int, serverHostname: String? = nil, _ configuration: TLSConfiguration
    ) async -> Result<
        TLSVersion?, any Error
    > {
        do {
            let context = try NIOSSLContext(configuration: configuration)
            let done = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: Void.self)
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(5))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: context, serverHostname: serverHostname))
                        try channel.pipeline.syncOperations.addHandler(Watcher(promise: done))
                    }
                }
                .connect(host: host, port: port).get()
            defer { channel.close(promise: nil) }
            let timeout = channel.eventLoop.scheduleTask(in: .seconds(10)) {
                done.fail(ChannelError.connectTimeout(.seconds(10)))
            }
            defer { timeout.cancel() }
            try await done.futureResult.get()
            return .success(try? await channel.nioSSL_tlsVersion().get())
        } catch {
            return .failure(error)
        }
    }

    /// Completes the promise when the handshake completes, fails it on an error or a close first.
    final class Watcher: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let promise: EventLoopPromise<Void>
        init(promise: EventLoopPromise<Void>) { self.promise = promise }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .handshakeCompleted = event as? TLSUserEvent { promise.succeed(()) }
            context.fireUserInboundEventTriggered(event)
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { promise.fail(error) }
        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(ChannelError.eof)
            context.fireChannelInactive()
        }
    }
}

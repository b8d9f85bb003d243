import HearthCrypto
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// TLS handshakes for tests of what a listener or a client negotiates: each says how it ended
/// (completed, or the error that ended it), so a test can tell a refused version from a refused
/// suite or group.
public enum TLSProbe {
    /// A client handshake to `host:port` with `configuration`: nil when it completed, else the
    /// error (an alert from the server, a verification failure, a closed connection).
    public static func handshake(
        host: String = "127.0.0.1", port: Int, serverHostname: String = "localhost", _ configuration: TLSConfiguration
    ) async -> (any Error)? {
        if case .failure(let error) = await TLSHandshake.attempt(
            host: host, port: port, serverHostname: serverHostname, configuration)
        {
            return error
        }
        return nil
    }

    /// The key-exchange cases every Hearth listener is held to, as a client built from `client`
    /// (``TLSPolicy``'s, with the peer's trust roots and certificate) offering one group at a time:
    /// the hybrid post-quantum X25519MLKEM768 is served over TLS 1.3; a classical-only peer still
    /// gets X25519 or P-256 (over 1.3 or 1.2); P-521, outside the policy, is refused; and the hybrid
    /// group alone cannot be used over TLS 1.2, which has no such group.
    public static func keyExchangeCases(_ client: TLSConfiguration) -> [(
        what: String, configuration: TLSConfiguration, served: Bool
    )] {
        func offering(_ curve: NIOTLSCurve, _ version: TLSVersion) -> TLSConfiguration {
            var tls = client
            tls.curves = [curve]
            tls.maximumTLSVersion = version
            return tls
        }
        return [
            ("X25519MLKEM768 alone over TLS 1.3", offering(.x25519_MLKEM768, .tlsv13), true),
            ("X25519 alone (a classical peer) over TLS 1.3", offering(.x25519, .tlsv13), true),
            ("P-256 alone over TLS 1.2", offering(.secp256r1, .tlsv12), true),
            ("X25519MLKEM768 alone over TLS 1.2", offering(.x25519_MLKEM768, .tlsv12), false),
            ("P-521 alone (outside the policy)", offering(.secp521r1, .tlsv13), false),
        ]
    }

    /// A listener on 127.0.0.1 (port 0) that completes TLS handshakes with `configuration` and
    /// counts them; for checking what a client offers (serve only what it must offer).
    public final class Server: Sendable {
        public let port: Int
        private let channel: any Channel
        private let watcher: Counter

        public init(_ configuration: TLSConfiguration) async throws {
            let context = try NIOSSLContext(configuration: configuration)
            let watcher = Counter()
            channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .childChannelInitializer { child in
                    child.eventLoop.makeCompletedFuture {
                        try child.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                        try child.pipeline.syncOperations.addHandler(watcher)
                    }
                }
                .bind(host: "127.0.0.1", port: 0).get()
            port = channel.localAddress?.port ?? 0
            self.watcher = watcher
        }

        /// Handshakes completed so far.
        public var completed: Int { watcher.count.withLock { $0 } }

        public func close() async { try? await channel.close() }
    }

    final class Counter: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let count = Mutex(0)
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .handshakeCompleted = event as? TLSUserEvent { count.withLock { $0 += 1 } }
            context.fireUserInboundEventTriggered(event)
        }
    }
}

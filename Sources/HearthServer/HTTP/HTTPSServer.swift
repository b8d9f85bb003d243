import Crypto
import Foundation
import HearthCore
import HearthCrypto
import HearthMetrics
import Hummingbird
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

/// Builds the HTTPS application: routes, pages, middleware and TLS.
public enum HTTPSServer {
    /// The router with every route and middleware; used by the server and by in-process tests.
    public static func router(hearth: Hearth, logger: Logger) -> Router<HearthRequestContext> {
        let router = Router(context: HearthRequestContext.self)
        router.add(middleware: MetricsMiddleware(metrics: hearth.metrics))
        router.add(middleware: SecurityHeadersMiddleware())
        router.add(middleware: ErrorMiddleware(logger: logger))
        router.add(middleware: HostCheckMiddleware(hosts: Set(hearth.settings.hostnames.map { $0.lowercased() })))
        API(hearth: hearth).register(on: router)
        API.registerRepository(on: router, hearth: hearth)
        Pages(hearth: hearth).register(on: router)
        return router
    }

    /// ``TLSPolicy`` (Code of Practice guideline 5; EN 303 645 5.5-1), HTTP/1.1.
    /// `extraCipherSuites` weakens it: only for the tests of `hearth assess` (`--test-only-weak-suite`).
    public static func tlsConfiguration(folder: DataFolder, extraCipherSuites: String? = nil) throws
        -> TLSConfiguration
    {
        let certificate = try NIOSSLCertificate(bytes: Array(try folder.serverCertificate.pem().utf8), format: .pem)
        let key = try NIOSSLPrivateKey(bytes: Array(folder.serverKey.pemRepresentation.utf8), format: .pem)
        var tls = TLSPolicy.server(certificateChain: [certificate], privateKey: key)
        if let extraCipherSuites { tls.cipherSuites += ":" + extraCipherSuites }
        tls.applicationProtocols = ["http/1.1"]
        return tls
    }

    /// The application, listening on `host:port` over TLS. `onRunning` gets the bound address
    /// (port 0 picks a free port).
    public static func application(
        hearth: Hearth, folder: DataFolder, host: String, port: Int, logger: Logger, extraCipherSuites: String? = nil,
        onRunning: @escaping @Sendable (SocketAddress?) async -> Void
    ) throws -> some ApplicationProtocol {
        Application(
            router: router(hearth: hearth, logger: logger),
            server: try .tls(
                .http1(configuration: .init(idleTimeout: .seconds(60))),
                tlsConfiguration: tlsConfiguration(folder: folder, extraCipherSuites: extraCipherSuites)),
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in await onRunning(channel.localAddress) },
            logger: logger
        )
    }

    /// The metrics listener: `GET /metrics` (Prometheus text format 0.0.4) and nothing else, apart
    /// from the public listener so scrapes never compete with clients and the numbers are not
    /// published to the Internet. Plain HTTP is for loopback only; on any other address it is served
    /// over TLS with the deployment's server certificate (scrapers verify it with the root CA).
    public static func metricsApplication(
        metrics: HearthMetrics, host: String, port: Int, tls: TLSConfiguration?, logger: Logger,
        onRunning: @escaping @Sendable (SocketAddress?) async -> Void
    ) throws -> any Service {
        let router = Router()
        router.add(middleware: SecurityHeadersMiddleware())
        router.get("/metrics") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(
                status: .ok, headers: headers,
                body: ResponseBody(byteBuffer: ByteBuffer(string: await metrics.exposition())))
        }
        let configuration = ApplicationConfiguration(address: .hostname(host, port: port), serverName: nil)
        let running: @Sendable (any Channel) async -> Void = { channel in await onRunning(channel.localAddress) }
        if let tls {
            return Application(
                router: router, server: try .tls(.http1(), tlsConfiguration: tls), configuration: configuration,
                onServerRunning: running, logger: logger)
        }
        return Application(router: router, configuration: configuration, onServerRunning: running, logger: logger)
    }
}

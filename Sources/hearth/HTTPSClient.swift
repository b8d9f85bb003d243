import Foundation
import HearthCore
import HearthCrypto
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A small HTTPS client for the demo: it uses the public API as any client would, trusting only
/// the deployment's root CA. One connection per request.
struct HTTPSClient: Sendable {
    let host: String
    let port: Int
    let tls: NIOSSLContext

    init(host: String, port: Int, rootCAPEM: String) throws {
        self.host = host
        self.port = port
        tls = try NIOSSLContext(
            configuration: TLSPolicy.client(trustRoots: try NIOSSLCertificate.fromPEMBytes(Array(rootCAPEM.utf8))))
    }

    struct Reply: Sendable {
        let status: Int
        let json: JSONValue?

        subscript(_ key: String) -> JSONValue? {
            if case .object(let o)? = json { o[key] } else { nil }
        }
    }

    func request(_ method: HTTPMethod, _ path: String, body: JSONValue? = nil, token: String? = nil) async throws
        -> Reply
    {
        let promise = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: Reply.self)
        let tls = self.tls
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        NIOSSLClientHandler(context: tls, serverHostname: nil))
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ReplyCollector(promise: promise))
                }
            }
            .connect(host: host, port: port).get()
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "host", value: "\(host):\(port)")
        head.headers.add(name: "connection", value: "close")
        let bytes = body.map { Array($0.text.utf8) } ?? []
        if body != nil { head.headers.add(name: "content-type", value: "application/json") }
        head.headers.add(name: "content-length", value: "\(bytes.count)")
        if let token { head.headers.add(name: "authorization", value: "Bearer \(token)") }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if !bytes.isEmpty {
            channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: bytes))), promise: nil)
        }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let timeout = channel.eventLoop.scheduleTask(in: .seconds(30)) { channel.close(promise: nil) }
        defer { timeout.cancel() }
        return try await promise.futureResult.get()
    }
}

final class ReplyCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    let promise: EventLoopPromise<HTTPSClient.Reply>
    var status = 0
    var body = ByteBuffer()

    init(promise: EventLoopPromise<HTTPSClient.Reply>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = Int(head.status.code)
        case .body(var part): body.writeBuffer(&part)
        case .end:
            promise.succeed(HTTPSClient.Reply(status: status, json: try? JSONValue.parse(body.readableBytesView)))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(HearthError(.unavailable, "the server closed the connection before answering"))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}

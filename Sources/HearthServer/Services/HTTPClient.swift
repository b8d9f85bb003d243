import Foundation
import HearthCore
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A small HTTP/1.1 client: one connection per request, TLS unless the caller chose plaintext,
/// a deadline on the whole exchange and a cap on the answer's size (a receiver cannot make the
/// server hold an endless body). Used for the alert webhook and by the demo.
public struct HTTP1Client: Sendable {
    public let host: String
    public let port: Int
    /// nil: plaintext (callers allow it on loopback only).
    let tls: NIOSSLContext?
    /// The name the server's certificate must carry; nil skips the name check (a deployment's
    /// own root CA, pinned, with an address).
    let serverHostname: String?

    public struct Reply: Sendable {
        public let status: Int
        public let body: [UInt8]
    }

    public init(host: String, port: Int, tls: TLSConfiguration?, serverHostname: String?) throws {
        self.host = host
        self.port = port
        self.tls = try tls.map { try NIOSSLContext(configuration: $0) }
        self.serverHostname = serverHostname
    }

    public func send(
        _ method: HTTPMethod, _ path: String, headers: [(String, String)] = [], body: [UInt8] = [],
        hostHeader: String? = nil, timeout: TimeAmount = .seconds(30), maximumReply: Int = 1 << 20
    ) async throws -> Reply {
        let group = MultiThreadedEventLoopGroup.singleton
        let promise = group.next().makePromise(of: Reply.self)
        let (tls, serverHostname) = (self.tls, self.serverHostname)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(min(timeout, .seconds(10)))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls {
                            try channel.pipeline.syncOperations.addHandler(
                                NIOSSLClientHandler(context: tls, serverHostname: serverHostname))
                        }
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(
                            ReplyCollector(promise: promise, maximum: maximumReply))
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            promise.fail(error)
            throw error
        }
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        // The Host a server answers may be a name other than the address connected to.
        let name = hostHeader ?? host
        head.headers.add(name: "host", value: name.contains(":") ? "[\(name)]:\(port)" : "\(name):\(port)")
        head.headers.add(name: "connection", value: "close")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        head.headers.add(name: "content-length", value: "\(body.count)")
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if !body.isEmpty {
            channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
        }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let deadline = channel.eventLoop.scheduleTask(in: timeout) {
            promise.fail(HearthError(.unavailable, "no answer within \(timeout.nanoseconds / 1_000_000_000) s"))
            channel.close(promise: nil)
        }
        defer { deadline.cancel() }
        return try await promise.futureResult.get()
    }
}

final class ReplyCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    let promise: EventLoopPromise<HTTP1Client.Reply>
    let maximum: Int
    var status = 0
    var body: [UInt8] = []

    init(promise: EventLoopPromise<HTTP1Client.Reply>, maximum: Int) {
        self.promise = promise
        self.maximum = maximum
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = Int(head.status.code)
        case .body(let part):
            guard body.count + part.readableBytes <= maximum else {
                promise.fail(HearthError(.unavailable, "the answer is larger than \(maximum) bytes"))
                context.close(promise: nil)
                return
            }
            body += part.readableBytesView
        case .end:
            promise.succeed(HTTP1Client.Reply(status: status, body: body))
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

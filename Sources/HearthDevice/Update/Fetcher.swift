import Foundation
import HearthCore
import HearthCrypto
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Where the device gets update metadata and images. Paths are under the repository's base
/// (`metadata/…`, `targets/…`). A missing file is `nil`; anything longer than `limit` stops the
/// transfer (endless-data attack).
public protocol UpdateFetcher: Sendable {
    func fetch(_ path: String, limit: Int) async throws -> [UInt8]?
    /// Appends to `file` from its current size (resuming an interrupted download) until the whole
    /// resource is there; fsyncs as it goes. Throws ``UpdateFetchError/tooLong`` past `limit`.
    func download(_ path: String, to file: URL, limit: Int) async throws
}

public enum UpdateFetchError: Error, Equatable, CustomStringConvertible {
    case tooLong(limit: Int)
    case status(Int)
    case notFound

    public var description: String {
        switch self {
        case .tooLong(let limit): "the server sent more than \(limit) bytes (endless data)"
        case .status(let s): "the repository answered HTTP \(s)"
        case .notFound: "the repository has no such file"
        }
    }
}

/// HTTPS from the deployment's repository, trusting only the deployment root CA the device was
/// provisioned with. One connection per request; byte ranges for resume.
public struct HTTPSUpdateFetcher: UpdateFetcher {
    let host: String
    let port: Int
    let basePath: String
    let tls: NIOSSLContext
    let timeout: TimeAmount

    /// - Parameter base: e.g. `https://hearth.example:8443/tuf`.
    public init(base: URL, trustRootsPEM: String, timeout: TimeAmount = .seconds(30)) throws {
        guard base.scheme == "https", let host = base.host else {
            throw DeviceError("the update repository must be an https:// URL")
        }
        self.host = host
        port = base.port ?? 443
        basePath = base.path.hasSuffix("/") ? String(base.path.dropLast()) : base.path
        tls = try NIOSSLContext(
            configuration: TLSPolicy.client(trustRoots: try NIOSSLCertificate.fromPEMBytes(Array(trustRootsPEM.utf8))))
        self.timeout = timeout
    }

    public func fetch(_ path: String, limit: Int) async throws -> [UInt8]? {
        var collected: [UInt8] = []
        do {
            try await get(path, from: 0, limit: limit) { collected += $0 }
        } catch UpdateFetchError.notFound {
            return nil
        }
        return collected
    }

    /// Downloads and discards, returning the byte count (for benchmarks).
    public func drain(_ path: String, limit: Int) async throws -> Int {
        var count = 0
        try await get(path, from: 0, limit: limit) { count += $0.count }
        return count
    }

    public func download(_ path: String, to file: URL, limit: Int) async throws {
        if !FileManager.default.fileExists(atPath: file.path) {
            FileManager.default.createFile(atPath: file.path, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        let handle = try FileHandle(forWritingTo: file)
        defer { try? handle.close() }
        let have = Int(try handle.seekToEnd())
        guard have <= limit else { throw UpdateFetchError.tooLong(limit: limit) }
        var unsynced = 0
        do {
            try await get(path, from: have, limit: limit - have) { chunk in
                try handle.write(contentsOf: chunk)
                unsynced += chunk.count
                if unsynced >= 256 * 1024 {
                    try handle.synchronize()
                    unsynced = 0
                }
            }
        } catch UpdateFetchError.status(416) {
            // Nothing after `have`: the file is complete already.
        }
        try handle.synchronize()
    }

    /// GET with `Range: bytes=from-` when resuming; chunks go to `sink` as they arrive.
    func get(_ path: String, from: Int, limit: Int, sink: ([UInt8]) throws -> Void) async throws {
        let tls = self.tls
        let (chunks, continuation) = AsyncThrowingStream<HTTPClientResponsePart, any Error>.makeStream()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        NIOSSLClientHandler(context: tls, serverHostname: nil))
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseStreamer(continuation: continuation))
                }
            }
            .connect(host: host, port: port).get()
        defer { channel.close(promise: nil) }
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: basePath + "/" + path)
        head.headers.add(name: "host", value: "\(host):\(port)")
        head.headers.add(name: "connection", value: "close")
        if from > 0 { head.headers.add(name: "range", value: "bytes=\(from)-") }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let deadline = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
        defer { deadline.cancel() }
        var received = 0
        for try await part in chunks {
            switch part {
            case .head(let response):
                switch response.status.code {
                case 200 where from == 0, 206: break
                case 404: throw UpdateFetchError.notFound
                default: throw UpdateFetchError.status(Int(response.status.code))
                }
            case .body(let buffer):
                received += buffer.readableBytes
                guard received <= limit else { throw UpdateFetchError.tooLong(limit: limit) }
                try sink(Array(buffer.readableBytesView))
            case .end:
                return
            }
        }
        throw DeviceError("the repository closed the connection before the end of \(path)")
    }
}

final class ResponseStreamer: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    let continuation: AsyncThrowingStream<HTTPClientResponsePart, any Error>.Continuation

    init(continuation: AsyncThrowingStream<HTTPClientResponsePart, any Error>.Continuation) {
        self.continuation = continuation
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        continuation.yield(part)
        if case .end = part { continuation.finish() }
    }

    func channelInactive(context: ChannelHandlerContext) { continuation.finish() }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        continuation.finish(throwing: error)
        context.close(promise: nil)
    }
}

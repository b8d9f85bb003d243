import Foundation
import HearthCore
import HearthCrypto
import HearthServer
import NIOCore
import NIOHTTP1
import NIOSSL

/// A small HTTPS client for the demo: it uses the public API as any client would, trusting only
/// the deployment's root CA. One connection per request.
struct HTTPSClient: Sendable {
    let client: HTTP1Client

    init(host: String, port: Int, rootCAPEM: String) throws {
        client = try HTTP1Client(
            host: host, port: port,
            tls: TLSPolicy.client(trustRoots: try NIOSSLCertificate.fromPEMBytes(Array(rootCAPEM.utf8))),
            serverHostname: nil)
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
        var headers: [(String, String)] = []
        if body != nil { headers.append(("content-type", "application/json")) }
        if let token { headers.append(("authorization", "Bearer \(token)")) }
        let reply = try await client.send(method, path, headers: headers, body: body.map { Array($0.text.utf8) } ?? [])
        return Reply(status: reply.status, json: try? JSONValue.parse(reply.body))
    }
}

import Foundation
import HTTPTypes
import HearthCore
import HearthMetrics
import Hummingbird
import Logging

/// Security headers on every response (Code of Practice guideline 5 and 6): HSTS, a strict CSP that
/// allows only the site's own script file (no inline script; the pages work without it), no framing, no sniffing, no referrer, and no caching of API answers.
struct SecurityHeadersMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        var response = try await next(request, context)
        let h = [
            ("Strict-Transport-Security", "max-age=63072000; includeSubDomains"),
            (
                "Content-Security-Policy",
                "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
            ),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            // same-origin, not no-referrer: with no-referrer a browser's own form posts carry
            // `Origin: null`, and no form worked (issue 13). Nothing leaves for other origins.
            ("Referrer-Policy", "same-origin"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
            ("Cross-Origin-Resource-Policy", "same-origin"),
            ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()"),
        ]
        for (name, value) in h { response.headers[HTTPField.Name(name)!] = value }
        if response.headers[.cacheControl] == nil { response.headers[.cacheControl] = "no-store" }
        return response
    }
}

/// Answers only requests for the server's own names (`--hostname`, the names its certificate
/// covers): any other Host gets 421, a missing one 400. So no page, link or document is ever built
/// from a name an attacker chose (security.txt, CSAF metadata, advisories).
struct HostCheckMiddleware<Context: RequestContext>: RouterMiddleware {
    let hosts: Set<String>

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        guard let authority = request.head.authority, !authority.isEmpty else {
            throw HearthError(.invalidInput, field: "Host", "the Host header is required")
        }
        guard let host = Self.host(of: authority), hosts.contains(host) else {
            throw HearthError(.misdirected, field: "Host", "this server does not answer for that host name")
        }
        return try await next(request, context)
    }

    /// The host part of `host[:port]` or `[v6][:port]`, lower-cased; nil if malformed.
    static func host(of authority: String) -> String? {
        guard authority.utf8.count <= 260 else { return nil }
        var host = Substring(authority.lowercased())
        var port: Substring?
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return nil }
            let rest = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { return nil }
                port = rest.dropFirst()
            }
        } else if let colon = host.firstIndex(of: ":") {
            port = host[host.index(after: colon)...]
            host = host[..<colon]
        }
        if let port, NetworkInput.nonNegativeInteger(port, maximum: 65_535) == nil { return nil }
        return host.isEmpty ? nil : String(host)
    }
}

/// Turns every error into the one documented shape: `{"error": code, "message": text, "field"?: name}`
/// for the API, a plain page for browsers. Unexpected errors are logged and answered with a generic 500.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = HearthRequestContext
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch {
            let hearthError = Self.hearthError(from: error)
            if hearthError.code == .internal || hearthError.code == .integrity {
                // The route's pattern, never the path: a path can carry a one-time token (/setup/…).
                context.logger.error(
                    "request failed",
                    metadata: ["route": "\(context.endpointPath ?? "unmatched")", "error": "\(error)"])
            }
            if request.uri.path.hasPrefix("/api/") {
                return Self.response(for: hearthError)
            }
            return Pages.errorPage(hearthError)
        }
    }

    static func hearthError(from error: any Error) -> HearthError {
        switch error {
        case let e as HearthError: return e
        case let e as any HTTPResponseError:
            switch e.status {
            case .notFound: return HearthError(.notFound, "no such resource")
            case .methodNotAllowed: return HearthError(.notFound, "no such resource for this method")
            case .contentTooLarge: return HearthError(.payloadTooLarge, "the body is too large")
            default: return HearthError(.invalidInput, "the request could not be handled (\(e.status.code))")
            }
        default: return HearthError(.internal, "something went wrong on our side; it has been logged")
        }
    }

    /// The single place that maps Hearth error codes to HTTP statuses.
    static func status(for code: HearthError.Code) -> HTTPResponse.Status {
        switch code {
        case .invalidInput, .malformedBody, .unknownField: .badRequest
        case .weakPassword, .unprocessable: .unprocessableContent
        case .payloadTooLarge: .contentTooLarge
        case .unsupportedMediaType: .unsupportedMediaType
        case .unauthorized: .unauthorized
        case .forbidden: .forbidden
        case .notFound: .notFound
        case .methodNotAllowed: .methodNotAllowed
        case .conflict: .conflict
        case .throttled: .tooManyRequests
        case .expired: .gone
        case .claimRejected: .unprocessableContent
        case .deviceOffline: .conflict
        case .deviceTimeout: .gatewayTimeout
        case .unavailable: .serviceUnavailable
        case .misdirected: .misdirectedRequest
        case .integrity, .internal: .internalServerError
        }
    }

    static func response(for error: HearthError) -> Response {
        var body: [String: JSONValue] = ["error": .string(error.code.rawValue), "message": .string(error.message)]
        if let field = error.field { body["field"] = .string(field) }
        var response = JSON.response(.object(body), status: status(for: error.code))
        if let retry = error.retryAfter { response.headers[.retryAfter] = String(retry) }
        if error.code == .unauthorized { response.headers[.wwwAuthenticate] = "Bearer" }
        return response
    }
}

enum JSON {
    static func response(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status,
            headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(data: value.serialized()))
        )
    }
}

/// Reads request bodies with a hard cap, before parsing anything.
enum Body {
    static func bytes(_ request: Request, limit: Int) async throws -> [UInt8] {
        if let length = request.headers[.contentLength].flatMap({ NetworkInput.nonNegativeInteger($0) }), length > limit
        {
            throw HearthError(.payloadTooLarge, "the body is \(length) bytes; this endpoint accepts at most \(limit)")
        }
        do {
            let buffer = try await request.body.collect(upTo: limit)
            return Array(buffer: buffer)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw HearthError(.payloadTooLarge, "the body is larger than \(limit) bytes")
        } catch {
            // The HTTP parser refused the body itself (a broken chunked encoding, a transfer coding
            // it does not take): the client's fault, not ours.
            throw HearthError(
                .malformedBody, "the request body could not be read (check Content-Length and Transfer-Encoding)")
        }
    }

    /// A JSON body checked against `schema`: media type, size, UTF-8, syntax, unknown fields, types.
    static func json(_ request: Request, schema: ObjectSchema, limit: Int) async throws -> ValidatedObject {
        guard NetworkInput.isJSONMediaType(request.headers[.contentType]) else {
            throw HearthError(.unsupportedMediaType, "send the body as application/json (charset, if given, utf-8)")
        }
        let bytes = try await self.bytes(request, limit: limit)
        return try schema.validate(try JSONValue.parse(bytes))
    }

    /// An HTML form body (application/x-www-form-urlencoded), every value a string.
    static func form(_ request: Request, limit: Int) async throws -> [String: String] {
        guard NetworkInput.isMediaType(request.headers[.contentType], "application/x-www-form-urlencoded") else {
            throw HearthError(.unsupportedMediaType, "send the form as application/x-www-form-urlencoded")
        }
        let bytes = try await self.bytes(request, limit: limit)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw HearthError(.malformedBody, "the form is not valid UTF-8")
        }
        var fields: [String: String] = [:]
        for pair in text.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = decode(parts[0]), let value = decode(parts.count > 1 ? parts[1] : "") else {
                throw HearthError(.malformedBody, "the form is not well-formed")
            }
            guard fields[name] == nil, fields.count < 32 else {
                throw HearthError(.malformedBody, "repeated or too many form fields")
            }
            fields[name] = value
        }
        return fields
    }

    static func decode(_ part: Substring) -> String? {
        part.replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }
}

/// The methods counted under their own name; any other is `other`.
private let standardMethods: Set<String> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]

/// Counts each request in `hearth_http_requests_total` and times it, by method, the matched route's
/// pattern and status (``HearthMetrics``). Outermost, so errors are counted with the status they
/// are answered with. A method outside the standard ones is counted as `other`, a path no route
/// matched as `unmatched`: what a client sends never becomes a label value.
struct MetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: HearthMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let clock = ContinuousClock()
        let started = clock.now
        let method = standardMethods.contains(request.method.rawValue) ? request.method.rawValue : "other"
        func record(_ status: Int) {
            metrics.request(
                method: method, route: context.endpointPath ?? "unmatched", status: status,
                duration: clock.now - started)
        }
        do {
            let response = try await next(request, context)
            record(response.status.code)
            return response
        } catch {
            record((error as? any HTTPResponseError)?.status.code ?? 500)
            throw error
        }
    }
}

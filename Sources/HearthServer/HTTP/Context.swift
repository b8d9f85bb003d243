import HearthCore
import Hummingbird
import NIOCore

/// The request context: the caller's address (for throttling) and, once authenticated, who they are.
public struct HearthRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The peer's IP address, or "unknown" (in-process tests).
    public let source: String
    public var identity: Identity?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        self.source = source.channel.remoteAddress?.ipAddress ?? "unknown"
    }

    /// The signed-in identity, or 401.
    public func requireIdentity() throws -> Identity {
        guard let identity else {
            throw HearthError(
                .unauthorized, "sign in first: send 'Authorization: Bearer <token>' from POST /api/v1/sessions")
        }
        return identity
    }

    /// Bodies are read by the routes themselves with their own caps.
    public var maxUploadSize: Int { 16 * 1024 }
}

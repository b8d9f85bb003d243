/// The one error type that crosses module boundaries in Hearth.
///
/// A public struct over a closed set of codes: every layer throws it, and exactly one function per
/// protocol (HTTP today, MQTT later) maps a ``Code`` to a wire status. `field` names the offending
/// input field, so that a client can show the error where it belongs.
public struct HearthError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable, CaseIterable {
        /// A value failed its type, length or range check.
        case invalidInput = "invalid_input"
        /// The body is not well-formed JSON (or form data), or not UTF-8.
        case malformedBody = "malformed_body"
        /// The body has a field the endpoint does not declare.
        case unknownField = "unknown_field"
        /// The body is larger than the endpoint accepts.
        case payloadTooLarge = "payload_too_large"
        /// The body has a content type the endpoint does not accept.
        case unsupportedMediaType = "unsupported_media_type"
        /// A password was rejected by the password policy.
        case weakPassword = "weak_password"
        /// The body matches the endpoint's schema, but what it asks cannot be done as asked: a
        /// command the device's model lacks or a value outside the model's range, a rollout plan
        /// whose stages do not rise to 100, a product model whose bounds contradict each other.
        case unprocessable
        /// No valid credential was presented.
        case unauthorized
        /// The credential is valid but lacks the role for this action.
        case forbidden
        case notFound = "not_found"
        /// The resource exists but does not take this method (the answer lists those it takes).
        case methodNotAllowed = "method_not_allowed"
        /// The thing already exists (an e-mail address already registered, a model id taken).
        case conflict
        /// Too many attempts: try again after `retryAfter` seconds.
        case throttled
        /// A set-up link or token that is used up or past its expiry.
        case expired
        /// A device claim that did not match (wrong code and unknown serial look the same).
        case claimRejected = "claim_rejected"
        /// The device has no live connection to the gateway.
        case deviceOffline = "device_offline"
        /// The device did not answer in time.
        case deviceTimeout = "device_timeout"
        /// A part this request needs is not running in this server, or it is overloaded (with
        /// `retryAfter`).
        case unavailable
        /// The request names a host this server does not serve (a Host header not among its
        /// configured names).
        case misdirected
        /// Stored data failed an integrity check.
        case integrity
        case `internal`
    }

    public let code: Code

    /// Whether the error is about the field `name` or something inside it (`models[0]`,
    /// `parameters.target` are about `models`, `parameters`).
    public func concerns(_ name: String) -> Bool {
        guard let field else { return false }
        return field == name || field.hasPrefix(name + ".") || field.hasPrefix(name + "[")
    }
    public let field: String?
    public let message: String
    /// Seconds to wait, for ``Code/throttled``.
    public let retryAfter: Int?

    public init(_ code: Code, field: String? = nil, _ message: String, retryAfter: Int? = nil) {
        self.code = code
        self.field = field
        self.message = message
        self.retryAfter = retryAfter
    }

    public var description: String {
        if let field { return "\(code.rawValue) (\(field)): \(message)" }
        return "\(code.rawValue): \(message)"
    }

    public static func invalid(_ field: String, _ message: String) -> HearthError {
        HearthError(.invalidInput, field: field, message)
    }
}

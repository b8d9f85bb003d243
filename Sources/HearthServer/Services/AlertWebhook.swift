import Crypto
import Foundation
import HearthCore
import HearthCrypto
import HearthMonitor
import HearthStorage
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import ServiceLifecycle

/// Where alerts go besides the console (`--alert-webhook`): an `https://` URL, or `http://` on
/// loopback only (a local relay), like every other plaintext surface of Hearth.
public struct WebhookTarget: Sendable, Equatable {
    public let host: String
    public let port: Int
    public let path: String
    public let secure: Bool

    public init(parsing text: String) throws {
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(),
            let host = url.host, !host.isEmpty, url.user == nil, url.password == nil
        else {
            throw HearthError.invalid("alert-webhook", "an absolute URL such as https://alerts.example.com/hearth")
        }
        let bareHost = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        switch scheme {
        case "https": secure = true
        case "http" where HostPort.isLoopback(bareHost):
            secure = false
        case "http": throw HearthError.invalid("alert-webhook", "plain http is for loopback receivers only; use https")
        default: throw HearthError.invalid("alert-webhook", "the URL must be https://")
        }
        if let port = url.port, !(1...65535).contains(port) {
            throw HearthError.invalid("alert-webhook", "the port must be 1-65535")
        }
        self.host = bareHost
        port = url.port ?? (secure ? 443 : 80)
        path =
            (url.percentEncodedPath.isEmpty ? "/" : url.percentEncodedPath)
            + (url.percentEncodedQuery.map { "?" + $0 } ?? "")
    }
}

/// Delivers each alert to the operator's webhook (guideline 10): a JSON document, signed with
/// HMAC-SHA-256 under the operator's secret, retried with exponential backoff until the receiver
/// takes it (any 2xx). The outbox is the alerts table itself, so an alert raised while the
/// receiver is down — or the server restarts — is sent once it is back; alerts older than a day
/// when first tried are left to the console. It runs as its own service: the alert is stored and
/// the device's traffic goes on whatever the receiver does.
///
/// Request headers: `X-Hearth-Delivery` (the alert id: receivers drop repeats of it, since a
/// delivery whose answer was lost is sent again), `X-Hearth-Signature: t=UNIX,v1=HEX` where HEX is
/// HMAC-SHA-256(secret, "UNIX.BODY") — a receiver checks it and that UNIX is recent.
public final class AlertWebhook: Service, Sendable {
    let target: WebhookTarget
    let key: SymmetricKey
    let store: any HearthStore
    let time: any TimeSource
    let logger: Logger
    let client: HTTP1Client
    let lease: Lease
    private let wake: AsyncStream<Void>.Continuation
    private let wakes: AsyncStream<Void>
    /// Backoff after the n-th failure: 1 s, 2 s, 4 s … capped at 5 minutes.
    static func backoff(afterAttempts n: Int) -> TimeInterval { min(300, pow(2, Double(min(max(n - 1, 0), 16)))) }
    static let horizon: TimeInterval = 86_400

    public init(
        target: WebhookTarget, secret: [UInt8], store: any HearthStore, time: any TimeSource = SystemTimeSource(),
        trustRoots: [NIOSSLCertificate]? = nil, logger: Logger = Logger(label: "hearth.webhook")
    ) throws {
        guard secret.count >= 16 else {
            throw HearthError.invalid("alert-webhook-secret-file", "the secret must be at least 16 bytes")
        }
        self.target = target
        key = SymmetricKey(data: secret)
        self.store = store
        self.time = time
        self.logger = logger
        lease = Lease(store: store, name: "alert-webhook")
        var tls: TLSConfiguration? = nil
        if target.secure {
            tls = trustRoots.map { TLSPolicy.client(trustRoots: $0) } ?? TLSPolicy.publicClient()
        }
        client = try HTTP1Client(
            host: target.host, port: target.port, tls: tls, serverHostname: target.secure ? target.host : nil)
        (wakes, wake) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// A new alert is in the outbox.
    public func alertRaised() { wake.yield() }

    /// The signature header for `body` sent at `timestamp`.
    public static func signature(_ body: [UInt8], timestamp: Int64, key: SymmetricKey) -> String {
        var signed = Array("\(timestamp).".utf8)
        signed += body
        let mac = HMAC<SHA256>.authenticationCode(for: signed, using: key)
        return "t=\(timestamp),v1=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    public static func document(_ alert: AlertRecord) -> JSONValue {
        let plain = Detection.Kind(rawValue: alert.kind)?.plainEnglish
        return .object([
            "id": .string(alert.id), "device": .string(alert.serial.rawValue), "kind": .string(alert.kind),
            "severity": .string(alert.severity),
            "evidence": (try? JSONValue.parse(Array(alert.evidence.utf8))) ?? .null,
            "raisedAt": .string(alert.raisedAt.formatted(.iso8601)), "state": .string(alert.state.rawValue),
            "summary": plain.map(JSONValue.string) ?? .null,
        ])
    }

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let nextWake: TimeInterval
                do { nextWake = try await self.deliverDue() } catch {
                    // The database is busy or failing: the outbox keeps, so try again shortly.
                    self.logger.error("alert webhook outbox not read", metadata: ["error": "\(error)"])
                    nextWake = 5
                }
                // Sleep until the next retry is due or a new alert arrives.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { for await _ in self.wakes { return } }
                    group.addTask { try await Task.sleep(for: .seconds(nextWake)) }
                    try await group.next()
                    group.cancelAll()
                }
            }
        }
    }

    /// Sends what is due; returns how long to wait before looking again.
    func deliverDue() async throws -> TimeInterval {
        let now = time.now()
        // One node of the deployment sends (the lease's holder, renewed at each look): a receiver
        // gets each alert from one sender, not once per node.
        guard try await lease.hold(for: 30, now: now) else { return 5 }
        let due = try await store.alertsToDeliver(since: now.addingTimeInterval(-Self.horizon), now: now, limit: 100)
        for (alert, attempts) in due {
            let body = Array(Self.document(alert).text.utf8)
            let timestamp = Int64(time.now().timeIntervalSince1970)
            var delivered = false
            do {
                let reply = try await client.send(
                    .POST, target.path,
                    headers: [
                        ("content-type", "application/json"), ("user-agent", "Hearth-Alerts/1"),
                        ("x-hearth-delivery", alert.id),
                        ("x-hearth-signature", Self.signature(body, timestamp: timestamp, key: key)),
                    ], body: body, timeout: .seconds(10), maximumReply: 64 * 1024)
                delivered = (200..<300).contains(reply.status)
                if !delivered {
                    logger.warning(
                        "alert webhook refused the alert",
                        metadata: ["status": "\(reply.status)", "alert": "\(alert.id)"])
                }
            } catch {
                logger.warning("alert webhook unreachable", metadata: ["alert": "\(alert.id)", "error": "\(error)"])
            }
            let retry = delivered ? nil : time.now().addingTimeInterval(Self.backoff(afterAttempts: attempts + 1))
            try await store.recordAlertDelivery(alert.id, delivered: delivered, nextAttempt: retry, at: time.now())
        }
        // A full page: more are waiting now. Otherwise check again within a second (a retry may
        // fall due; the outbox query is one indexed read).
        return due.count == 100 ? 0 : 1
    }
}

import Crypto
import Foundation
import HTTPTypes
import HearthCore
import HearthMonitor
import HearthServer
import HearthStorage
import HearthTestSupport
import Hummingbird
import NIOCore
import ServiceLifecycle
import Synchronization
import Testing

/// The operator's alert webhook (issue 16): each alert reaches a local receiver once, signed; a
/// receiver that is down delays nothing else and gets the alert once it is back.
@Suite struct WebhookTests {
    /// What a receiver got: the signature and delivery headers and the body.
    struct Delivery: Sendable {
        let signature: String
        let id: String
        let body: [UInt8]
    }

    final class Deliveries: Sendable {
        let list = Mutex<[Delivery]>([])
        func withLock<T>(_ body: (inout [Delivery]) -> T) -> T { list.withLock { body(&$0) } }
    }

    /// A receiver on 127.0.0.1:`port` (0: any) until the returned task is cancelled.
    static func receiver(port: Int, into log: Deliveries) async throws -> (Task<Void, any Error>, Int) {
        let router = Router()
        router.post("/hook") { request, _ -> HTTPResponse.Status in
            let body = try await request.body.collect(upTo: 1 << 20)
            log.withLock {
                $0.append(
                    Delivery(
                        signature: request.headers[HTTPField.Name("x-hearth-signature")!] ?? "",
                        id: request.headers[HTTPField.Name("x-hearth-delivery")!] ?? "",
                        body: Array(buffer: body)))
            }
            return .noContent
        }
        let (bound, boundPort) = AsyncStream.makeStream(of: Int.self)
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)),
            onServerRunning: { boundPort.yield($0.localAddress?.port ?? 0) })
        let task = Task { try await app.runService(gracefulShutdownSignals: []) }
        var iterator = bound.makeAsyncIterator()
        return (task, await iterator.next() ?? 0)
    }

    static func waitFor(_ what: String, within seconds: Double = 20, _ condition: () -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition() {
            guard Date() < deadline else { throw DevicePathTests.TestFailure("not within \(seconds) s: \(what)") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    @Test func eachAlertReachesTheReceiverOnceSignedAndADownReceiverDelaysNothing() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let units = try await d.provisionThermostats(2)
        let secret = Array("a-webhook-secret-of-enough-length".utf8)
        let got = Deliveries()
        var (receiver, port) = try await Self.receiver(port: 0, into: got)
        let webhook = try AlertWebhook(
            target: try WebhookTarget(parsing: "http://127.0.0.1:\(port)/hook"), secret: secret, store: d.store,
            time: d.time)
        let alerts = SecurityAlerts(store: d.store, quarantineAt: nil, webhook: webhook)
        let service = Task { try await webhook.run() }
        defer { service.cancel() }
        func raise(_ kind: Detection.Kind, _ unit: Int) async {
            await alerts.detected(
                Detection(kind: kind, severity: .medium, evidence: ["refused": 12], at: d.time.now()),
                device: units[unit].serial)
        }

        await raise(.garbage, 0)
        try await Self.waitFor("the first alert delivered") { got.withLock { $0.count } == 1 }
        let first = got.withLock { $0[0] }
        let stored = try await d.store.alerts(in: [.open], limit: 10)
        #expect(first.id == stored.first?.id)
        // The signature checks out with the secret, over "t.body".
        let t = try #require(first.signature.firstMatch(of: #/^t=(\d+),v1=([0-9a-f]{64})$/#), "\(first.signature)")
        let mac = HMAC<SHA256>.authenticationCode(
            for: Array("\(t.1).".utf8) + first.body, using: SymmetricKey(data: secret))
        #expect(mac.map { String(format: "%02x", $0) }.joined() == String(t.2))
        let document = try JSONValue.parse(first.body)
        guard case .object(let o) = document else { throw DevicePathTests.TestFailure("not an object") }
        #expect(o["kind"] == "garbage" && o["severity"] == "medium" && o["device"] == .string(units[0].serial.rawValue))
        #expect(o["summary"] == .string(Detection.Kind.garbage.plainEnglish))
        // A tampered body fails the check (the test can fail).
        let tampered = HMAC<SHA256>.authenticationCode(
            for: Array("\(t.1).".utf8) + first.body + [0x20], using: SymmetricKey(data: secret))
        #expect(tampered.map { String(format: "%02x", $0) }.joined() != String(t.2))

        // The receiver hangs: its port takes connections and never answers, so each delivery
        // waits out the webhook's 10 s. Alerts are still stored at once, for any device: raising
        // two that waited for the receiver would take 20 s. (A receiver that is down refuses at
        // once, which would not tell the two apart; 5 s leaves room for a loaded machine.)
        receiver.cancel()
        _ = await receiver.result
        let hanging = try #require(SilentListener(port: port), "port \(port) taken again")
        let clock = ContinuousClock()
        let raised = try await clock.measure {
            await raise(.probe, 1)
            await raise(.churn, 0)
        }
        #expect(raised < .seconds(5), "raising alerts waited for the receiver: \(raised)")
        #expect(try await d.store.alerts(in: [.open], limit: 10).count == 3)
        // The service tried and failed (timed out, then refused once the port is closed); the
        // alerts wait in the outbox for their next attempt.
        var waiting: [(alert: AlertRecord, attempts: Int)] = []
        let deadline = Date().addingTimeInterval(60)
        repeat {
            try await Task.sleep(for: .milliseconds(100))
            waiting = try await d.store.alertsToDeliver(
                since: .distantPast, now: d.time.now().addingTimeInterval(3600), limit: 10)
        } while !(waiting.count == 2 && waiting.allSatisfy { $0.attempts >= 1 }) && Date() < deadline
        #expect(waiting.count == 2 && waiting.allSatisfy { $0.attempts >= 1 }, "\(waiting.map(\.attempts))")
        #expect(got.withLock { $0.count } == 1)
        hanging.closeNow()

        // Back up on the same port: the retries (due once the backoff has passed) deliver both, once.
        (receiver, port) = try await Self.receiver(port: port, into: got)
        defer { receiver.cancel() }
        d.time.advance(by: 600)
        try await Self.waitFor("the alerts raised while down delivered") { got.withLock { $0.count } == 3 }
        try await Task.sleep(for: .milliseconds(1500))
        let ids = got.withLock { $0.map(\.id) }
        #expect(ids.count == 3 && Set(ids).count == 3, "each alert once: \(ids)")
        #expect(
            try await d.store.alertsToDeliver(
                since: .distantPast, now: d.time.now().addingTimeInterval(3600), limit: 10
            ).isEmpty)
    }

    @Test func webhookAddressesArePublicHTTPSOrLoopback() throws {
        for good in [
            "https://alerts.example.com/hearth", "https://alerts.example.com:8443/h?x=1", "http://127.0.0.1:9000/h",
            "http://localhost/h", "http://[::1]:80/",
        ] {
            #expect(throws: Never.self, "\(good)") { try WebhookTarget(parsing: good) }
        }
        for bad in [
            "http://alerts.example.com/h", "ftp://x/", "alerts.example.com", "", "https://",
            "https://user:pw@x.example/", "https://x.example:99999/", "https://x.example:0/", "https://x.example:-1/",
            "http://127.0.0.1.evil.example/",
            "javascript:alert(1)",
        ] {
            #expect(throws: HearthError.self, "\(bad)") { try WebhookTarget(parsing: bad) }
        }
        #expect(try WebhookTarget(parsing: "https://a.example/p?q=1").path == "/p?q=1")
        #expect(try WebhookTarget(parsing: "https://a.example").port == 443)
        // The secret must be long enough to sign with.
        #expect(throws: HearthError.self) {
            try AlertWebhook(
                target: try WebhookTarget(parsing: "https://a.example/"), secret: Array("short".utf8),
                store: try TestDeployment().store)
        }
    }
}

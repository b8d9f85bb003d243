import Prometheus
import Synchronization

/// Every metric Hearth exposes on `/metrics` (Prometheus text format), named and described in this
/// one place. Built on swift-prometheus's registry (the swift-metrics backend), one registry per
/// server instance: nothing global, so servers in one test process never mix their numbers.
///
/// Label values come from closed sets only (a refusal reason, an alert kind, a route *pattern*, a
/// status code): never a serial, an e-mail, a token or a path with an id in it, so the number of
/// series stays bounded and no secret or personal datum reaches a scraper (`MetricsTests`).
public final class HearthMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let collectors = Mutex<[@Sendable () async -> Void]>([])

    // MQTT gateway
    public let connections: Gauge
    public let messagesIn: Counter
    public let messagesOut: Counter
    public let deliveriesDropped: Counter
    // Telemetry ingest
    public let ingestBatchSize: ValueHistogram
    public let ingestCommitSeconds: DurationHistogram
    public let ingestQueueDepth: Gauge
    public let readingsStored: Counter
    // Monitoring
    public let detectionsDropped: Counter

    /// Why the gateway refused something; the label `reason` of `hearth_mqtt_refusals_total`.
    public enum Refusal: String, Sendable, CaseIterable {
        case unauthenticatedFlood = "unauthenticated_flood"
        case deviceRefused = "device_refused"
        case rateLimited = "rate_limited"
        case updateReportsRateLimited = "update_reports_rate_limited"
        case accessDenied = "access_denied"
        case invalidPayload = "invalid_payload"
        case quarantine
    }

    private let refusals: [Refusal: Counter]
    private let connects: (accepted: Counter, refused: Counter)

    public init() {
        let r = registry
        connections = r.makeGauge(name: "hearth_mqtt_connections", help: "MQTT connections open now.")
        let connectsHelp = "MQTT CONNECTs answered, by result."
        connects = (
            r.makeCounter(name: "hearth_mqtt_connects_total", labels: [("result", "accepted")], help: connectsHelp),
            r.makeCounter(name: "hearth_mqtt_connects_total", labels: [("result", "refused")], help: connectsHelp)
        )
        refusals = Dictionary(
            uniqueKeysWithValues: Refusal.allCases.map {
                (
                    $0,
                    r.makeCounter(
                        name: "hearth_mqtt_refusals_total", labels: [("reason", $0.rawValue)],
                        help: "Connections, publishes and subscriptions the gateway refused, by reason.")
                )
            })
        let messagesHelp = "MQTT PUBLISH packets received from clients (in) and sent to them (out)."
        messagesIn = r.makeCounter(
            name: "hearth_mqtt_messages_total", labels: [("direction", "in")], help: messagesHelp)
        messagesOut = r.makeCounter(
            name: "hearth_mqtt_messages_total", labels: [("direction", "out")], help: messagesHelp)
        deliveriesDropped = r.makeCounter(
            name: "hearth_mqtt_deliveries_dropped_total",
            help: "Messages not delivered because a subscriber's queue was full.")
        ingestBatchSize = r.makeValueHistogram(
            name: "hearth_ingest_batch_size", buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 8192],
            help: "Readings written per telemetry transaction (group commit).")
        ingestCommitSeconds = r.makeDurationHistogram(
            name: "hearth_ingest_commit_seconds",
            buckets: [
                .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
                .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1),
            ],
            help: "Time to commit one telemetry transaction to disk.")
        ingestQueueDepth = r.makeGauge(
            name: "hearth_ingest_queue_depth", help: "Readings waiting for the next telemetry transaction.")
        readingsStored = r.makeCounter(name: "hearth_readings_stored_total", help: "Readings committed to disk.")
        detectionsDropped = r.makeCounter(
            name: "hearth_detections_dropped_total",
            help: "Detections dropped because the alert service fell more than 10,000 behind.")
    }

    public func connect(accepted: Bool) { (accepted ? connects.accepted : connects.refused).increment() }

    public func refused(_ reason: Refusal, _ n: Int = 1) { refusals[reason]?.increment(by: Int64(n)) }

    /// An alert raised: `hearth_alerts_total{kind,severity}` (both from closed sets).
    public func alert(kind: String, severity: String) {
        registry.makeCounter(
            name: "hearth_alerts_total", labels: [("kind", kind), ("severity", severity)],
            help: "Security alerts raised, by detection kind and severity."
        ).increment()
    }

    /// One HTTP request answered. `route` is the matched route's pattern (`/api/v1/devices/{serial}`),
    /// never the path itself.
    public func request(method: String, route: String, status: Int, duration: Duration) {
        registry.makeCounter(
            name: "hearth_http_requests_total",
            labels: [("method", method), ("route", route), ("status", String(status))],
            help: "HTTP requests answered, by method, route pattern and status."
        ).increment()
        registry.makeDurationHistogram(
            name: "hearth_http_request_duration_seconds", labels: [("method", method), ("route", route)],
            buckets: [
                .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
            ],
            help: "Time to answer an HTTP request, by method and route pattern."
        ).record(duration)
    }

    /// A gauge set from a closed label set (e.g. rollouts by state), for collectors.
    public func gauge(_ name: String, help: String, label: String, value: String) -> Gauge {
        registry.makeGauge(name: name, labels: [(label, value)], help: help)
    }

    /// Work to do before each scrape (values read at that moment: live connections, queue depths,
    /// rollouts by state).
    public func collect(_ collector: @escaping @Sendable () async -> Void) {
        collectors.withLock { $0.append(collector) }
    }

    /// The exposition: collectors run, then every family in Prometheus text format 0.0.4.
    public func exposition() async -> String {
        for collector in collectors.withLock({ $0 }) { await collector() }
        return registry.emitToString()
    }
}

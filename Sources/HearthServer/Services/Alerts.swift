import Foundation
import HearthCore
import HearthMetrics
import HearthMonitor
import HearthStorage
import Logging

/// The server's side of security monitoring (guideline 10; EN 303 645 5.10-1): each detection the
/// gateway hands over becomes an alert — stored with its evidence, in the audit log, listed for
/// operators with a lifecycle (open, acknowledged, resolved), and shown to the device's owner in
/// plain English.
///
/// Each alert also goes to the operator's webhook, when one is configured (``AlertWebhook``: its
/// own service, so a slow receiver holds nothing up).
///
/// Detections at or above `quarantineAt` (high, by default; nil: never) also quarantine the
/// device at once, audited, and the gateway is told.
public final class SecurityAlerts: DeviceAlertChannel {
    let store: any HearthStore
    let logger: Logger
    let quarantine: (any DeviceQuarantining)?
    let quarantineAt: Severity?
    let metrics: HearthMetrics?
    let webhook: AlertWebhook?

    public init(
        store: any HearthStore, quarantine: (any DeviceQuarantining)? = nil, quarantineAt: Severity? = .high,
        metrics: HearthMetrics? = nil, webhook: AlertWebhook? = nil, logger: Logger = Logger(label: "hearth.alerts")
    ) {
        self.store = store
        self.metrics = metrics
        self.webhook = webhook
        self.quarantine = quarantine
        self.quarantineAt = quarantineAt
        self.logger = logger
    }

    public func detected(_ detection: Detection, device serial: DeviceSerial) async {
        let alert = AlertRecord(
            id: UUID().uuidString.lowercased(), serial: serial, kind: detection.kind.rawValue,
            severity: detection.severity.rawValue, evidence: JSONValue.object(detection.evidence).text,
            raisedAt: detection.at)
        do {
            try await store.addAlert(
                alert,
                audit: AuditEntry(
                    .alertRaised, actor: "monitor", subject: serial.rawValue,
                    detail: "\(alert.kind) (\(alert.severity)), alert \(alert.id)", at: detection.at))
            metrics?.alert(kind: alert.kind, severity: alert.severity)
            webhook?.alertRaised()
            logger.warning(
                "security alert",
                metadata: ["kind": "\(alert.kind)", "severity": "\(alert.severity)", "alert": "\(alert.id)"])
            if let threshold = quarantineAt, detection.severity >= threshold {
                let reason =
                    "automatically, after a \(detection.severity.rawValue)-severity alert: \(detection.plainEnglish)"
                if try await store.setQuarantine(
                    serial, DeviceQuarantine(reason: reason, since: detection.at),
                    audit: AuditEntry(
                        .deviceQuarantined, actor: "monitor", subject: serial.rawValue, detail: "alert \(alert.id)",
                        at: detection.at))
                {
                    await quarantine?.quarantineChanged(serial, reason: reason)
                }
            }
        } catch {
            logger.error("security alert not stored", metadata: ["kind": "\(alert.kind)", "error": "\(error)"])
        }
    }
}

extension Hearth {
    /// Operators: alerts in these states, newest first.
    public func alerts(in states: Set<AlertRecord.State>, by identity: Identity) async throws -> [AlertRecord] {
        guard identity.role == .operator else { throw HearthError(.forbidden, "this needs the operator role") }
        return try await store.alerts(in: states, limit: 500)
    }

    /// Operators: acknowledge or resolve an alert (audited); only forward.
    public func setAlertState(_ id: String, _ state: AlertRecord.State, by identity: Identity) async throws {
        guard identity.role == .operator else { throw HearthError(.forbidden, "this needs the operator role") }
        let now = time.now()
        guard
            try await store.setAlertState(
                id, state, at: now,
                audit: AuditEntry(
                    state == .resolved ? .alertResolved : .alertAcknowledged, actor: identity.account.id.description,
                    detail: "alert \(id.prefix(64))", at: now))
        else {
            throw HearthError(.conflict, field: "id", "no such alert, or it is already \(state.rawValue) or further")
        }
    }

    /// The owner: their device's alerts since they claimed it.
    public func deviceAlerts(_ rawSerial: String, by identity: Identity) async throws -> [AlertRecord] {
        let device = try await ownedDevice(rawSerial, by: identity)
        return try await store.alerts(of: device.serial, since: device.claimedAt ?? .distantFuture, limit: 100)
    }
}

extension Hearth {
    /// Operators: quarantine a device (`reason` given) or release it (nil); audited; the gateway
    /// applies it from the device's next message.
    public func quarantine(_ rawSerial: String, reason: String?, by identity: Identity) async throws {
        guard identity.role == .operator else { throw HearthError(.forbidden, "this needs the operator role") }
        guard let serial = try? DeviceSerial(rawSerial), try await store.device(serial) != nil else {
            throw HearthError(.notFound, field: "serial", "no device with this serial")
        }
        let now = time.now()
        let text = reason.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        if let text, text.isEmpty { throw HearthError.invalid("reason", "say why, in words the owner will read") }
        guard
            try await store.setQuarantine(
                serial, text.map { DeviceQuarantine(reason: $0, since: now) },
                audit: AuditEntry(
                    text == nil ? .deviceReleasedFromQuarantine : .deviceQuarantined,
                    actor: identity.account.id.description, subject: serial.rawValue, detail: text ?? "released",
                    at: now))
        else {
            throw HearthError(
                .conflict, field: "serial",
                text == nil ? "the device is not quarantined" : "the device is already quarantined")
        }
        await (commands as? any DeviceQuarantining)?.quarantineChanged(serial, reason: text)
    }

    /// What the owner reads about a quarantined device: why, since when, and what to do.
    static func quarantineText(_ q: DeviceQuarantine) -> String {
        "since \(Pages.when(q.since)), \(q.reason.hasSuffix(".") ? String(q.reason.dropLast()) : q.reason). It can still connect and install updates, but its readings and commands are refused. Update it if an update is offered, or reset it to factory settings; if it continues, contact the maker's support."
    }
}

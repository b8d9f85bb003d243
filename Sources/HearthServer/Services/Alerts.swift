import Foundation
import HearthCore
import HearthMonitor
import HearthStorage
import Logging

/// The server's side of security monitoring (guideline 10; EN 303 645 5.10-1): each detection the
/// gateway hands over becomes an alert — stored with its evidence, in the audit log, listed for
/// operators with a lifecycle (open, acknowledged, resolved), and shown to the device's owner in
/// plain English.
public final class SecurityAlerts: DeviceAlertChannel {
    let store: any HearthStore
    let logger: Logger

    public init(store: any HearthStore, logger: Logger = Logger(label: "hearth.alerts")) {
        self.store = store
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
            logger.warning(
                "security alert",
                metadata: ["kind": "\(alert.kind)", "severity": "\(alert.severity)", "alert": "\(alert.id)"])
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

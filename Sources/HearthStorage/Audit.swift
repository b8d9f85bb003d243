import Foundation
import HearthCore

/// The security events the audit log records.
public enum AuditKind: String, Sendable, CaseIterable {
    case setupLinkIssued = "setup_link.issued"
    case setupLinkUsed = "setup_link.used"
    case accountCreated = "account.created"
    case signIn = "sign_in.succeeded"
    case signInFailed = "sign_in.failed"
    case signOut = "sign_out"
    case signOutEverywhere = "sign_out.everywhere"
    case modelCreated = "model.created"
    case devicesProvisioned = "devices.provisioned"
    case deviceClaimed = "device.claimed"
    case deviceClaimFailed = "device.claim_failed"
    case deviceReleased = "device.released"
    case deviceRevoked = "device.revoked"
    case commandSent = "device.command_sent"
    case deviceNamed = "device.named"
    case serverStarted = "server.started"
    case reportReceived = "report.received"
    case reportMoved = "report.moved"
    case securityTeamChanged = "security_team.changed"
    case advisoryPublished = "advisory.published"
    case updateKeyCreated = "update.online_key_created"
    case updateMetadataPublished = "update.metadata_published"
    case rolloutCreated = "rollout.created"
    case rolloutChanged = "rollout.changed"
    case supportExtended = "model.support_extended"
    case supportShorteningRefused = "model.support_shortening_refused"
    case consentChanged = "device.consent_changed"
    case readingsExpired = "readings.expired"
    case passwordChanged = "account.password_changed"
    case recoveryCodeIssued = "account.recovery_code_issued"
    case accountRecovered = "account.recovered"
    case dataExported = "account.data_exported"
    case deviceReset = "device.factory_reset"
    case deviceRekeyRequested = "device.rekey_requested"
    case deviceCertificateIssued = "device.certificate_issued"
    case deviceCertificateReplaced = "device.certificate_replaced"
    case alertRaised = "alert.raised"
    case alertAcknowledged = "alert.acknowledged"
    case alertResolved = "alert.resolved"
    case deviceQuarantined = "device.quarantined"
    case deviceReleasedFromQuarantine = "device.quarantine_released"
    case deletionRequested = "account.deletion_requested"
    case deletionCancelled = "account.deletion_cancelled"
    case accountDeleted = "account.deleted"
}

/// What a caller asks to record. Never holds a secret: no password, code or token.
public struct AuditEntry: Sendable, Equatable {
    public let kind: AuditKind
    public let actor: String?
    public let subject: String?
    public let detail: String
    public let at: Date

    public init(_ kind: AuditKind, actor: String? = nil, subject: String? = nil, detail: String = "", at: Date) {
        self.kind = kind
        self.actor = actor
        self.subject = subject
        self.detail = detail
        self.at = at
    }
}

/// A stored audit record. Each carries a MAC over its content and the previous record's MAC, so an
/// edit, a removal or a reordering breaks the chain; the head (last sequence and MAC, itself MACed)
/// catches a removal at the end.
public struct AuditRecord: Sendable, Equatable {
    public let sequence: Int64
    /// Milliseconds since 1970, so the MACed value round-trips exactly.
    public let atMillis: Int64
    public let kind: String
    public let actor: String?
    public let subject: String?
    public let detail: String
    public let previousMAC: String
    public let mac: String

    public init(
        sequence: Int64, atMillis: Int64, kind: String, actor: String?, subject: String?, detail: String,
        previousMAC: String, mac: String
    ) {
        self.sequence = sequence
        self.atMillis = atMillis
        self.kind = kind
        self.actor = actor
        self.subject = subject
        self.detail = detail
        self.previousMAC = previousMAC
        self.mac = mac
    }

    /// The bytes the MAC covers: every field but the MAC, unambiguously delimited.
    public var macInput: Data {
        let fields: [JSONValue] = [
            .number(Double(sequence)), .number(Double(atMillis)), .string(kind),
            actor.map(JSONValue.string) ?? .null, subject.map(JSONValue.string) ?? .null,
            .string(detail), .string(previousMAC),
        ]
        return JSONValue.array(fields).serialized()
    }

    public var date: Date { Date(timeIntervalSince1970: Double(atMillis) / 1000) }

    /// This record with its MAC set to `mac` (empty: the form the MAC is computed over).
    func withMAC(_ mac: String) -> AuditRecord {
        AuditRecord(
            sequence: sequence, atMillis: atMillis, kind: kind, actor: actor, subject: subject, detail: detail,
            previousMAC: previousMAC, mac: mac)
    }
}

/// The last record's sequence and MAC, MACed under its own label.
public struct AuditHead: Sendable, Equatable {
    public let sequence: Int64
    public let mac: String
    public let headMAC: String

    public init(sequence: Int64, mac: String, headMAC: String) {
        self.sequence = sequence
        self.mac = mac
        self.headMAC = headMAC
    }
}

/// Computes the MACs. The key never reaches the database: the server derives it from the KEK.
public protocol AuditSealer: Sendable {
    func mac(_ data: Data) -> String
}

extension AuditSealer {
    /// Builds the next record in the chain after `previous`.
    public func seal(_ entry: AuditEntry, after previous: AuditHead?) -> (AuditRecord, AuditHead) {
        let unsealed = AuditRecord(
            sequence: (previous?.sequence ?? 0) + 1, atMillis: Int64((entry.at.timeIntervalSince1970 * 1000).rounded()),
            kind: entry.kind.rawValue, actor: entry.actor, subject: entry.subject, detail: entry.detail,
            previousMAC: previous?.mac ?? "", mac: ""
        )
        let record = unsealed.withMAC(mac(unsealed.macInput))
        return (record, head(sequence: record.sequence, mac: record.mac))
    }

    public func head(sequence: Int64, mac recordMAC: String) -> AuditHead {
        AuditHead(sequence: sequence, mac: recordMAC, headMAC: mac(Data("head|\(sequence)|\(recordMAC)".utf8)))
    }

    /// Walks the whole chain. Returns nil when intact, else what is wrong and where.
    public func verify(_ records: [AuditRecord], head: AuditHead?) -> String? {
        var previous = ""
        for (i, record) in records.enumerated() {
            let expected = Int64(i + 1)
            if record.sequence != expected {
                return "record \(expected) is missing (found \(record.sequence) in its place)"
            }
            if record.previousMAC != previous {
                return "record \(record.sequence) does not follow record \(record.sequence - 1)"
            }
            if mac(record.withMAC("").macInput) != record.mac {
                return "record \(record.sequence) was altered"
            }
            previous = record.mac
        }
        guard let head else {
            return records.isEmpty ? nil : "the chain head is missing"
        }
        if head.headMAC != self.head(sequence: head.sequence, mac: head.mac).headMAC {
            return "the chain head was altered"
        }
        if head.sequence != Int64(records.count) || head.mac != (records.last?.mac ?? "") {
            return "records after \(records.count) were removed (the head says \(head.sequence))"
        }
        return nil
    }
}

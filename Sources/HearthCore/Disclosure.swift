import Foundation

/// Where a vulnerability report stands in the coordinated-disclosure workflow (ISO/IEC 29147 and
/// 30111 in spirit; Code of Practice guideline 2, PSTI Schedule 1 ¶2, ETSI EN 303 645 5.2-1).
public enum ReportState: String, Sendable, CaseIterable, Codable {
    case received
    case acknowledged
    /// Triaged: a real vulnerability.
    case valid
    /// Triaged: already reported.
    case duplicate
    /// Triaged: not a vulnerability.
    case notVulnerability = "not_a_vulnerability"
    case fixInProgress = "fix_in_progress"
    case fixed
    case disclosed

    /// The states a report may move to from this one.
    public var next: [ReportState] {
        switch self {
        case .received: [.acknowledged]
        case .acknowledged: [.valid, .duplicate, .notVulnerability]
        // A report closed at triage can be looked at again.
        case .duplicate, .notVulnerability: [.valid]
        case .valid: [.fixInProgress]
        case .fixInProgress: [.fixed]
        case .fixed: [.disclosed]
        case .disclosed: []
        }
    }

    /// Closed: nothing more is due.
    public var isClosed: Bool { [.duplicate, .notVulnerability, .disclosed].contains(self) }

    /// For the reporter's status page.
    public var plainEnglish: String {
        switch self {
        case .received: "Received; waiting for the security team to acknowledge it"
        case .acknowledged: "Acknowledged; the security team is assessing it"
        case .valid: "Confirmed as a vulnerability"
        case .duplicate: "Closed: already reported by someone else"
        case .notVulnerability: "Closed: not a vulnerability"
        case .fixInProgress: "A fix is being made"
        case .fixed: "Fixed; the update is available or on its way"
        case .disclosed: "Fixed and publicly disclosed"
        }
    }
}

/// The deadlines a deployment promises reporters (its published disclosure policy).
public struct DisclosurePolicy: Sendable, Equatable {
    /// Reports are acknowledged within this long.
    public var acknowledgeWithin: TimeInterval
    /// The target from receipt to a fix and public disclosure (90 days, as Google Project Zero
    /// and the CERT/CC guidelines).
    public var discloseWithin: TimeInterval

    public init(acknowledgeWithin: TimeInterval = 5 * 86_400, discloseWithin: TimeInterval = 90 * 86_400) {
        self.acknowledgeWithin = acknowledgeWithin
        self.discloseWithin = discloseWithin
    }

    public var acknowledgeDays: Int { Int(acknowledgeWithin / 86_400) }
    public var discloseDays: Int { Int(discloseWithin / 86_400) }

    /// What is overdue for a report received at `received` and now in `state`.
    public func overdue(state: ReportState, received: Date, now: Date) -> [Overdue] {
        var flags: [Overdue] = []
        if state == .received, now > received.addingTimeInterval(acknowledgeWithin) { flags.append(.acknowledgement) }
        if !state.isClosed, now > received.addingTimeInterval(discloseWithin) { flags.append(.disclosure) }
        return flags
    }

    public enum Overdue: String, Sendable, Equatable {
        case acknowledgement = "acknowledgement_overdue"
        case disclosure = "disclosure_overdue"
    }

    /// Checks a move; throws a clear error if the workflow does not allow it.
    public func check(from: ReportState, to: ReportState) throws {
        guard from.next.contains(to) else {
            let allowed = from.next.map(\.rawValue).joined(separator: ", ")
            throw HearthError(
                .conflict, field: "state",
                "a report that is \(from.rawValue) can move to \(allowed.isEmpty ? "nothing (it is closed)" : allowed), not \(to.rawValue)"
            )
        }
    }
}

/// A report's public id, e.g. `VR-7K3M9QXT2B`: random (not a count, so it reveals nothing about how
/// many reports exist), valid once built.
public struct ReportID: Sendable, Hashable, CustomStringConvertible {
    public let rawValue: String

    public init(_ text: String) throws {
        let body = text.hasPrefix("VR-") ? text.dropFirst(3) : ""
        guard body.count == 10, body.allSatisfy({ Base32.allowed.contains($0) }) else {
            throw HearthError.invalid("id", "not a report id")
        }
        rawValue = text
    }

    public static func random<G: RandomNumberGenerator>(using rng: inout G) -> ReportID {
        ReportID(unchecked: "VR-" + Base32.random(count: 10, using: &rng))
    }

    init(unchecked: String) { rawValue = unchecked }
    public var description: String { rawValue }
}

/// What a reporter sends. Nothing personal is required; contact details are optional.
public enum ReportSubmission {
    public static let schema = ObjectSchema([
        FieldSchema("title", .string(minLength: 3, maxLength: 200), "A one-line summary"),
        FieldSchema(
            "description", .string(minLength: 10, maxLength: 10_000, multiline: true),
            "What is affected, how to reproduce it, what an attacker gains"),
        FieldSchema("product", .string(maxLength: 200), required: false, "Product model or component, if known"),
        FieldSchema(
            "contact", .string(maxLength: 254), required: false,
            "How to reach you (optional: an e-mail address or handle)"),
        FieldSchema("credit", .string(maxLength: 120), required: false, "Name to credit in the advisory (optional)"),
    ])
}

import Foundation
import HearthCore
import HearthCrypto
import HearthStorage

/// What the operator configures about vulnerability disclosure (RFC 9116 fields and deadlines).
public struct DisclosureSettings: Sendable {
    /// `mailto:`, `https:` or `tel:` URIs for security.txt's Contact fields, first preferred. The
    /// server's own report form is always listed too.
    public var contacts: [String] = []
    /// Languages the security team reads (BCP 47 tags).
    public var languages: [String] = ["en"]
    public var policy = DisclosurePolicy()
    /// How far ahead security.txt's Expires is set (RFC 9116 advises less than a year).
    public var expiresAfter: TimeInterval = 180 * 86_400

    public init() {}

    /// Checks operator input; throws a clear error naming the bad value.
    public static func validContact(_ uri: String) throws -> String {
        guard uri.utf8.count <= 200, ["mailto:", "https://", "tel:"].contains(where: { uri.hasPrefix($0) }),
            uri.count > 7,
            uri.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F })
        else {
            throw HearthError.invalid(
                "security-contact", "a contact must be a mailto:, https:// or tel: URI without spaces")
        }
        return uri
    }

    public static func validLanguage(_ tag: String) throws -> String {
        let parts = tag.split(separator: "-", omittingEmptySubsequences: false)
        guard let first = parts.first, (2...8).contains(first.count), first.allSatisfy({ $0.isASCII && $0.isLetter }),
            parts.dropFirst().allSatisfy({
                (1...8).contains($0.count) && $0.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) }
            })
        else { throw HearthError.invalid("security-language", "not a language tag like en or pt-BR") }
        return tag
    }
}

/// A report as its reader sees it: the text opened, deadlines and what is overdue.
public struct ReportView: Sendable {
    public struct Step: Sendable {
        public let at: Date
        public let state: ReportState
        public let note: String?
    }

    public let id: ReportID
    public let receivedAt: Date
    public let state: ReportState
    public let fields: [String: JSONValue]
    public let history: [Step]
    public let acknowledgeBy: Date
    public let discloseBy: Date
    public let overdue: [DisclosurePolicy.Overdue]

    public func text(_ name: String) -> String? {
        if case .string(let s)? = fields[name] { s } else { nil }
    }
}

/// What a reporter gets back: the public id and the private token that shows the report's status.
public struct SubmittedReport: Sendable {
    public let id: ReportID
    public let statusToken: String
}

extension Hearth {
    // MARK: Reporters (no account)

    /// Takes a report from anyone: validated fields (sizes, no control characters), sealed at rest,
    /// throttled per source (every submission counts, so a flood slows down).
    public func submitReport(_ fields: ValidatedObject, source: String) async throws -> SubmittedReport {
        try await throttled([.init(.reportPerSource, source)], failingOn: [], everyAttemptCounts: true) {
            let now = time.now()
            var rng = SystemRandomNumberGenerator()
            let id = ReportID.random(using: &rng)
            let token = SecureToken.generate()
            let sealed = try Envelope.seal(
                Data(JSONValue.object(fields.members).text.utf8), context: "report:\(id)", kek: kek)
            let record = ReportRecord(
                id: id, receivedAt: now, state: .received, statusTokenHash: SecureToken.storageHash(token),
                sealed: sealed,
                events: [ReportEvent(at: now, state: .received, actor: nil, noteSealed: nil)]
            )
            try await store.createReport(
                record, audit: AuditEntry(.reportReceived, subject: id.rawValue, detail: "from \(source)", at: now))
            return SubmittedReport(id: id, statusToken: token)
        }
    }

    /// The reporter's view through their status token. A wrong token finds nothing (and is
    /// throttled per source like a wrong password).
    public func reportStatus(token: String, source: String) async throws -> ReportView {
        try await throttled([.init(.perSource, source)], failingOn: [.notFound]) {
            guard SecureToken.isWellFormed(token),
                let record = try await store.report(statusTokenHash: SecureToken.storageHash(token))
            else {
                throw HearthError(.notFound, field: "token", "no report has this status token")
            }
            return try view(record)
        }
    }

    /// Credits for disclosed reports whose reporters asked to be named.
    public func acknowledgments() async throws -> [(credit: String, id: ReportID)] {
        try await store.reports().filter { $0.state == .disclosed }.compactMap { record in
            guard let credit = try view(record).text("credit"), !credit.isEmpty else { return nil }
            return (credit, record.id)
        }
    }

    // MARK: The security team

    func requireSecurityTeam(_ identity: Identity) async throws {
        guard identity.role == .operator, try await store.isSecurityTeam(identity.account.id) else {
            throw HearthError(.forbidden, "only the security team reads vulnerability reports")
        }
    }

    public func reports(by identity: Identity) async throws -> [ReportView] {
        try await requireSecurityTeam(identity)
        return try await allReports()
    }

    public func report(_ rawID: String, by identity: Identity) async throws -> ReportView {
        try await requireSecurityTeam(identity)
        return try await report(rawID)
    }

    public func moveReport(_ rawID: String, to state: ReportState, note: String?, by identity: Identity) async throws
        -> ReportView
    {
        try await requireSecurityTeam(identity)
        return try await moveReport(rawID, to: state, note: note, actor: identity.account.id.description)
    }

    /// For the local CLI (whoever can open the data folder is trusted with it).
    public func allReports() async throws -> [ReportView] {
        try await store.reports().map(view)
    }

    public func report(_ rawID: String) async throws -> ReportView {
        guard let id = try? ReportID(rawID), let record = try await store.report(id) else {
            throw HearthError(.notFound, field: "id", "no report with this id")
        }
        return try view(record)
    }

    /// Moves a report one step along the workflow with a note the reporter will see.
    public func moveReport(_ rawID: String, to state: ReportState, note: String?, actor: String) async throws
        -> ReportView
    {
        guard let id = try? ReportID(rawID), let record = try await store.report(id) else {
            throw HearthError(.notFound, field: "id", "no report with this id")
        }
        try settings.disclosure.policy.check(from: record.state, to: state)
        let now = time.now()
        let sealedNote = try note.map { try Envelope.seal(Data($0.utf8), context: "report-note:\(id)", kek: kek) }
        let event = ReportEvent(at: now, state: state, actor: actor, noteSealed: sealedNote)
        let audit = AuditEntry(
            .reportMoved, actor: actor, subject: id.rawValue, detail: "\(record.state.rawValue) → \(state.rawValue)",
            at: now)
        guard try await store.moveReport(id, from: record.state, event: event, audit: audit) else {
            throw HearthError(.conflict, field: "state", "the report was moved by someone else meanwhile; reload it")
        }
        return try await report(rawID)
    }

    /// Adds an operator to (or removes them from) the security team (local CLI).
    public func setSecurityTeam(email rawEmail: String, member: Bool) async throws {
        let email = try EmailAddress(rawEmail)
        guard let account = try await store.account(emailIndex: emailIndex.index(email.rawValue)),
            account.role == .operator
        else {
            throw HearthError(.notFound, field: "email", "no operator account with this e-mail address")
        }
        try await store.setSecurityTeam(
            account.id, member: member,
            audit: AuditEntry(
                .securityTeamChanged, actor: "cli", subject: account.id.description,
                detail: member ? "added" : "removed", at: time.now()))
    }

    func view(_ record: ReportRecord) throws -> ReportView {
        let text = try Envelope.open(record.sealed, context: "report:\(record.id)", kek: kek)
        guard case .object(let fields) = try JSONValue.parse(Array(text)) else {
            throw HearthError(.integrity, "a stored report is not an object")
        }
        let policy = settings.disclosure.policy
        let history = try record.events.map { e in
            ReportView.Step(
                at: e.at, state: e.state,
                note: try e.noteSealed.map {
                    String(
                        decoding: try Envelope.open($0, context: "report-note:\(record.id)", kek: kek), as: UTF8.self)
                })
        }
        return ReportView(
            id: record.id, receivedAt: record.receivedAt, state: record.state, fields: fields, history: history,
            acknowledgeBy: record.receivedAt.addingTimeInterval(policy.acknowledgeWithin),
            discloseBy: record.receivedAt.addingTimeInterval(policy.discloseWithin),
            overdue: policy.overdue(state: record.state, received: record.receivedAt, now: time.now())
        )
    }

    /// `/.well-known/security.txt` (RFC 9116) for the server at `base`.
    public func securityTxt(base: String) -> String {
        let d = settings.disclosure
        let expires = ISO8601DateFormatter().string(from: time.now().addingTimeInterval(d.expiresAfter))
        var lines = ["# Security contact for this Hearth deployment (RFC 9116). Reports need no account.", ""]
        lines += d.contacts.map { "Contact: \($0)" }
        lines += [
            "Contact: \(base)/security/report",
            "Expires: \(expires)",
            "Policy: \(base)/security/policy",
            "Acknowledgments: \(base)/security/acknowledgments",
            "Preferred-Languages: \(d.languages.joined(separator: ", "))",
            "Canonical: \(base)/.well-known/security.txt",
            "CSAF: \(base)/.well-known/csaf/provider-metadata.json",
        ]
        return lines.joined(separator: "\n") + "\n"
    }
}

// MARK: Advisories

extension Hearth {
    /// Publishes the advisory for a fixed report (security team): CSAF 2.0 and OSV, stored as
    /// published; the report becomes disclosed, with the advisory's address as the reporter's note.
    public func publishAdvisory(_ rawID: String, _ input: ValidatedObject, base: String, by identity: Identity)
        async throws -> AdvisoryRecord
    {
        try await requireSecurityTeam(identity)
        return try await publishAdvisory(rawID, input, base: base, actor: identity.account.id.description)
    }

    public func publishAdvisory(_ rawID: String, _ input: ValidatedObject, base: String, actor: String) async throws
        -> AdvisoryRecord
    {
        let report = try await report(rawID)
        guard report.state == .fixed else {
            throw HearthError(
                .conflict, field: "state",
                "an advisory is published for a fixed report; this one is \(report.state.rawValue)")
        }
        var models: [ProductModel] = []
        for raw in input.array("models") {
            guard case .string(let text) = raw, let id = try? ProductModelID(text),
                let model = try await store.model(id)
            else {
                throw HearthError.invalid("models", "no product model '\(raw.text.prefix(64))'")
            }
            if !models.contains(where: { $0.id == model.id }) { models.append(model) }
        }
        let now = time.now()
        let advisory = try Advisory(
            reportID: report.id, title: input.string("title")!, summary: input.string("summary")!,
            severity: input.string("severity")!, models: models,
            affectedBelow: input.string("affectedBelow")!, fixedVersion: input.string("fixedVersion")!,
            cve: input.string("cve")!, credit: report.text("credit"), publishedAt: now
        )
        let record = AdvisoryRecord(
            id: advisory.id, reportID: report.id, publishedAt: now, title: advisory.title, severity: advisory.severity,
            models: models.map(\.id),
            fixedVersion: advisory.fixedVersion, csaf: advisory.csaf(base: base, publisher: models[0].maker).text,
            osv: advisory.osv(base: base).text
        )
        let note = "Advisory \(advisory.id) published: \(advisory.csafURL(base: base))"
        let event = ReportEvent(
            at: now, state: .disclosed, actor: actor,
            noteSealed: try Envelope.seal(Data(note.utf8), context: "report-note:\(report.id)", kek: kek))
        let audit = AuditEntry(
            .advisoryPublished, actor: actor, subject: advisory.id, detail: "report \(report.id), \(advisory.cve)",
            at: now)
        guard try await store.publishAdvisory(record, reportFrom: .fixed, event: event, audit: audit) else {
            throw HearthError(.conflict, field: "state", "the report was moved by someone else meanwhile; reload it")
        }
        return record
    }

    public func advisories() async throws -> [AdvisoryRecord] {
        try await store.advisories()
    }

    /// The signed-in owner's notices: advisories naming a model of one of their devices.
    public func notices(for identity: Identity) async throws -> [(advisory: AdvisoryRecord, devices: [DeviceSerial])] {
        let devices = try await store.devices(ownedBy: identity.account.id)
        return try await store.advisories().compactMap { advisory in
            let affected = devices.filter { advisory.models.contains($0.model) }.map(\.serial)
            return affected.isEmpty ? nil : (advisory, affected)
        }
    }

    /// CSAF 2.0 provider metadata (`/.well-known/csaf/provider-metadata.json`).
    public func providerMetadata(base: String) async throws -> JSONValue {
        // The newest advisory changed the metadata last; with none, this process made it at start.
        let latest = try await store.advisories().first?.publishedAt ?? startedAt
        let models = try await store.models()
        return [
            "canonical_url": .string("\(base)/.well-known/csaf/provider-metadata.json"),
            "distributions": [["directory_url": .string("\(base)/.well-known/csaf/white/")]],
            "last_updated": .string(ISO8601DateFormatter().string(from: latest)),
            "list_on_CSAF_aggregators": true,
            "metadata_version": "2.0",
            "mirror_on_CSAF_aggregators": true,
            "publisher": [
                "category": "vendor", "name": .string(models.first?.maker ?? "Hearth deployment"),
                "namespace": .string(base),
            ],
            "role": "csaf_provider",
        ]
    }
}

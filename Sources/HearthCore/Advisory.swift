import Foundation

/// A published security advisory for a fixed vulnerability, rendered as CSAF 2.0 (OASIS) and OSV.
/// Pure: the server stores what it renders.
public struct Advisory: Sendable, Equatable {
    /// What the security team writes when it publishes.
    public static let schema = ObjectSchema([
        FieldSchema("title", .string(minLength: 3, maxLength: 200), "The advisory's title"),
        FieldSchema(
            "summary", .string(minLength: 10, maxLength: 5_000, multiline: true),
            "What the vulnerability is and what to do, in plain language"),
        FieldSchema("severity", .oneOf(["low", "moderate", "important", "critical"]), "How serious it is"),
        FieldSchema("models", .array(of: .string(maxLength: 64), maxItems: 20), "Affected product model ids"),
        FieldSchema("affectedBelow", .string(maxLength: 32), "Firmware versions below this one are affected"),
        FieldSchema("fixedVersion", .string(maxLength: 32), "The firmware release that fixes it"),
        FieldSchema("cve", .string(maxLength: 32), "The CVE id (the OSV record's id)"),
    ])

    public let id: String
    public let reportID: ReportID
    public let title: String
    public let summary: String
    public let severity: String
    public let models: [ProductModel]
    public let affectedBelow: String
    public let fixedVersion: String
    public let cve: String
    public let credit: String?
    public let publishedAt: Date

    /// Checks the versions and the CVE id; throws a clear error naming the field.
    public init(
        reportID: ReportID, title: String, summary: String, severity: String, models: [ProductModel],
        affectedBelow: String, fixedVersion: String,
        cve: String, credit: String?, publishedAt: Date
    ) throws {
        guard !models.isEmpty else { throw HearthError.invalid("models", "name at least one affected product model") }
        for (field, version) in [("affectedBelow", affectedBelow), ("fixedVersion", fixedVersion)] {
            guard version.range(of: #"^[0-9]{1,6}(\.[0-9]{1,6}){0,3}$"#, options: .regularExpression) != nil else {
                throw HearthError.invalid(field, "a version like 1.3 or 1.3.0")
            }
        }
        guard cve.range(of: #"^CVE-[0-9]{4}-[0-9]{4,7}$"#, options: .regularExpression) != nil else {
            throw HearthError.invalid(
                "cve", "a CVE id like CVE-2026-12345 (request one from a CNA; OSV records are keyed by it)")
        }
        id = "HEARTH-SA-\(reportID.rawValue.dropFirst(3))"
        self.reportID = reportID
        self.title = title
        self.summary = summary
        self.severity = severity
        self.models = models
        self.affectedBelow = affectedBelow
        self.fixedVersion = fixedVersion
        self.cve = cve
        self.credit = credit
        self.publishedAt = publishedAt
    }

    /// `YYYY/file.json` under the TLP:WHITE directory (CSAF 2.0 directory-based distribution; the
    /// file name is the lower-cased tracking id, `[+\-a-z0-9]+.json`).
    public static func csafPath(id: String, publishedAt: Date) -> String {
        "\(timestamp(publishedAt).prefix(4))/\(id.lowercased()).json"
    }

    /// Where the CSAF document lives under `base`.
    public func csafURL(base: String) -> String {
        "\(base)/.well-known/csaf/white/\(Self.csafPath(id: id, publishedAt: publishedAt))"
    }
    public func osvURL(base: String) -> String { "\(base)/api/v1/advisories/\(id)/osv" }

    /// RFC 3339 in UTC to the second, e.g. `2026-11-26T20:00:00Z`, as CSAF, OSV and TUF documents
    /// write times (a format style: no time-zone state is touched).
    public static func timestamp(_ date: Date) -> String {
        Date(timeIntervalSince1970: date.timeIntervalSince1970.rounded(.down)).formatted(Date.ISO8601FormatStyle())
    }

    /// A CSAF 2.0 `csaf_security_advisory`.
    public func csaf(base: String, publisher: String) -> JSONValue {
        let now = Self.timestamp(publishedAt)
        var products: [JSONValue] = []
        var affected: [JSONValue] = []
        var fixed: [JSONValue] = []
        for model in models {
            let a = "\(model.id.rawValue)-below-\(affectedBelow)"
            let f = "\(model.id.rawValue)-\(fixedVersion)"
            products.append(["name": .string("\(model.name) firmware < \(affectedBelow)"), "product_id": .string(a)])
            products.append(["name": .string("\(model.name) firmware \(fixedVersion)"), "product_id": .string(f)])
            affected.append(.string(a))
            fixed.append(.string(f))
        }
        var document: [String: JSONValue] = [
            "category": "csaf_security_advisory",
            "csaf_version": "2.0",
            "lang": "en",
            "title": .string(title),
            "publisher": ["category": "vendor", "name": .string(publisher), "namespace": .string(base)],
            "distribution": ["tlp": ["label": "WHITE"]],
            "aggregate_severity": ["text": .string(severity)],
            "notes": [["category": "summary", "title": "Summary", "text": .string(summary)]],
            "references": [["category": "self", "summary": "This advisory", "url": .string(csafURL(base: base))]],
            "tracking": [
                "id": .string(id), "status": "final", "version": "1",
                "initial_release_date": .string(now), "current_release_date": .string(now),
                "revision_history": [["date": .string(now), "number": "1", "summary": "Initial release"]],
                "generator": ["engine": ["name": "Hearth"], "date": .string(now)],
            ],
        ]
        if let credit, !credit.isEmpty {
            document["acknowledgments"] = [["names": [.string(credit)], "summary": "Reported the vulnerability"]]
        }
        let vulnerability: JSONValue = [
            "cve": .string(cve),
            "title": .string(title),
            "ids": [["system_name": "Hearth vulnerability report", "text": .string(reportID.rawValue)]],
            "notes": [["category": "description", "text": .string(summary)]],
            "product_status": ["known_affected": .array(affected), "fixed": .array(fixed)],
            "remediations": [
                [
                    "category": "vendor_fix",
                    "details": .string("Install firmware \(fixedVersion) (delivered as a signed update)."),
                    "product_ids": .array(affected),
                ]
            ],
        ]
        return [
            "document": .object(document), "product_tree": ["full_product_names": .array(products)],
            "vulnerabilities": [vulnerability],
        ]
    }

    /// The OSV record. Device firmware has no OSV ecosystem, so the affected models and versions
    /// travel in `database_specific`, and the record is keyed by its CVE id.
    public func osv(base: String) -> JSONValue {
        var record: [String: JSONValue] = [
            "schema_version": "1.6.0",
            "id": .string(cve),
            "modified": .string(Self.timestamp(publishedAt)),
            "published": .string(Self.timestamp(publishedAt)),
            "aliases": [.string(id)],
            "summary": .string(title),
            "details": .string(summary),
            "references": [["type": "ADVISORY", "url": .string(csafURL(base: base))]],
            "database_specific": [
                "hearth": [
                    "advisory": .string(id), "severity": .string(severity),
                    "models": .array(models.map { .string($0.id.rawValue) }),
                    "affected_below": .string(affectedBelow), "fixed_version": .string(fixedVersion),
                ]
            ],
        ]
        if let credit, !credit.isEmpty { record["credits"] = [["name": .string(credit), "type": "FINDER"]] }
        return .object(record)
    }
}

import Foundation
import HearthCore

/// The assessment as files a maker hands over: the signed JSON, its detached signature and the
/// public key to check it with, its schema, Markdown, and a printable HTML page.
extension Assessment {
    /// The document's schema (JSON Schema 2020-12), shipped as a resource.
    public static var schema: String {
        guard let url = Bundle.module.url(forResource: "assessment.schema", withExtension: "json"),
            let text = try? String(contentsOf: url, encoding: .utf8)
        else { return "" }
        return text
    }

    /// Writes `assessment.json` (the canonical JSON text that is signed), `assessment.json.sig`
    /// (DER ECDSA P-256 SHA-256 over exactly those bytes), `assessment-key.pem`,
    /// `assessment.schema.json`, `assessment.md` and `assessment.html` into `folder`.
    public func write(to folder: URL, signer: DeploymentSigner) throws -> [URL] {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let document = json.serialized()
        let files: [(String, Data)] = [
            ("assessment.json", document),
            ("assessment.json.sig", try signer.signature(for: document)),
            ("assessment-key.pem", Data(signer.publicKeyPEM.utf8)),
            ("assessment.schema.json", Data(Self.schema.utf8)),
            ("assessment.md", Data(markdown.utf8)),
            ("assessment.html", Data(try html.utf8)),
        ]
        return try files.map { name, data in
            let url = folder.appendingPathComponent(name)
            try data.write(to: url, options: .atomic)
            return url
        }
    }

    /// One line for a terminal: provisions met, checks passed, gaps.
    public var summary: String {
        let applicable = findings.filter { $0.outcome != .notApplicable }
        let mandatory = applicable.filter { $0.status == "mandatory" }
        let recommended = applicable.filter { $0.status == "recommended" }
        return
            "\(mandatory.filter { $0.outcome == .met }.count) of \(mandatory.count) mandatory provisions met, \(recommended.filter { $0.outcome == .met }.count) of \(recommended.count) recommended, \(findings.count - applicable.count) not applicable; \(input.checks.filter(\.passed).count) of \(input.checks.count) live checks passed; \(gaps.count == 1 ? "1 gap" : "\(gaps.count) gaps")."
    }

    // MARK: Markdown

    public var markdown: String {
        var md = ["# Conformance assessment (ETSI EN 303 645 V2.1.1, UK PSTI)", ""]
        md.append("Generated \(Advisory.timestamp(input.at)) from the deployment at \(baseURL) (\(input.storage)).")
        md.append("Models: \(input.models.map { "\($0.model.name) (`\($0.model.id)`)" }.joined(separator: ", ")).")
        md += ["", summary, "", "## Gaps, most pressing first", ""]
        if gaps.isEmpty { md.append("None.") }
        for (i, g) in gaps.enumerated() {
            md.append("\(i + 1). **\(g.provision ?? "PSTI") (\(g.level))** \(g.what) — \(g.why). Fix: \(g.fix)")
        }
        md += ["", "## Implementation Conformance Statement", ""]
        md.append("| Provision | Status | Condition | Outcome | Who | Evidence |")
        md.append("|---|---|---|---|---|---|")
        for f in findings {
            let condition =
                f.provision.condition.map {
                    "\($0.text): \(f.conditionHolds.map { $0 ? "yes" : "no" } ?? "maker states")"
                } ?? "—"
            let evidence =
                ([f.how] + f.evidence + f.tests.map { "test `\($0)`" }
                + [f.justification, f.why.map { "Not met: \($0)" }]
                .compactMap { $0 }).joined(separator: "<br>")
            md.append(
                "| \(f.provision.id) | \(f.status) | \(Self.cell(condition)) | \(f.outcome.rawValue) | \(f.party) | \(Self.cell(evidence)) |"
            )
        }
        md += ["", "## Live checks", ""]
        for c in input.checks {
            md.append("- **\(c.passed ? "Passed" : "FAILED") — \(c.id.title)** (`\(c.id.rawValue)`). \(c.did)")
            md += c.saw.map { "  - \($0)" }
            if let fix = c.fix { md.append("  - Fix: \(fix)") }
        }
        md += ["", "## IXIT", ""]
        for sheet in ixit {
            md += ["### \(sheet.id): \(sheet.title)", ""]
            md += sheet.entries.map { "- **\($0.name)**: \($0.value)" }
            md.append("")
        }
        md += ["## PSTI statements of compliance", ""]
        for m in input.models { md += pstiMarkdown(m) }
        return md.joined(separator: "\n") + "\n"
    }

    static func cell(_ text: String) -> String { text.replacingOccurrences(of: "|", with: "\\|") }

    func pstiMarkdown(_ m: ModelFacts) -> [String] {
        guard case .object(let o) = psti(m) else { return [] }
        func s(_ v: JSONValue?) -> String { if case .string(let t)? = v { t } else { "(not stated)" } }
        let manufacturer = o["manufacturer"]?.objectMembers ?? [:]
        let period = o["supportPeriod"]?.objectMembers ?? [:]
        var md = ["### \(m.model.name)", ""]
        md.append("- Product type: \(s(o["productType"])) (model `\(m.model.id)`)")
        md.append("- Batch: \(s(o["batch"]))")
        md.append("- Manufacturer: \(s(manufacturer["name"])), \(s(manufacturer["address"]))")
        md.append("- Defined support period: \(s(period["text"]))")
        md.append("- Declaration: \(s(o["declaration"]))")
        md.append(
            "- Signed for and on behalf of the manufacturer — name: ______ function: ______ place: ______ date: ______")
        if case .array(let label)? = o["label"] {
            md.append("- The label shows: " + label.map { s($0) }.joined(separator: "; "))
        }
        if case .array(let site)? = o["website"] {
            md.append("- The website shows: " + site.map { s($0) }.joined(separator: "; "))
        }
        md.append("")
        return md
    }

    // MARK: HTML

    /// A page that prints (A4, no navigation), rendered by the pages' template engine, which
    /// escapes every value (`Templates/assessment.mustache`).
    public var html: String {
        get throws {
            try renderHTML()
        }
    }

    private func renderHTML() throws -> String {
        func optional(_ text: String?) -> [String] { text.map { [$0] } ?? [] }
        let page: [String: Any] = [
            "base": baseURL, "generated": Advisory.timestamp(input.at), "storage": input.storage, "summary": summary,
            "gaps": gaps.map {
                ["provision": $0.provision ?? "PSTI", "level": $0.level, "what": $0.what, "why": $0.why, "fix": $0.fix]
            },
            "provisions": findings.map { f -> [String: Any] in
                [
                    "id": f.provision.id, "status": f.status, "outcome": f.outcome.rawValue,
                    "requirement": f.provision.requirement, "condition": optional(f.provision.condition?.text),
                    "evidence": [f.how] + f.evidence + f.tests.map { "Test: \($0)" }
                        + optional(f.justification) + optional(f.why.map { "Not met: \($0)" })
                        + optional(f.fix.map { "Fix: \($0)" }),
                ]
            },
            "checks": input.checks.map { c -> [String: Any] in
                [
                    "class": c.passed ? "met" : "not-met", "result": c.passed ? "Passed" : "FAILED",
                    "title": c.id.title, "did": c.did, "saw": c.saw, "fix": optional(c.fix),
                ]
            },
            "sheets": ixit.map { sheet -> [String: Any] in
                [
                    "id": sheet.id, "title": sheet.title,
                    "entries": sheet.entries.map { ["name": $0.name, "value": $0.value] },
                ]
            },
            "statements": input.models.map { m -> [String: Any] in
                let lines = pstiMarkdown(m).filter { !$0.isEmpty }
                return [
                    "title": m.model.name,
                    "lines": lines.filter { !$0.hasPrefix("### ") }.map { String($0.dropFirst(2)) },
                ]
            },
        ]
        guard let html = Views.shipped.library.render(page, withTemplate: "assessment") else {
            throw HearthError.invalid("assessment", "the template assessment.mustache is missing from the resources")
        }
        return html
    }
}

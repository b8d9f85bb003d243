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
            ("assessment.html", Data(html.utf8)),
        ]
        return try files.map { name, data in
            let url = folder.appendingPathComponent(name)
            try data.write(to: url, options: .atomic)
            return url
        }
    }

    var summaryLine: String {
        let applicable = findings.filter { $0.outcome != .notApplicable }
        let mandatory = applicable.filter { $0.status == "mandatory" }
        let recommended = applicable.filter { $0.status == "recommended" }
        return
            "\(mandatory.filter { $0.outcome == .met }.count) of \(mandatory.count) mandatory provisions met, \(recommended.filter { $0.outcome == .met }.count) of \(recommended.count) recommended, \(findings.count - applicable.count) not applicable; \(input.checks.filter(\.passed).count) of \(input.checks.count) live checks passed; \(gaps.count == 1 ? "1 gap" : "\(gaps.count) gaps")."
    }

    /// One line per result for a terminal.
    public var summary: String { summaryLine }

    // MARK: Markdown

    public var markdown: String {
        var md = ["# Conformance assessment (ETSI EN 303 645 V2.1.1, UK PSTI)", ""]
        md.append("Generated \(Advisory.timestamp(input.at)) from the deployment at \(baseURL) (\(input.storage)).")
        md.append("Models: \(input.models.map { "\($0.model.name) (`\($0.model.id)`)" }.joined(separator: ", ")).")
        md += ["", summaryLine, "", "## Gaps, most pressing first", ""]
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

    /// A page that prints (A4, no navigation), every text escaped.
    public var html: String {
        func e(_ text: String) -> String {
            var out = ""
            for c in text.unicodeScalars {
                switch c {
                case "&": out += "&amp;"
                case "<": out += "&lt;"
                case ">": out += "&gt;"
                case "\"": out += "&quot;"
                case "'": out += "&#39;"
                default: out.unicodeScalars.append(c)
                }
            }
            return out
        }
        var h = [
            "<!doctype html>", "<html lang=\"en\">", "<head>", "<meta charset=\"utf-8\">",
            "<title>Conformance assessment — \(e(baseURL))</title>",
            "<style>body{font:11pt/1.4 system-ui,sans-serif;margin:2em;color:#111}table{border-collapse:collapse;width:100%}td,th{border:1px solid #999;padding:.3em;vertical-align:top;text-align:left}.met{color:#064}.not-met{color:#a00;font-weight:bold}.not-applicable{color:#555}section{page-break-inside:avoid}@page{size:A4;margin:1.5cm}@media print{body{margin:0}}</style>",
            "</head>", "<body>", "<main>", "<h1>Conformance assessment (ETSI EN 303 645 V2.1.1, UK PSTI)</h1>",
            "<p>Generated \(e(Advisory.timestamp(input.at))) from the deployment at \(e(baseURL)) (\(e(input.storage))).</p>",
            "<p>\(e(summaryLine))</p>", "<h2>Gaps, most pressing first</h2>", "<ol>",
        ]
        h += gaps.map {
            "<li><strong>\(e($0.provision ?? "PSTI")) (\(e($0.level)))</strong> \(e($0.what)) — \(e($0.why)). Fix: \(e($0.fix))</li>"
        }
        h += ["</ol>", "<h2>Implementation Conformance Statement</h2>", "<table>"]
        h.append(
            "<thead><tr><th scope=\"col\">Provision</th><th scope=\"col\">Status</th><th scope=\"col\">Outcome</th><th scope=\"col\">Requirement and evidence</th></tr></thead><tbody>"
        )
        for f in findings {
            let evidence =
                ([f.how] + f.evidence + f.tests.map { "Test: \($0)" }
                + [f.justification, f.why.map { "Not met: \($0)" }, f.fix.map { "Fix: \($0)" }].compactMap { $0 })
                .map { "<li>\(e($0))</li>" }.joined()
            h.append(
                "<tr><th scope=\"row\">\(e(f.provision.id))</th><td>\(e(f.status))\(f.provision.condition.map { "<br>if \(e($0.text))" } ?? "")</td><td class=\"\(f.outcome.rawValue)\">\(e(f.outcome.rawValue))</td><td>\(e(f.provision.requirement))<ul>\(evidence)</ul></td></tr>"
            )
        }
        h += ["</tbody></table>", "<h2>Live checks</h2>", "<ul>"]
        for c in input.checks {
            h.append(
                "<li><strong class=\"\(c.passed ? "met" : "not-met")\">\(c.passed ? "Passed" : "FAILED")</strong> \(e(c.id.title)). \(e(c.did))<ul>\(c.saw.map { "<li>\(e($0))</li>" }.joined())\(c.fix.map { "<li>Fix: \(e($0))</li>" } ?? "")</ul></li>"
            )
        }
        h += ["</ul>", "<h2>IXIT</h2>"]
        for sheet in ixit {
            h.append(
                "<section><h3>\(e(sheet.id)): \(e(sheet.title))</h3><dl>\(sheet.entries.map { "<dt>\(e($0.name))</dt><dd>\(e($0.value))</dd>" }.joined())</dl></section>"
            )
        }
        h.append("<h2>PSTI statements of compliance</h2>")
        for m in input.models {
            h.append(
                "<section>"
                    + pstiMarkdown(m).filter { !$0.isEmpty }.map { line in
                        line.hasPrefix("### ")
                            ? "<h3>\(e(String(line.dropFirst(4))))</h3>" : "<p>\(e(String(line.dropFirst(2))))</p>"
                    }.joined() + "</section>")
        }
        h += ["</main>", "</body>", "</html>"]
        return h.joined(separator: "\n") + "\n"
    }
}

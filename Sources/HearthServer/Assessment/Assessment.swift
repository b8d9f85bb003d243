import Foundation
import HearthCore

/// The conformance evidence for one deployment (and optionally one model), made from
/// ``AssessmentInput`` with no I/O: the ICS (every EN 303 645 provision with its status, outcome and
/// evidence), the IXIT sheets, a PSTI statement of compliance per model, the live checks, and the
/// gap list. ``json`` is the document `hearth assess` signs; its schema is
/// `Resources/assessment.schema.json`.
public struct Assessment: Sendable {
    public enum Outcome: String, Sendable {
        case met
        case notMet = "not-met"
        case notApplicable = "not-applicable"
    }

    public struct Finding: Sendable {
        public let provision: Provision
        /// mandatory, recommended, or not-applicable once the condition is evaluated.
        public let status: String
        public let conditionHolds: Bool?
        public let outcome: Outcome
        public let party: String
        public let how: String
        public let evidence: [String]
        public let tests: [String]
        public let checks: [LiveCheckID]
        public let justification: String?
        public let why: String?
        public let fix: String?
    }

    public struct Gap: Sendable {
        public let provision: String?
        public let level: String
        public let what: String
        public let why: String
        public let fix: String
    }

    public let input: AssessmentInput
    public let findings: [Finding]
    public let gaps: [Gap]

    public static let format = "hearth-assessment/1"

    public init(_ input: AssessmentInput) {
        self.input = input
        findings = Provision.all.map { Self.evaluate($0, input) }
        gaps = Self.gaps(findings, input)
    }

    static func evaluate(_ p: Provision, _ input: AssessmentInput) -> Finding {
        let rule = ProvisionRule.rules[p.id] ?? .maker("No rule.")
        let (seen, problem) = rule.evidence(input)
        let statement = input.statements.provisions[p.id]
        let holds = p.condition.map { $0.holds(input) } ?? true
        func finding(
            _ status: String, _ outcome: Outcome, evidence: [String] = [], justification: String? = nil,
            why: String? = nil, fix: String? = nil
        ) -> Finding {
            Finding(
                provision: p, status: status, conditionHolds: p.condition == nil ? nil : holds, outcome: outcome,
                party: rule.party.rawValue, how: rule.how, evidence: seen + evidence, tests: rule.tests,
                checks: rule.checks, justification: justification, why: why, fix: fix)
        }
        let level = p.level.rawValue
        if holds == false, let condition = p.condition {
            return finding("not-applicable", .notApplicable, justification: condition.whyNot)
        }
        // The maker may say a conditional or recommended provision does not apply (5.0-1); a
        // mandatory unconditional one always applies.
        if case .notApplicable(let why)? = statement, p.condition != nil || p.level == .recommended {
            return finding("not-applicable", .notApplicable, evidence: ["maker's statement"], justification: why)
        }
        let failed = rule.checks.compactMap { id -> LiveCheckResult? in
            guard let check = input.check(id) else {
                return LiveCheckResult(id, did: "not run", saw: [], passed: false, fix: ProvisionRule.noServer.fix)
            }
            return check.passed ? nil : check
        }
        let checkEvidence = rule.checks.compactMap { input.check($0) }.map {
            "live check \($0.id.rawValue): \($0.passed ? "passed" : "FAILED")"
        }
        // A maker's statement answers what only the maker can show; it never overrules a failed check.
        if failed.isEmpty, rule.party == .maker || problem?.makerMayState == true {
            if case .met(let how)? = statement {
                return finding(level, .met, evidence: checkEvidence + ["maker's statement: \(how)"])
            }
            if rule.party == .maker {
                return finding(
                    level, .notMet, evidence: checkEvidence,
                    why: "only the maker can show this, and maker-statements.json says nothing of \(p.id)",
                    fix: Self.statementFix(p))
            }
        }
        if !failed.isEmpty {
            return finding(
                level, .notMet, evidence: checkEvidence,
                why: failed.map { "live check \($0.id.rawValue) failed: \($0.saw.last ?? $0.did)" }.joined(
                    separator: "; "),
                fix: failed.compactMap(\.fix).joined(separator: " "))
        }
        if let problem {
            return finding(level, .notMet, evidence: checkEvidence, why: problem.why, fix: problem.fix)
        }
        return finding(level, .met, evidence: checkEvidence)
    }

    static func statementFix(_ p: Provision) -> String {
        let applies = p.condition != nil || p.level == .recommended
        return
            "Add to DATA/maker-statements.json under \"provisions\": \"\(p.id)\": {\"met\": true, \"how\": \"…\"}"
            + (applies ? " or {\"applies\": false, \"why\": \"…\"}" : "") + "."
    }

    /// What the maker must do, most pressing first: mandatory provisions and the PSTI statement's
    /// missing facts (law), then recommended provisions.
    static func gaps(_ findings: [Finding], _ input: AssessmentInput) -> [Gap] {
        var mandatory: [Gap] = []
        var recommended: [Gap] = []
        for f in findings where f.outcome == .notMet {
            let gap = Gap(
                provision: f.provision.id, level: f.status, what: f.provision.requirement, why: f.why ?? "",
                fix: f.fix ?? "")
            if f.status == "mandatory" { mandatory.append(gap) } else { recommended.append(gap) }
        }
        // One gap per manufacturer, naming every model whose statement lacks the address.
        let unaddressed = Dictionary(
            grouping: input.models.filter { input.statements.addresses[$0.model.maker] == nil }
        ) {
            $0.model.maker
        }
        for (maker, models) in unaddressed.sorted(by: { $0.key < $1.key }) {
            mandatory.append(
                Gap(
                    provision: nil, level: "mandatory",
                    what:
                        "The PSTI statement of compliance names the manufacturer's address (\(models.map(\.model.id.rawValue).joined(separator: ", "))).",
                    why: "no postal address is stated for \"\(maker)\"",
                    fix: "Add to DATA/maker-statements.json: \"manufacturers\": {\"\(maker)\": {\"address\": \"…\"}}."
                ))
        }
        return mandatory + recommended
    }

    // MARK: The document

    public var json: JSONValue {
        let applicable = findings.filter { $0.outcome != .notApplicable }
        func count(_ status: String, met: Bool? = nil) -> JSONValue {
            .number(
                Double(applicable.filter { $0.status == status && (met == nil || ($0.outcome == .met) == met) }.count))
        }
        return [
            "format": .string(Self.format),
            "standard": "ETSI EN 303 645 V2.1.1",
            "generatedAt": .string(Advisory.timestamp(input.at)),
            "deployment": deploymentJSON,
            "models": .array(input.models.map { .string($0.model.id.rawValue) }),
            "summary": [
                "mandatory": count("mandatory"), "mandatoryMet": count("mandatory", met: true),
                "recommended": count("recommended"), "recommendedMet": count("recommended", met: true),
                "notApplicable": .number(Double(findings.count - applicable.count)),
                "checks": .number(Double(input.checks.count)),
                "checksPassed": .number(Double(input.checks.filter(\.passed).count)),
                "gaps": .number(Double(gaps.count)),
            ],
            "provisions": .array(findings.map(Self.json)),
            "checks": .array(input.checks.map(\.json)),
            "ixit": .array(ixit.map(\.json)),
            "psti": .array(input.models.map(psti)),
            "gaps": .array(
                gaps.enumerated().map { i, g in
                    var o: [String: JSONValue] = [
                        "rank": .number(Double(i + 1)), "level": .string(g.level), "what": .string(g.what),
                        "why": .string(g.why), "fix": .string(g.fix),
                    ]
                    o["provision"] = g.provision.map { .string($0) } ?? .null
                    return .object(o)
                }),
        ]
    }

    var deploymentJSON: JSONValue {
        var o: [String: JSONValue] = ["storage": .string(input.storage), "serverRunning": .bool(input.serving != nil)]
        if let s = input.serving {
            o["startedAt"] = .string(Advisory.timestamp(s.startedAt))
            o["hostnames"] = .array(s.hostnames.map { .string($0) })
            o["listeners"] = .array(
                s.listeners.map {
                    [
                        "name": .string($0.name), "host": .string($0.host), "port": .number(Double($0.port)),
                        "security": .string($0.security.rawValue),
                    ]
                })
            o["settings"] = [
                "passwordHash": .string(s.passwordHash),
                "sessionLifetimeSeconds": .number(Double(s.sessionLifetimeSeconds)),
                "securityContacts": .array(s.securityContacts.map { .string($0) }),
                "securityLanguages": .array(s.securityLanguages.map { .string($0) }),
                "maxConnections": .number(Double(s.maxConnections)),
                "connectsPerSecond": .number(s.connectsPerSecond),
                "publishesPerSecondPerDevice": .number(s.publishesPerSecond),
                "bytesPerSecondPerDevice": .number(s.bytesPerSecond),
                "monitoring": .bool(s.monitoring), "readingsSealed": .bool(s.readingsSealed),
                "kekOutsideDataFolder": .bool(s.kekOutsideDataFolder),
                "testOnlyFlags": .array(s.testOnly.map { .string($0) }),
            ]
        }
        return .object(o)
    }

    static func json(_ f: Finding) -> JSONValue {
        var o: [String: JSONValue] = [
            "id": .string(f.provision.id), "guideline": .number(Double(f.provision.guideline)),
            "requirement": .string(f.provision.requirement), "level": .string(f.provision.level.rawValue),
            "status": .string(f.status), "outcome": .string(f.outcome.rawValue), "party": .string(f.party),
            "how": .string(f.how), "evidence": .array(f.evidence.map { .string($0) }),
            "tests": .array(f.tests.map { .string($0) }), "checks": .array(f.checks.map { .string($0.rawValue) }),
        ]
        o["condition"] =
            f.provision.condition.map { c in
                ["text": .string(c.text), "holds": f.conditionHolds.map { .bool($0) } ?? .null]
            } ?? .null
        o["justification"] = f.justification.map { .string($0) } ?? .null
        o["why"] = f.why.map { .string($0) } ?? .null
        o["fix"] = f.fix.map { .string($0) } ?? .null
        return .object(o)
    }
}

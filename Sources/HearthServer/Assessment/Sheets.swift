import Foundation
import HearthCore

/// The IXIT sheets (named after those ETSI TS 103 701 asks for) and the PSTI statement of
/// compliance, filled from the deployment and its models.
extension Assessment {
    public struct Sheet: Sendable {
        public let id: String
        public let title: String
        public let entries: [(name: String, value: String)]

        var json: JSONValue {
            [
                "id": .string(id), "title": .string(title),
                "entries": .array(entries.map { ["name": .string($0.name), "value": .string($0.value)] }),
            ]
        }
    }

    func how(_ id: String) -> String { findings.first { $0.provision.id == id }?.how ?? "" }

    /// The deployment's public address, as owners and researchers reach it.
    var baseURL: String {
        guard let s = input.serving, let https = s.listener("https") else { return "https://HOST" }
        let host =
            s.hostnames.first { $0 != "localhost" && !$0.hasPrefix("127.") && $0 != "::1" } ?? s.hostnames.first
            ?? https.host
        return "https://\(host.contains(":") ? "[\(host)]" : host):\(https.port)"
    }

    var ixit: [Sheet] {
        let s = input.serving
        let models = input.models
        return [
            Sheet(
                id: "AuthMech", title: "Authentication mechanisms",
                entries: [
                    ("Owners and operators", how("5.1-1")),
                    ("Secrets at rest", how("5.1-3") + (s.map { " Cost: \($0.passwordHash)." } ?? "")),
                    ("Devices", "Mutual TLS with a per-unit P-256 certificate from the deployment's device CA."),
                    ("Claiming a unit", how("5.1-2")),
                    ("Changing the authentication value", how("5.1-4")),
                    ("Brute-force mitigation", how("5.1-5")),
                ]),
            Sheet(
                id: "UserInfo", title: "User information",
                entries: [
                    ("Vulnerability disclosure", "\(baseURL)/.well-known/security.txt and \(baseURL)/security/policy"),
                    ("Support periods", "\(baseURL)/models (each model's page)"),
                    (
                        "Privacy notices",
                        models.map { "\(baseURL)/models/\($0.model.id)/privacy" }.joined(separator: ", ")
                    ),
                    ("Update notes", how("5.3-11")),
                    ("Deletion", how("5.11-3")),
                ]),
            Sheet(
                id: "UpdMech", title: "Update mechanisms",
                entries: [
                    ("Mechanism", how("5.3-2")), ("Cryptography", how("5.3-7")),
                    ("Verification on the device", how("5.3-9")),
                    ("Trust relationship", how("5.3-10")), ("Automatic installation", how("5.3-4")),
                    ("Disruption", how("5.3-12")),
                    ("Repository", "\(baseURL)/tuf/metadata/ (root.json, timestamp.json, snapshot.json, targets.json)"),
                ]),
            Sheet(
                id: "SecBoot", title: "Secure boot mechanisms",
                entries: [("Verified boot", how("5.7-1")), ("On failure", how("5.7-2"))]),
            Sheet(
                id: "ComMech", title: "Communication mechanisms",
                entries: (s?.listeners ?? []).map {
                    (
                        "\($0.name) \($0.host):\($0.port)",
                        $0.security == .plaintext
                            ? "plaintext, loopback only" : "\($0.security.rawValue): \(how("5.5-1"))"
                    )
                } + [("Implementations", how("5.5-2"))]),
            Sheet(
                id: "SecParam", title: "Security parameters",
                entries: [
                    (
                        "Key-encryption key (KEK)",
                        "32 random bytes made on first start; seals every other key (AES-GCM); \(s?.kekOutsideDataFolder == true ? "kept outside the data folder (--kek-file)" : "kept in the data folder, 0600")."
                    ),
                    ("Deployment root CA and device CA keys", "P-256, made on first start, sealed with the KEK."),
                    (
                        "Server TLS key",
                        "P-256, re-issued 30 days before expiry or when the host names change; sealed with the KEK."
                    ),
                    (
                        "Device identity keys",
                        "P-256 per unit, made at provisioning or on the device (CSR); sealed on the device under a device-unique key."
                    ),
                    (
                        "Update keys",
                        "Maker's root and targets keys offline (hearth release); snapshot and timestamp Ed25519 keys online, sealed with the KEK, renewed before expiry."
                    ),
                    (
                        "Session tokens and setup codes",
                        "Random; stored only as hashes (SHA-256 for tokens, scrypt for codes)."
                    ),
                    (
                        "Signing keys",
                        "Deletion receipts and this assessment: P-256 keys derived from the KEK (HKDF), public keys published."
                    ),
                ]),
            Sheet(
                id: "PersData", title: "Personal data",
                entries: models.flatMap { m in
                    m.model.telemetry.map { f in
                        (
                            "\(m.model.id).\(f.name)",
                            f.declaration.map {
                                "\($0.category.rawValue), purpose \($0.purpose), \($0.personal ? "personal" : "not personal"), to \($0.recipients.joined(separator: "; ")), kept \($0.retentionDays) days"
                            } ?? "UNDECLARED"
                        )
                    }
                } + [("In transit", how("5.8-2")), ("Consent", how("6-2")), ("Withdrawal", how("6-3"))]),
            Sheet(
                id: "ExtSens", title: "External sensing capabilities",
                entries: models.map { m in
                    (
                        m.model.id.rawValue,
                        m.model.telemetry.map { "\($0.name)\($0.unit.map { " (\($0))" } ?? "")" }.joined(
                            separator: ", ")
                    )
                }),
            Sheet(
                id: "Telemetry", title: "Telemetry",
                entries: [("Anomaly detection", how("5.10-1")), ("Minimisation", how("6-4"))]),
            Sheet(
                id: "DelFunc", title: "Deletion functions",
                entries: [
                    ("On the device", how("5.11-1")), ("In the service", how("5.11-2")),
                    ("Confirmation", how("5.11-4")),
                ]),
            Sheet(
                id: "VulnDisc", title: "Vulnerability disclosure and handling",
                entries: [("Policy", how("5.2-1")), ("Handling", how("5.2-2"))]),
        ]
    }

    func psti(_ m: ModelFacts) -> JSONValue {
        let address = input.statements.addresses[m.model.maker]
        let batch =
            m.devices == 0
            ? "no unit provisioned yet"
            : "units \(m.firstSerial ?? "?") to \(m.lastSerial ?? "?") (\(m.devices) provisioned)"
        let ends = m.model.supportEnds
        return [
            "model": .string(m.model.id.rawValue),
            "productType": .string(m.model.name),
            "batch": .string(batch),
            "manufacturer": ["name": .string(m.model.maker), "address": address.map { .string($0) } ?? .null],
            "supportPeriod": [
                "ends": .string(ends.description),
                "text": .string("Security updates for the \(m.model.name) until \(ends.plainEnglish)."),
            ],
            "declaration": .string(
                "This statement of compliance is prepared by or on behalf of \(m.model.maker). In the opinion of \(m.model.maker), the \(m.model.name) complies with the applicable security requirements in Schedule 1 to the Product Security and Telecommunications Infrastructure (Security Requirements for Relevant Connectable Products) Regulations 2023."
            ),
            "requirements": [
                ["paragraph": "1 Passwords", "how": .string(how("5.1-1"))],
                [
                    "paragraph": "2 Reporting security issues",
                    "how": .string("\(baseURL)/.well-known/security.txt; \(how("5.2-1"))"),
                ],
                [
                    "paragraph": "3 Security update period",
                    "how": .string("Until \(ends.plainEnglish), published at \(baseURL)/models."),
                ],
            ],
            "signature": ["name": "", "function": "", "place": "", "date": ""],
            "label": [
                .string("Model: \(m.model.name) (\(m.model.id))"),
                .string("Security updates until \(ends.plainEnglish)"),
                .string("Report a security problem: \(baseURL)/security/report"),
            ],
            "website": [
                .string("The support period: security updates until \(ends.plainEnglish), at \(baseURL)/models"),
                .string(
                    "How to report a security issue, when to expect an acknowledgement and status updates: \(baseURL)/security/policy"
                ),
                .string("This statement of compliance, with the product"),
            ],
        ]
    }
}

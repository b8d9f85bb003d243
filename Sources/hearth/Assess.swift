import ArgumentParser
import Foundation
import HearthCore
import HearthServer

/// `hearth assess`: the conformance evidence a maker hands to a test lab or regulator, made from
/// the live deployment; `hearth assess verify` checks a copy has not been edited.
struct Assess: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "assess",
        abstract: "Assess the deployment against ETSI EN 303 645 and UK PSTI, with live checks, signed.",
        discussion: """
            `hearth assess --data DIR --out OUT` inspects the deployment in DIR and the server serving it \
            (started with `hearth serve --data DIR`; it declares its listeners in DIR/serving.json), runs \
            the live checks (listeners' TLS, open ports, security.txt, the update repository, the audit \
            chain, support periods, firmware, common passwords) and writes to OUT: assessment.json (signed: \
            assessment.json.sig, key in assessment-key.pem), assessment.schema.json, assessment.md and a \
            printable assessment.html — the ICS (every provision with status, outcome and evidence), the \
            IXIT sheets, a PSTI statement of compliance per model and the gap list with fixes. What only \
            the maker can say goes in DIR/maker-statements.json. Check a copy with `hearth assess verify`.
            """,
        subcommands: [Report.self, Verify.self], defaultSubcommand: Report.self)

    /// Refuses a data folder that holds no deployment (no key-encryption key and root CA yet).
    static func requireDeployment(_ path: String) throws {
        guard DataFolder.holdsDeployment(path) else {
            throw HearthError.invalid(
                "data", "\(path) holds no Hearth deployment; give the folder `hearth serve --data` uses")
        }
    }

    struct Report: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "report", abstract: "Assess the deployment and write the signed evidence (the default).")

        @OptionGroup var options: DataOptions

        @Option(help: "Assess one product model only (its id); default: every model.")
        var model: String?

        @Option(help: "Folder to write the assessment files into (created if missing).")
        var out: String

        @Option(
            help:
                "The maker's statements (JSON: manufacturers' addresses; per provision how it is met or why it does not apply). Default: DIR/maker-statements.json."
        )
        var statements: String?

        @Flag(
            name: .customLong("fail-on-gaps"),
            help: "Exit with status 1 when a mandatory provision or the PSTI statement has a gap (for CI).")
        var failOnGaps = false

        func run() async throws {
            // An assessment inspects a deployment; it never creates one from a mistyped path.
            try await reportingErrors { try Assess.requireDeployment(options.data) }
            let mandatoryGaps = try await options.deployment { folder, storage in
                let serving = ServingRecord.read(from: folder.url)
                print(
                    serving.map {
                        "Assessing the deployment served by process \($0.pid) (\($0.listeners.count) listeners)…"
                    }
                        ?? "No server is running on \(folder.url.path): its listeners cannot be checked (start `hearth serve --data \(folder.url.path)`). Assessing the rest…"
                )
                fflush(nil)
                let started = Date()
                let assessment = try await Assessor(folder: folder, store: storage.store).assess(
                    serving: serving, storage: storage.description, model: try model.map { try ProductModelID($0) },
                    statements: try MakerStatements.load(folder: folder.url, path: statements))
                let files = try assessment.write(
                    to: URL(fileURLWithPath: out), signer: try DeploymentSigner.assessments(kek: folder.kek))
                print(assessment.summary)
                for check in assessment.input.checks where !check.passed {
                    print("  live check \(check.id.rawValue) FAILED: \(check.saw.joined(separator: "; "))")
                }
                for (i, gap) in assessment.gaps.prefix(10).enumerated() {
                    print("  \(i + 1). \(gap.provision ?? "PSTI") (\(gap.level)): \(gap.why). Fix: \(gap.fix)")
                }
                if assessment.gaps.count > 10 { print("  … and \(assessment.gaps.count - 10) more in assessment.md") }
                print(String(format: "Assessed in %.1f s. Wrote:", Date().timeIntervalSince(started)))
                for file in files { print("  \(file.path)") }
                return assessment.gaps.filter { $0.level == "mandatory" }.count
            }
            if failOnGaps, mandatoryGaps > 0 { throw ExitCode.failure }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Check an assessment's signature: exits 0 if it verifies, 1 if it was edited or signed by another key.",
            discussion: """
                FILE is the assessment.json `hearth assess` wrote (its signature in FILE.sig) or what \
                GET /api/v1/assessment answered ({"assessment": …, "signature": …}). The key is the \
                deployment's: --key PEM (e.g. from GET /api/v1/assessment-key), or --data DIR on the host.
                """)

        @Argument(help: "The assessment file.")
        var file: String

        @Option(help: "The deployment's public key (PEM).")
        var key: String?

        @Option(help: "The detached signature (default: FILE.sig).")
        var signature: String?

        @Option(help: "The data folder, to take the key from the deployment itself.")
        var data: String?

        func run() async throws {
            try await reportingErrors {
                let pem: String
                if let key {
                    guard let text = try? String(contentsOfFile: key, encoding: .utf8) else {
                        throw HearthError.invalid("key", "cannot read \(key)")
                    }
                    pem = text
                } else if let data {
                    try Assess.requireDeployment(data)
                    var options = try DataOptions.parse([])
                    options.data = data
                    pem = try DeploymentSigner.assessments(kek: try options.folder().kek).publicKeyPEM
                } else {
                    throw HearthError.invalid(
                        "key", "give the deployment's public key (--key PEM) or its --data folder")
                }
                guard let bytes = FileManager.default.contents(atPath: file) else {
                    throw HearthError.invalid("file", "cannot read \(file)")
                }
                let (document, signatureBytes) = try Self.signed(bytes, detached: signature ?? file + ".sig")
                guard DeploymentSigner.verify(signatureBytes, over: document, publicKeyPEM: pem) else {
                    print("Assessment NOT verified: it was edited, or signed by another deployment.")
                    throw ExitCode.failure
                }
                print("Assessment verified: signed by this deployment's key and unchanged.")
            }
        }

        /// The signed bytes and the signature: the API's envelope, or the file and its `.sig`.
        static func signed(_ bytes: Data, detached: String) throws -> (Data, Data) {
            if let json = try? JSONValue.parse(bytes), case .object(let o) = json, case .object? = o["assessment"],
                case .string(let base64)? = o["signature"]
            {
                guard let signature = Data(base64Encoded: base64), let document = o["assessment"] else {
                    throw HearthError.invalid("file", "the signature is not base64")
                }
                return (document.serialized(), signature)
            }
            guard let signature = FileManager.default.contents(atPath: detached) else {
                throw HearthError.invalid("signature", "cannot read \(detached)")
            }
            return (bytes, signature)
        }
    }
}

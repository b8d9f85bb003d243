import Crypto
import Foundation
import HearthCore
import HearthTestSupport
import Testing

/// The real `hearth serve`, with a released image in its update repository, under clients no one
/// here wrote: curl with the request that once killed the process, a raw-request fuzzer over TLS
/// for the headers and the routes outside the API schema, and schemathesis against the OpenAPI
/// document. No answer is a 5xx and the server answers /healthz afterwards.
extension HeavyServerTests {
    @Suite struct HTTPFuzzTests {
        @Test(.enabled(if: toolsPresentOrRequired("curl"))) func theServerSurvivesHostileRequestsAndFuzzing()
            async throws
        {
            let curl = try curlPath()
            let python = try requiredPython(module: "schemathesis", package: "schemathesis")
            let dir = temporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let data = dir.appendingPathComponent("data").path
            func hearth(_ arguments: [String]) async throws -> String {
                let r = try await HearthProcess.run(arguments)
                #expect(r.status == 0, "hearth \(arguments.prefix(2)): \(r.output)")
                return r.output
            }
            // A model, the maker's keys and one signed release, imported.
            let model = ProductModel.demoModels()[0]
            let modelFile = dir.appendingPathComponent("model.json")
            try Data(model.json.text.utf8).write(to: modelFile)
            _ = try await hearth(["model", "add", "--data", data, "--file", modelFile.path])
            let keys = dir.appendingPathComponent("online-keys.json")
            try Data(try await hearth(["updates", "online-keys", "--data", data]).utf8).write(to: keys)
            let workspace = dir.appendingPathComponent("ws").path
            _ = try await hearth(["release", "init", "--workspace", workspace, "--online-keys", keys.path])
            let image = Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31) })
            let imageFile = dir.appendingPathComponent("fw.bin")
            try image.write(to: imageFile)
            _ = try await hearth([
                "release", "publish", "--workspace", workspace, "--image", imageFile.path, "--model", model.id.rawValue,
                "--version", "1.0.0",
                "--min-from", "0.0.0", "--fixes", "First release.", "--severity", "low", "--support-ends", "2031-12-31",
            ])
            _ = try await hearth(["updates", "import", "--data", data, "--from", workspace + "/publish"])
            let target = "/tuf/targets/\(Data(SHA256.hash(data: image)).hex).\(model.id.rawValue)-1.0.0.img"

            let server = try HearthProcess([
                "serve", "--data", data, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--mqtt-listen",
                "127.0.0.1:0",
            ])
            #expect(try await server.wait(for: "Clients verify it"), "\(server.text)")
            let base = try #require(server.baseURL)
            let port = String(base.split(separator: ":").last!)
            let ca = data + "/root-ca.pem"
            func status(_ path: String, _ headers: [String] = []) async throws -> String {
                try await runTool(
                    curl,
                    ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", ca] + headers.flatMap { ["-H", $0] } + [
                        base + path
                    ]
                ).output
            }
            await #expect(try status(target) == "200")
            // The review's request, exactly: once an empty reply and a dead process.
            await #expect(try status(target, ["Range: bytes=-9223372036854775807-"]) == "416")
            await #expect(try status(target, ["Range: bytes=-5-"]) == "416")
            await #expect(try status(target, ["Range: bytes=4095-"]) == "206")
            await #expect(try status("/healthz") == "200")

            // The operator's token, so schemathesis reaches the signed-in routes too.
            let link = try #require(
                server.text.components(separatedBy: "\n").first { $0.contains("/setup/") }?.trimmingCharacters(
                    in: .whitespaces))
            let setupToken = String(link.split(separator: "/").last!)
            /// POSTs a JSON body with curl (a client no one here wrote); the answer's body.
            func post(_ path: String, _ body: String) async throws -> String {
                try await runTool(
                    curl, ["-s", "--cacert", ca, "-H", "content-type: application/json", "-d", body, base + path]
                ).output
            }
            /// A new session's bearer token (43 characters) for these credentials.
            func signIn(_ credentials: String) async throws -> String {
                let session = try await post("/api/v1/sessions", credentials)
                return String(try #require(session.components(separatedBy: #""token":""#).last?.prefix(43)))
            }
            let credentials = #"{"email":"op@example.com","password":"operator passphrase that is long"}"#
            _ = try await post(
                "/api/v1/setup",
                #"{"token":"\#(setupToken)","email":"op@example.com","password":"operator passphrase that is long"}"#)
            let token = try await signIn(credentials)

            let fuzz = try await ChildProcess.run(
                python, [httpFuzzScript, "127.0.0.1", port, ca, target, "--seconds", "15", "--seed", "12"], timeout: 120
            )
            print(fuzz.output.split(separator: "\n").first { $0.hasPrefix("http_fuzz:") } ?? "http_fuzz: no summary")
            #expect(fuzz.status == 0, "\(fuzz.output)")
            #expect(fuzz.output.contains("0 failures"), "\(fuzz.output)")

            // schemathesis with every check (the document states every rule the validators apply:
            // no schema-valid request refused as malformed, no schema-violating one accepted, only
            // documented statuses and bodies), as an owner and as an operator.
            let ownerCredentials = #"{"email":"owner@example.com","password":"an owner passphrase for fuzzing"}"#
            _ = try await post("/api/v1/accounts", ownerCredentials)
            let ownerToken = try await signIn(ownerCredentials)
            for (who, bearer) in [("owner", ownerToken), ("operator", token)] {
                let st = try await ChildProcess.run(
                    python,
                    [
                        "-c",
                        "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'st'; schemathesis()",
                        "--config-file", schemathesisConfig,
                        "run", base + "/api/v1/openapi.json", "--checks", "all", "--tls-verify", ca, "--header",
                        "Authorization: Bearer \(bearer)",
                        "--max-examples", "15", "--seed", "7", "--phases", "examples,coverage,fuzzing", "--workers",
                        "1", "--request-timeout", "15", "--no-color", "--generation-database", "none",
                        "--exclude-path", "/api/v1/sessions/current",
                    ], timeout: 600)
                print(
                    "schemathesis as \(who): "
                        + (st.output.split(separator: "\n").last {
                            $0.contains("passed") || $0.contains("failed") || $0.contains("error")
                        } ?? "no summary"))
                #expect(st.status == 0, "as \(who): \(st.output.suffix(4000))")
            }
            await #expect(try status("/healthz") == "200", "the server answers after the fuzzing")
            server.signal(SIGTERM)
            #expect(try await server.waitForExit() == 0, "\(server.text.suffix(2000))")
        }
    }
}

import Foundation
import GRDB
import HearthCore
import HearthCrypto
import HearthFixtures
import HearthTestSupport
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Testing
import X509

/// Black-box tests of the `hearth` executable, as a newcomer or an operator runs it.
@Suite(.serialized) struct ServerProcessTests {
    @Test func theServerStartsOnAFreshFolderAndSpeaksOnlyHTTPS() async throws {
        let curl = try curlPath()
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("data").path
        let server = try HearthProcess([
            "serve", "--data", data, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--mqtt-listen",
            "127.0.0.1:0", "--dev-listener",
            "127.0.0.1:0",
        ])
        #expect(try await server.wait(for: "one-time link"), "\(server.text)")
        #expect(try await server.wait(for: "MQTT development listener"), "\(server.text)")
        let base = try #require(server.baseURL)
        let port = Int(base.split(separator: ":").last!)!

        // The data folder and its keys are private.
        for (path, mode) in [
            (data, 0o700), (data + "/kek.key", 0o600), (data + "/device-ca.key.sealed", 0o600),
            (data + "/hearth.sqlite", 0o600),
        ] {
            var st = stat()
            #expect(stat(path, &st) == 0)
            #expect(Int(st.st_mode & 0o777) == mode, "\(path)")
        }

        let health = try await runTool(curl, ["-s", "--cacert", data + "/root-ca.pem", base + "/healthz"])
        #expect(health.status == 0)
        #expect(health.output == #"{"status":"ok"}"#)
        // Verified against the deployment root CA, not the device CA.
        #expect(try await runTool(curl, ["-s", "--cacert", data + "/device-ca.pem", base + "/healthz"]).status != 0)

        // Plain HTTP to the TLS port gets no HTTP answer.
        let plain = try await runTool(
            curl, ["-s", "-m", "5", "-o", "-", "-w", "%{http_code}", "http://127.0.0.1:\(port)/healthz"])
        #expect(!plain.output.contains("ok"))
        #expect(plain.output.hasSuffix("000"))

        // TLS 1.0 and 1.1 handshakes are refused for their version (a protocol_version alert, not
        // a suite the client lacks: it offers a CBC suite those versions can use); 1.2 and 1.3
        // succeed.
        let root = try #require(try NIOSSLCertificate.fromPEMFile(data + "/root-ca.pem").first)
        for (version, served) in [(TLSVersion.tlsv1, false), (.tlsv11, false), (.tlsv12, true), (.tlsv13, true)] {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .certificates([root])
            tls.minimumTLSVersion = .tlsv1
            tls.maximumTLSVersion = version
            tls.cipherSuites = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"
            let error = await TLSProbe.handshake(port: port, tls)
            #expect((error == nil) == served, "TLS \(version): \(String(describing: error))")
            if !served {
                #expect("\(String(describing: error))".contains("PROTOCOL_VERSION"), "\(String(describing: error))")
            }
        }
        // Key exchange: the hybrid post-quantum group is served; classical peers still connect.
        for c in TLSProbe.keyExchangeCases(TLSPolicy.client(trustRoots: [root])) {
            let error = await TLSProbe.handshake(port: port, c.configuration)
            #expect((error == nil) == c.served, "HTTPS, \(c.what): \(String(describing: error))")
        }

        // The link is printed once and works once.
        let link = try #require(
            server.text.components(separatedBy: "\n").first { $0.contains("/setup/") }?.trimmingCharacters(
                in: .whitespaces))
        let token = String(link.split(separator: "/").last!)
        let setup = {
            try await runTool(
                curl,
                [
                    "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", data + "/root-ca.pem", "-H",
                    "content-type: application/json", "-d",
                    #"{"token":"\#(token)","email":"op@example.com","password":"operator passphrase that is long"}"#,
                    base + "/api/v1/setup",
                ]
            ).output
        }
        await #expect(try setup() == "201")
        await #expect(try setup() == "410")

        server.signal(SIGTERM)
        #expect(try await server.waitForExit() == 0)
        #expect(server.text.contains("Hearth stopped."))

        // A restart with an operator prints no link.
        let again = try HearthProcess([
            "serve", "--data", data, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--mqtt-listen",
            "127.0.0.1:0",
        ])
        #expect(try await again.wait(for: "Clients verify it"))
        // The link would be printed before the HTTPS listener says it is ready: wait for /readyz.
        let restarted = try #require(again.baseURL)
        var ready = ""
        for _ in 0..<300 where !ready.hasSuffix("200") {
            ready = try await runTool(
                curl,
                [
                    "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", data + "/root-ca.pem",
                    restarted + "/readyz",
                ]
            ).output
            if !ready.hasSuffix("200") { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(ready.hasSuffix("200"), "never ready: \(again.text)")
        #expect(!again.text.contains("/setup/"))
        again.signal(SIGINT)
        #expect(try await again.waitForExit() == 0)
    }

    @Test func aClaimAcknowledgedBeforeKill9IsThereAfterRestart() async throws {
        let curl = try curlPath()
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try await dataFolder(in: dir, with: ProductModel.demoModels()[1])
        let (serial, code) = try await provisionedLock(data: data, in: dir, count: 2)

        func start() async throws -> (HearthProcess, (String, [String]) async throws -> (status: Int32, output: String))
        {
            let server = try HearthProcess([
                "serve", "--data", data, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--mqtt-listen",
                "127.0.0.1:0",
            ])
            #expect(try await server.wait(for: "Clients verify it"), "\(server.text)")
            let base = server.baseURL ?? "https://127.0.0.1:1"
            return (
                server,
                { path, extra in
                    try await runTool(
                        curl, ["-s", "-w", "\n%{http_code}", "--cacert", data + "/root-ca.pem"] + extra + [base + path])
                }
            )
        }
        let json = ["-H", "content-type: application/json"]
        let credentials = #"{"email":"ann@example.com","password":"a long and unusual passphrase"}"#
        var (server, call) = try await start()
        await #expect(try call("/api/v1/accounts", json + ["-d", credentials]).output.hasSuffix("201"))
        let session = try await call("/api/v1/sessions", json + ["-d", credentials]).output
        let token = try #require(session.components(separatedBy: #""token":""#).last?.prefix(43))
        let claim = try await call(
            "/api/v1/devices/claim",
            json + ["-H", "authorization: Bearer \(token)", "-d", #"{"serial":"\#(serial)","setupCode":"\#(code)"}"#])
        #expect(claim.output.hasSuffix("201"), "\(claim.output)")
        server.signal(SIGKILL)
        _ = try await server.waitForExit()

        (server, call) = try await start()
        let devices = try await call("/api/v1/devices", ["-H", "authorization: Bearer \(token)"])
        #expect(devices.output.contains(serial), "\(devices.output)")
        server.signal(SIGTERM)
        _ = try await server.waitForExit()

        // The audit log recorded it all and verifies; an edit to it is detected.
        let verify = try await HearthProcess.run(["audit", "verify", "--data", data])
        #expect(verify.status == 0, "\(verify.output)")
        #expect(verify.output.contains("Audit log intact"))
        let show = try await HearthProcess.run(["audit", "show", "--data", data])
        for kind in [
            "model.created", "devices.provisioned", "account.created", "sign_in.succeeded", "device.claimed",
            "server.started",
        ] {
            #expect(show.output.contains(kind), "audit lacks \(kind)")
        }
        try await DatabaseQueue(path: data + "/hearth.sqlite").write { db in
            try db.execute(
                sql:
                    "DROP TRIGGER audit_log_no_update; UPDATE audit_log SET actor = 'someone-else' WHERE kind = 'device.claimed'"
            )
        }
        let tampered = try await HearthProcess.run(["audit", "verify", "--data", data])
        #expect(tampered.status == 1)
        #expect(tampered.output.contains("TAMPERED"))
    }

    @Test func factoryBundlesAreCompleteAndPrivate() async throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try await dataFolder(in: dir, with: ProductModel.demoModels()[0])
        let out = dir.appendingPathComponent("out")
        let r = try await HearthProcess.run([
            "factory", "provision", "--data", data, "--model", "thermostat-t1", "--count", "3", "--out", out.path,
        ])
        #expect(r.status == 0, "\(r.output)")
        #expect(r.output.contains("Provisioned 3 units"))
        let deviceCA = try Certificate(pemEncoded: try String(contentsOfFile: data + "/device-ca.pem", encoding: .utf8))
        let serials = try FileManager.default.contentsOfDirectory(atPath: out.path)
        #expect(serials.count == 3)
        for serial in serials {
            let folder = out.appendingPathComponent(serial)
            var st = stat()
            #expect(stat(folder.appendingPathComponent("device.key.pem").path, &st) == 0, "the key file exists")
            #expect(st.st_mode & 0o077 == 0, "device key is private")
            let label = try String(contentsOf: folder.appendingPathComponent("label.txt"), encoding: .utf8)
            #expect(label.contains("Serial:     \(serial)"))
            #expect(label.contains("Security updates until 31 December 2031"))
            let pem = try String(contentsOf: folder.appendingPathComponent("device.pem"), encoding: .utf8)
            let leaf = try Certificate(
                pemEncoded: pem.components(separatedBy: "-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n")
            #expect(leaf.commonName == serial)
            #expect(await verifyChain(leaf: leaf, root: deviceCA))
        }
        // Unknown model and bad counts are clear errors.
        let unknown = try await HearthProcess.run([
            "factory", "provision", "--data", data, "--model", "nope-1", "--count", "1", "--out", out.path,
        ])
        #expect(unknown.status != 0)
        #expect(unknown.output.contains("no product model 'nope-1'"))
        #expect(
            try await HearthProcess.run([
                "factory", "provision", "--data", data, "--model", "thermostat-t1", "--count", "0", "--out", out.path,
            ]).status != 0)
    }

    @Test func signCSRKeepsTheKeyOnTheDevice() async throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try await dataFolder(in: dir, with: ProductModel.demoModels()[0])
        let csrFile = dir.appendingPathComponent("device.csr")
        let openssl = try await runTool(
            try requiredTool("openssl", package: "openssl"),
            [
                "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                dir.appendingPathComponent("device.key").path, "-subj", "/CN=device", "-out", csrFile.path,
            ])
        #expect(openssl.status == 0)
        let out = dir.appendingPathComponent("out")
        let r = try await HearthProcess.run([
            "factory", "sign-csr", "--data", data, "--model", "thermostat-t1", "--csr", csrFile.path, "--out", out.path,
        ])
        #expect(r.status == 0, "\(r.output)")
        let serial = try #require(try FileManager.default.contentsOfDirectory(atPath: out.path).first)
        let files = try FileManager.default.contentsOfDirectory(atPath: out.appendingPathComponent(serial).path)
        #expect(!files.contains("device.key.pem"))
        #expect(files.contains("device.pem"))
        try "garbage".write(to: csrFile, atomically: true, encoding: .utf8)
        let bad = try await HearthProcess.run([
            "factory", "sign-csr", "--data", data, "--model", "thermostat-t1", "--csr", csrFile.path, "--out", out.path,
        ])
        #expect(bad.status != 0)
        #expect(bad.output.contains("not a PEM certificate signing request"))
    }

    /// `hearth-device csr` makes the key on the device and seals it there; the certificate the
    /// factory signs for its request is for that key.
    @Test func aKeyMadeOnTheDeviceStaysSealedThereAndItsCertificateIsForIt() async throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try await dataFolder(in: dir, with: ProductModel.demoModels()[0])
        let device = dir.appendingPathComponent("device")
        let hardwareKey = dir.appendingPathComponent("hw.key").path
        let made = try await ChildProcess.run(
            builtProduct("hearth-device").path, ["csr", "--folder", device.path, "--hardware-key", hardwareKey])
        #expect(made.status == 0 && made.output.hasPrefix("-----BEGIN CERTIFICATE REQUEST-----"), "\(made.output)")
        for name in try FileManager.default.contentsOfDirectory(atPath: device.path) {
            let bytes = try Data(contentsOf: device.appendingPathComponent(name))
            #expect(bytes.range(of: Data("PRIVATE KEY".utf8)) == nil, "\(name) holds no key in clear")
        }
        let csrFile = dir.appendingPathComponent("device.csr")
        try made.output.write(to: csrFile, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("out")
        let signed = try await HearthProcess.run([
            "factory", "sign-csr", "--data", data, "--model", "thermostat-t1", "--csr", csrFile.path, "--out", out.path,
        ])
        #expect(signed.status == 0, "\(signed.output)")
        let serial = try #require(try FileManager.default.contentsOfDirectory(atPath: out.path).first)
        let chain = try String(
            contentsOf: out.appendingPathComponent(serial).appendingPathComponent("device.pem"), encoding: .utf8)
        let first = try #require(chain.components(separatedBy: "-----END CERTIFICATE-----").first)
        let certificate = try Certificate(pemEncoded: first + "-----END CERTIFICATE-----\n")
        let request = try CertificateSigningRequest(pemEncoded: made.output)
        #expect(certificate.publicKey == request.publicKey, "the certificate is for the device's own key")
    }

    @Test func aDataFolderOthersCanReadIsRefused() async throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("data").path
        #expect(try await HearthProcess.run(["audit", "verify", "--data", data]).status == 0)
        chmod(data, 0o755)
        let r = try await HearthProcess.run([
            "serve", "--data", data, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--mqtt-listen",
            "127.0.0.1:0",
        ])
        #expect(r.status != 0)
        #expect(r.output.contains("must not be readable by others"))
        chmod(data, 0o700)
        chmod(data + "/kek.key", 0o644)
        let k = try await HearthProcess.run([
            "serve", "--data", data, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--mqtt-listen",
            "127.0.0.1:0",
        ])
        #expect(k.status != 0)
        #expect(k.output.contains("key-encryption key"))
    }

    @Test func theDemoStartsTheWholeSystemAndStopsCleanly() async throws {
        let curl = try curlPath()
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let demo = try HearthProcess([
            "demo", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0",
            "--devices", "2", "--data", dir.path,
        ])
        #expect(try await demo.wait(for: "Press Ctrl-C to stop."), "\(demo.text)")
        #expect(demo.text.components(separatedBy: "Setup code:").count - 1 == 4, "two labels per demo model")
        #expect(demo.text.contains("Security updates until 31 December 2031"))
        #expect(demo.text.contains("/setup/"))
        let base = try #require(demo.baseURL)
        let models = try await runTool(curl, ["-s", "--cacert", dir.path + "/root-ca.pem", base + "/api/v1/models"])
        #expect(models.output.contains("thermostat-t1") && models.output.contains("lock-l1"))
        // Devices ran, were claimed through the API with their labels' codes, sent telemetry, and
        // a command went to the thermostat and its answer and new state came back.
        let out = demo.text
        #expect(out.components(separatedBy: "      claimed ").count - 1 == 4, "\(out)")
        #expect(
            out.components(separatedBy: " thermostat-t1: {").count - 1 == 2
                && out.components(separatedBy: " lock-l1: {").count - 1 == 2, "\(out)")
        #expect(out.contains(#"setTarget → {"detail":null,"status":"ok"}"#), "\(out)")
        #expect(out.contains(#"the thermostat now reports {"#) && out.contains(#""target":23.5"#), "\(out)")
        #expect(out.contains("setTarget 99 °C → HTTP 422"), "\(out)")
        #expect(out.contains(#"unlock → {"detail":null,"status":"ok"}"#), "\(out)")
        // A signed update rolled out to both thermostats: installed, restarted, committed, shown to the owner.
        #expect(out.components(separatedBy: ": update to 1.1.0 committed").count - 1 == 2, "\(out)")
        #expect(
            out.components(separatedBy: "firmware 1.1.0, updated. Release notes: Fixes a crash").count - 1 == 2,
            "\(out)")
        // The owner's password is not printed; it is in a private file.
        let credentials = dir.appendingPathComponent("demo-owner.json").path
        let body = try String(contentsOfFile: credentials, encoding: .utf8)
        let password = try #require(body.split(separator: "\"").dropLast().last.map(String.init))
        #expect(!out.contains(password))
        #expect(try FileManager.default.attributesOfItem(atPath: credentials)[.posixPermissions] as? Int == 0o600)
        let session = try await runTool(
            curl,
            [
                "-s", "--cacert", dir.path + "/root-ca.pem", "-H", "content-type: application/json", "-d",
                "@" + credentials, base + "/api/v1/sessions",
            ])
        #expect(session.output.contains(#""token""#), "the printed sign-in command works: \(session.output)")
        // security.txt over HTTPS, and no plaintext listener to ask.
        let txt = try await runTool(
            curl, ["-s", "--cacert", dir.path + "/root-ca.pem", base + "/.well-known/security.txt"])
        #expect(
            txt.output.contains("Contact: \(base)/security/report") && txt.output.contains("Expires: "), "\(txt.output)"
        )
        let plain = try await runTool(
            curl,
            [
                "-s", "-o", "/dev/null", "-w", "%{http_code}",
                base.replacingOccurrences(of: "https://", with: "http://") + "/.well-known/security.txt",
            ])
        #expect(plain.output != "200", "no plaintext answer")
        let report = try await runTool(
            curl,
            [
                "-s", "--cacert", dir.path + "/root-ca.pem", "-H", "content-type: application/json", "-d",
                #"{"title":"Found a bug","description":"The details of the bug go here."}"#, base + "/api/v1/reports",
            ])
        let reportID = try #require(
            report.output.range(of: #"VR-[0-9A-Z]{10}"#, options: .regularExpression).map { String(report.output[$0]) },
            "\(report.output)")
        demo.signal(SIGINT)
        #expect(try await demo.waitForExit() == 0)
        #expect(demo.text.contains("Hearth stopped."))
        // The security team's CLI on the same data folder.
        let list = try await HearthProcess.run(["disclosure", "list", "--data", dir.path])
        #expect(
            list.status == 0 && list.output.contains(reportID) && list.output.contains("received"), "\(list.output)")
        let moved = try await HearthProcess.run([
            "disclosure", "move", reportID, "acknowledged", "--note", "Thanks, looking at it", "--data", dir.path,
        ])
        #expect(moved.status == 0 && moved.output.contains("is now acknowledged"), "\(moved.output)")
        let jump = try await HearthProcess.run(["disclosure", "move", reportID, "disclosed", "--data", dir.path])
        #expect(jump.status == 1 && jump.output.contains("can move to"), "\(jump.output)")
        let shown = try await HearthProcess.run(["disclosure", "show", reportID, "--data", dir.path])
        #expect(
            shown.output.contains("Thanks, looking at it") && shown.output.contains("Found a bug"), "\(shown.output)")
        // Each step has its own label, and the update's progress is shown while it runs.
        for step in 1...7 {
            #expect(out.components(separatedBy: "[\(step)/7]").count - 1 == 1, "step \(step) labelled once")
        }
        // Security monitoring: one alert and one quarantine, told to the owner in plain English.
        #expect(out.contains("alert (high): Your device tried to reach parts of the service"), "\(out)")
        #expect(out.contains(" quarantined since "), "\(out)")
        #expect(out.components(separatedBy: ": Updated\n").count - 1 == 2, "progress while the update runs")
        // A second demo on the same folder is refused and changes nothing (issue 13).
        let before = try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("bundles").path)
            .sorted()
        let again = try await HearthProcess.run([
            "demo", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0",
            "--data", dir.path,
        ])
        #expect(
            again.status != 0 && again.output.contains("already holds a demo")
                && again.output.contains("hearth serve --data"), "\(again.output)")
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("bundles").path).sorted()
                == before)
    }

    /// A half-configured or unsafe alert webhook stops the server at start with a clear message.
    @Test func anUnsafeOrHalfConfiguredWebhookIsRefusedAtStart() async throws {
        let dir = temporaryFolder()
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let secret = dir.appendingPathComponent("secret")
        try Data("a-webhook-secret-that-is-long-enough".utf8).write(to: secret)
        func serve(_ extra: [String]) async throws -> (status: Int32, output: String) {
            try await HearthProcess.run(
                [
                    "serve", "--data", dir.appendingPathComponent("data").path, "--listen", "127.0.0.1:0",
                    "--metrics-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0",
                ] + extra, timeout: 60)
        }
        for (mode, extra, message) in [
            (0o600, ["--alert-webhook", "https://alerts.example.com/h"], "needs a secret"),
            (0o600, ["--alert-webhook-secret-file", secret.path], "give the URL too"),
            (
                0o600, ["--alert-webhook", "http://alerts.example.com/h", "--alert-webhook-secret-file", secret.path],
                "loopback"
            ),
            (
                0o644, ["--alert-webhook", "https://alerts.example.com/h", "--alert-webhook-secret-file", secret.path],
                "mode 644"
            ),
        ] {
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: secret.path)
            let r = try await serve(extra)
            #expect(r.status == 1 && r.output.contains(message), "\(extra): \(r.output)")
            #expect(!r.output.contains("Hearth is serving"))
        }
    }

    @Test func helpExplainsItself() async throws {
        let r = try await HearthProcess.run(["--help"])
        #expect(r.status == 0)
        for word in ["serve", "demo", "factory", "disclosure", "audit", "no default password"] {
            #expect(r.output.contains(word))
        }
        let serve = try await HearthProcess.run(["serve", "--help"])
        #expect(serve.output.contains("--listen"))
        #expect(serve.output.contains("TLS 1.2 minimum"))
        let badListen = try await HearthProcess.run(["serve", "--listen", "nonsense"])
        #expect(badListen.status != 0)
        let scratch = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: scratch) }
        let exposed = try await HearthProcess.run([
            "serve", "--data", scratch.path, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
            "--mqtt-listen", "127.0.0.1:0",
            "--dev-listener", "0.0.0.0:1883",
        ])
        #expect(exposed.status == 1)
        #expect(exposed.output.contains("loopback only"), "\(exposed.output)")
        // A port in use is a clear message, not a stack of errno text.
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let first = try HearthProcess([
            "serve", "--data", dir.appendingPathComponent("a").path, "--listen", "127.0.0.1:0", "--metrics-listen",
            "127.0.0.1:0", "--mqtt-listen",
            "127.0.0.1:0",
        ])
        #expect(try await first.wait(for: "Clients verify it"))
        let port = try #require(first.baseURL?.split(separator: ":").last)
        let second = try await HearthProcess.run([
            "serve", "--data", dir.appendingPathComponent("b").path, "--listen", "127.0.0.1:\(port)",
            "--metrics-listen", "127.0.0.1:0", "--mqtt-listen",
            "127.0.0.1:0",
        ])
        #expect(second.status == 1)
        #expect(second.output.contains("cannot listen on 127.0.0.1:\(port)"), "\(second.output)")
        first.signal(SIGTERM)
        _ = try await first.waitForExit()
    }
}

/// A data folder `dir/data` with `model` defined through `hearth model add`.
func dataFolder(in dir: URL, with model: ProductModel, extra: [String] = []) async throws -> String {
    let data = dir.appendingPathComponent("data").path
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let modelFile = dir.appendingPathComponent("model.json")
    try model.json.serialized().write(to: modelFile)
    let added = try await HearthProcess.run(["model", "add", "--data", data, "--file", modelFile.path] + extra)
    #expect(added.status == 0, "\(added.output)")
    return data
}

extension ServerProcessTests {
    /// `hearth model add` and `hearth device revoke` go through the same service as the API
    /// (`Fleet`): a taken model id is refused with the API's message, a revoke says whether it
    /// changed anything, and each change is audited with the CLI as its actor.
    @Test func theCLIChangesTheFleetThroughTheSameServiceAsTheAPI() async throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let lock = try #require(ProductModel.demoModels().first { $0.id.rawValue == "lock-l1" })
        let data = try await dataFolder(in: dir, with: lock)
        let again = try await HearthProcess.run([
            "model", "add", "--data", data, "--file", dir.appendingPathComponent("model.json").path,
        ])
        #expect(again.status == 1)
        #expect(again.output.contains("a product model with id 'lock-l1' exists"), "\(again.output)")

        // Models are listed; a support period is extended, never shortened.
        let listed = try await HearthProcess.run(["model", "list", "--data", data])
        #expect(listed.status == 0 && listed.output.contains("lock-l1"), "\(listed.output)")
        let extended = try await HearthProcess.run(["model", "support", "--data", data, "lock-l1", "2044-12-31"])
        #expect(extended.status == 0, "\(extended.output)")
        #expect(try await HearthProcess.run(["model", "list", "--data", data]).output.contains("2044-12-31"))
        let shortened = try await HearthProcess.run(["model", "support", "--data", data, "lock-l1", "2030-01-01"])
        #expect(shortened.status != 0 && !shortened.output.isEmpty, "\(shortened.output)")
        #expect(try await HearthProcess.run(["model", "list", "--data", data]).output.contains("2044-12-31"))

        let (serial, _) = try await provisionedLock(data: data, in: dir, count: 1)
        let revoked = try await HearthProcess.run(["device", "revoke", "--data", data, serial])
        #expect(revoked.status == 0 && revoked.output.contains("Revoked \(serial)."), "\(revoked.output)")
        let twice = try await HearthProcess.run(["device", "revoke", "--data", data, serial])
        #expect(twice.status == 0 && twice.output.contains("\(serial) was already revoked."), "\(twice.output)")

        let audit = try await HearthProcess.run(["audit", "show", "--data", data])
        let records = audit.output.split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
        let fleet = records.filter { $0.count > 4 && ($0[2] == "model.created" || $0[2] == "device.revoked") }
        #expect(
            fleet.map { [$0[2], $0[3], $0[4]] } == [
                ["model.created", "cli", "lock-l1"], ["device.revoked", "cli", serial],
            ], "\(audit.output)")
        #expect(try await HearthProcess.run(["audit", "verify", "--data", data]).status == 0)
    }
}

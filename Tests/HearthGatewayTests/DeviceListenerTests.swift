import Foundation
import HearthCore
import HearthCrypto
import HearthFixtures
import HearthGateway
import HearthMonitor
import HearthSQLite
import HearthStorage
import HearthTestSupport
import HearthUpdate
import NIOSSL
import Synchronization
import Testing

/// The mutual-TLS device listener with clients no one here wrote (mosquitto_pub/sub, paho-mqtt).
@Suite struct DeviceListenerTests {
    func tools() throws -> (pub: String, sub: String) {
        let pub = try requiredTool("mosquitto_pub", package: "mosquitto-clients")
        let sub = try requiredTool("mosquitto_sub", package: "mosquitto-clients")
        return (pub, sub)
    }

    func stored(_ fixture: DeviceFixture, _ serial: DeviceSerial) async throws -> [Int64] {
        try await fixture.telemetry.readings(serial, from: .distantPast, to: .distantFuture, after: nil, limit: 1000)
            .map(\.reading.sequence)
    }

    @Test(.enabled(if: toolsPresentOrRequired("mosquitto_pub", "mosquitto_sub")), arguments: ["mqttv311", "mqttv5"])
    func validTelemetryIsStoredOnceEvenWhenSentAgain(_ version: String) async throws {
        let (pub, _) = try tools()
        let fixture = try await DeviceFixture()
        let device = fixture.thermostats[0]
        try await fixture.withGateway { _, port, _ in
            let values: [String: JSONValue] = ["temperature": 21.5, "heating": false, "target": 21]
            for seq in [1, 2, 1, 2, 3] {
                let r = try await ChildProcess.run(
                    pub,
                    fixture.tlsArguments(device, port: port) + [
                        "-V", version, "-q", "1", "-t", "devices/\(device.serial)/telemetry", "-m",
                        reading(seq, values),
                    ])
                #expect(r.status == 0, "\(r.output)")
            }
            #expect(try await stored(fixture, device.serial) == [1, 2, 3])
            let latest = try #require(try await fixture.telemetry.latest(device.serial))
            #expect(latest.reading.values == values)
        }
    }

    @Test func certificatesTheDeploymentDidNotIssueOrRevokedAreRefused() async throws {
        let (pub, _) = try tools()
        let fixture = try await DeviceFixture()
        let model = fixture.thermostats[0].model
        // Signed by another CA; signed by the device CA but never registered; registered then revoked.
        let (foreign, _) = try DeviceFixture.makeDevice(
            model: model, ca: try CertificateAuthority.create(commonName: "Elsewhere"), in: fixture.folder)
        let (unknown, _) = try DeviceFixture.makeDevice(model: model, ca: fixture.deviceCA, in: fixture.folder)
        // Same serial as a real device, a different key: a clone.
        let (clone, _) = try DeviceFixture.makeDevice(
            model: model, ca: fixture.deviceCA, in: fixture.folder, serial: fixture.thermostats[1].serial)
        let revoked = fixture.thermostats[0]
        #expect(
            try await fixture.store.revokeDevice(
                revoked.serial, at: Date(), audit: AuditEntry(.deviceRevoked, at: Date())))
        try await fixture.withGateway { gateway, port, _ in
            for device in [foreign, unknown, clone, revoked] {
                for version in ["mqttv311", "mqttv5"] {
                    let r = try await ChildProcess.run(
                        pub,
                        fixture.tlsArguments(device, port: port) + [
                            "-V", version, "-q", "1", "-t", "devices/\(device.serial)/telemetry", "-m",
                            reading(1, ["temperature": 20, "heating": true, "target": 20]),
                        ])
                    #expect(r.status != 0, "\(device.serial) \(version) was let in: \(r.output)")
                }
                #expect(try await stored(fixture, device.serial).isEmpty)
            }
            // The three that chained to the device CA got a CONNACK refusal and were counted.
            #expect(await gateway.counters.devicesRefused == 6)
            // No client certificate at all: the handshake fails.
            let none = try await ChildProcess.run(
                pub, ["-h", "127.0.0.1", "-p", "\(port)", "--cafile", fixture.rootCAPath, "-t", "x", "-m", "y"])
            #expect(none.status != 0)
            // The real, unrevoked device still gets in.
            let ok = fixture.thermostats[1]
            let r = try await ChildProcess.run(
                pub,
                fixture.tlsArguments(ok, port: port) + [
                    "-V", "mqttv5", "-q", "1", "-t", "devices/\(ok.serial)/telemetry", "-m",
                    reading(1, ["temperature": 20, "heating": true, "target": 20]),
                ])
            #expect(r.status == 0, "\(r.output)")
        }
    }

    @Test func identityComesFromTheCertificateNotTheClientIDOrUsername() async throws {
        let (pub, _) = try tools()
        let fixture = try await DeviceFixture()
        let (a, b) = (fixture.thermostats[0], fixture.thermostats[1])
        try await fixture.withGateway { _, port, _ in
            // A claims to be B by client id and writes to B's topic: refused (0x87), nothing stored.
            let r = try await ChildProcess.run(
                pub,
                fixture.tlsArguments(a, port: port) + [
                    "-V", "mqttv5", "-i", b.serial.rawValue, "-q", "1", "-t", "devices/\(b.serial)/telemetry", "-m",
                    reading(1, ["temperature": 20, "heating": true, "target": 20]),
                ])
            #expect(r.output.lowercased().contains("not authorized"), "\(r.output)")
            // A username and password are refused outright: the certificate is the credential.
            let u = try await ChildProcess.run(
                pub,
                fixture.tlsArguments(a, port: port) + [
                    "-V", "mqttv5", "-u", "admin", "-P", "admin", "-t", "devices/\(a.serial)/events", "-m", "x",
                ])
            #expect(u.status != 0 && u.output.contains("Bad User Name or Password"), "0x86: \(u.output)")
            #expect(try await stored(fixture, b.serial).isEmpty)
        }
    }

    @Test func oneDeviceCanNeitherSeeNorAffectAnother() async throws {
        let (pub, sub) = try tools()
        let fixture = try await DeviceFixture()
        let (a, b) = (fixture.thermostats[0], fixture.thermostats[1])
        try await fixture.withGateway { gateway, port, _ in
            // Every subscription that could reach B's (or anyone's) topics is refused.
            for filter in [
                "#", "+/#", "devices/#", "devices/+/commands/#", "devices/+/telemetry",
                "devices/\(b.serial)/commands/#", "$share/g/devices/\(b.serial)/commands/#", "$share/g/#", "$SYS/#",
                "+/\(b.serial)/+",
            ] {
                let r = try await ChildProcess.run(
                    sub, fixture.tlsArguments(a, port: port) + ["-V", "mqttv5", "-t", filter, "-E"])
                #expect(r.output.lowercased().contains("denied"), "\(filter): \(r.output)")
            }
            // Publishing into B's namespace (every topic of it) is refused.
            for topic in [
                "devices/\(b.serial)/telemetry", "devices/\(b.serial)/events", "devices/\(b.serial)/commands/setTarget",
                "devices/\(b.serial)/commands/setTarget/result", "devices/\(a.serial)/commands/setTarget",
            ] {
                let r = try await ChildProcess.run(
                    pub, fixture.tlsArguments(a, port: port) + ["-V", "mqttv5", "-q", "1", "-t", topic, "-m", "{}"])
                #expect(r.output.lowercased().contains("not authorized"), "\(topic): \(r.output)")
            }
            // Every attempt was refused and counted for monitoring.
            #expect(await gateway.counters.accessRefused == 15)
            // A command for B reaches B, online, and never A, though A listens on its own commands:
            // a command then sent to A arrives at A after B's would have, and nothing came before it.
            func listening(_ device: DeviceFixture.Device) async throws -> ChildProcess {
                let listener = try ChildProcess.lineBuffered(
                    sub,
                    fixture.tlsArguments(device, port: port) + [
                        "-d", "-V", "mqttv5", "-q", "1", "-t", "devices/\(device.serial)/commands/#", "-F", "%t",
                    ])
                #expect(try await listener.waitForSubscription(), "\(listener.text)")
                return listener
            }
            let (onA, onB) = (try await listening(a), try await listening(b))
            defer { for listener in [onA, onB] { listener.signal(SIGKILL) } }
            _ = await gateway.send(command: "setTarget", parameters: ["target": 20], to: b.serial, timeout: .seconds(1))
            #expect(
                try await onB.wait(for: "devices/\(b.serial)/commands/setTarget", timeout: 10), "B got it: \(onB.text)")
            _ = await gateway.send(command: "setTarget", parameters: ["target": 21], to: a.serial, timeout: .seconds(1))
            #expect(try await onA.wait(for: "devices/\(a.serial)/commands/setTarget", timeout: 10), "\(onA.text)")
            #expect(!onA.messageLines.contains { $0.contains(b.serial.rawValue) }, "\(onA.messageLines)")
        }
    }

    @Test func topicAliasesCannotReachAnotherDevice() async throws {
        let python = try requiredPython(module: "paho.mqtt", package: "paho-mqtt")
        let fixture = try await DeviceFixture()
        let (a, b) = (fixture.thermostats[0], fixture.thermostats[1])
        try await fixture.withGateway { gateway, port, _ in
            let values = #"{"temperature": 20, "heating": true, "target": 20}"#
            let r = try await ChildProcess.run(
                python,
                [pahoScript, "aliases"] + fixture.pahoArguments(a, port: port) + [
                    "--topic", "devices/\(a.serial)/telemetry", "--other", "devices/\(b.serial)/telemetry", "--payload",
                    values,
                ])
            let codes = jsonLines(r.output).compactMap { line -> Int? in
                if case .number(let d) = line["rc"] { Int(d) } else { nil }
            }
            #expect(codes == [0, 0, 0x87, 0x87, 0x87, 0x87], "\(r.output)")
            #expect(try await stored(fixture, a.serial) == [1, 2])
            #expect(try await stored(fixture, b.serial).isEmpty)
        }
    }

    @Test func invalidTelemetryIsRefusedWithAReasonCodeCountedAndNeverStored() async throws {
        let python = try requiredPython(module: "paho.mqtt", package: "paho-mqtt")
        let fixture = try await DeviceFixture()
        let device = fixture.thermostats[0]
        let good: [String: JSONValue] = ["temperature": 21.5, "heating": false, "target": 21]
        var wrongType = good
        wrongType["temperature"] = "warm"
        var tooHot = good
        tooHot["temperature"] = 86
        var missing = good
        missing["temperature"] = nil
        var unknown = good
        unknown["colour"] = "red"
        let payloads: [(String, TelemetryRejection?)] = [
            ("not json at all", .malformed),
            ("[1,2,3]", .malformed),
            (#"{"seq": 1, "values": {"temperature": 21.5,}}"#, .malformed),
            (reading(1, wrongType), .wrongType),
            (reading(2, tooHot), .outOfRange),
            (reading(3, missing), .missingField),
            (reading(4, unknown), .unknownField),
            (#"{"values": {"temperature": 1, "heating": true, "target": 20}}"#, .missingField),
            (#"{"seq": -1, "values": {"temperature": 1, "heating": true, "target": 20}}"#, .outOfRange),
            (#"{"seq": 1.5, "values": {"temperature": 1, "heating": true, "target": 20}}"#, .wrongType),
            (
                #"{"seq": 1, "evil": true, "values": {"temperature": 1, "heating": true, "target": 20}}"#,
                .unknownField
            ),
            (String(repeating: " ", count: 5000) + reading(5, good), .oversize),
            (reading(6, good), nil),
        ]
        try await fixture.withGateway { _, port, _ in
            let r = try await ChildProcess.run(
                python,
                [DeviceFixture.script, "publish"] + fixture.pahoArguments(device, port: port) + [
                    "--topic", "devices/\(device.serial)/telemetry", "--qos", "1",
                ] + payloads.flatMap { ["--payload", $0.0] })
            let lines = jsonLines(r.output)
            let codes = lines.compactMap { line -> Int? in if case .number(let d) = line["rc"] { Int(d) } else { nil } }
            #expect(codes == payloads.map { $0.1 == nil ? 0 : 0x99 }, "\(r.output)")
            #expect(try await stored(fixture, device.serial) == [6])
            // The refusal counts commit with the next batch: wait for them (at most 10 s).
            var expected: [TelemetryRejection: Int] = [:]
            for case (_, let kind?) in payloads { expected[kind, default: 0] += 1 }
            var counted: [TelemetryRejection: Int] = [:]
            for _ in 0..<200 where counted != expected {
                let counts = try await fixture.telemetry.refusals(device.serial)
                counted = Dictionary(uniqueKeysWithValues: counts.map { ($0.kind, $0.count) })
                if counted != expected { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(counted == expected)
        }
    }

    /// EN 303 645 6-3, enforced at the gateway: a field whose purpose the owner has not agreed to is
    /// refused with 0x87 and a reason string, and the reading is not stored; agreeing lets it in, and
    /// withdrawing shuts it out again, on the same connection's next reading.
    @Test func fieldsTheOwnerRefusedAreRefusedWithAReasonAndNeverStored() async throws {
        let python = try requiredPython(module: "paho.mqtt", package: "paho-mqtt")
        let fixture = try await DeviceFixture()
        let device = fixture.thermostats[0]
        let with: [String: JSONValue] = ["temperature": 21.5, "humidity": 40, "heating": false, "target": 21]
        var without = with
        without["humidity"] = nil
        try await fixture.withGateway { gateway, port, _ in
            func publish(_ payloads: [String]) async throws -> [[String: JSONValue]] {
                let r = try await ChildProcess.run(
                    python,
                    [DeviceFixture.script, "publish"] + fixture.pahoArguments(device, port: port) + [
                        "--topic", "devices/\(device.serial)/telemetry", "--qos", "1", "--wait-each",
                    ] + payloads.flatMap { ["--payload", $0] })
                return jsonLines(r.output).filter { $0["index"] != nil }
            }
            var acks = try await publish([reading(1, with), reading(2, without)])
            #expect(acks.map { $0["rc"] } == [JSONValue.number(0x87), .number(0)], "\(acks)")
            let reason = acks.first?["reason"]
            #expect(reason == "'humidity' is not collected: the owner has not agreed to its purpose 'comfort'")
            #expect(try await stored(fixture, device.serial) == [2])

            await gateway.policyChanged(device.serial, DevicePolicy(withheld: [:]))
            acks = try await publish([reading(3, with)])
            #expect(acks.map { $0["rc"] } == [JSONValue.number(0)], "\(acks)")
            #expect(try await stored(fixture, device.serial) == [2, 3])

            await gateway.policyChanged(device.serial, DevicePolicy(withheld: ["humidity": "comfort"]))
            acks = try await publish([reading(4, with)])
            #expect(acks.map { $0["rc"] } == [JSONValue.number(0x87)], "\(acks)")
            #expect(try await stored(fixture, device.serial) == [2, 3])
            let latest = try await fixture.telemetry.latest(device.serial)
            #expect(latest?.reading.values["humidity"] == 40, "the reading stored while it was allowed")
        }
    }

    @Test func invalidUTF8TelemetryIsRefused() async throws {
        let (pub, _) = try tools()
        let fixture = try await DeviceFixture()
        let device = fixture.thermostats[0]
        let file = fixture.folder.appendingPathComponent("bad.bin")
        try Data(
            Array(#"{"seq": 1, "values": {"temperature": 1, "heating": true, "target": "#.utf8) + [
                0xC3, 0x28, 0x22, 0x7D, 0x7D,
            ]
        ).write(to: file)
        try await fixture.withGateway { _, port, _ in
            let r = try await ChildProcess.run(
                pub,
                fixture.tlsArguments(device, port: port) + [
                    "-V", "mqttv5", "-q", "1", "-t", "devices/\(device.serial)/telemetry", "-f", file.path, "-d",
                ])
            #expect(r.output.contains("153") || r.output.lowercased().contains("payload format invalid"), "\(r.output)")
            #expect(try await stored(fixture, device.serial).isEmpty)
        }
    }

    @Test(
        .enabled(if: toolsPresentOrRequired("mosquitto_sub") && pythonPresentOrRequired("paho.mqtt")),
        arguments: [5, 3])
    func commandsReachTheDeviceAndItsAnswerComesBack(_ version: Int) async throws {
        let python = try requiredPython(module: "paho.mqtt", package: "paho-mqtt")
        let (_, sub) = try tools()
        let fixture = try await DeviceFixture()
        let (thermostat, lock) = (fixture.thermostats[0], fixture.locks[0])
        try await fixture.withGateway { gateway, port, _ in
            // Offline: a clear status at once.
            #expect(
                await gateway.send(
                    command: "setTarget", parameters: ["target": 21], to: thermostat.serial, timeout: .seconds(5))
                    == .offline)
            let device = try ChildProcess(
                python,
                [DeviceFixture.script, "answer"] + fixture.pahoArguments(thermostat, port: port) + [
                    "--version", "\(version)", "--serial", thermostat.serial.rawValue, "--count", "1",
                ])
            #expect(try await device.wait(for: "\"ready\"", timeout: 20), "\(device.text)")
            let outcome = await gateway.send(
                command: "setTarget", parameters: ["target": 21.5], to: thermostat.serial, timeout: .seconds(10))
            #expect(outcome == .answered(status: "ok", detail: "done by paho"), "\(device.text)")
            _ = try await device.waitForExit(timeout: 10)
            let received = jsonLines(device.text).first { $0["command"] != nil }
            #expect(
                received?["command"] == "setTarget" && received?["parameters"] == ["target": 21.5]
                    && received?["qos"] == 1)
            // Connected and subscribed, but never answers: a timeout.
            // mosquitto_sub as a device (3.1.1 and 5.0): it receives the command but never answers.
            for flag in ["mqttv311", "mqttv5"] {
                let silent = try ChildProcess.lineBuffered(
                    sub,
                    fixture.tlsArguments(lock, port: port) + [
                        "-d", "-V", flag, "-q", "1", "-t", "devices/\(lock.serial)/commands/#", "-C", "1", "-F",
                        "%t|%q|%p",
                    ])
                #expect(try await silent.waitForSubscription(), "\(silent.text)")
                #expect(
                    await gateway.send(command: "lock", parameters: [:], to: lock.serial, timeout: .seconds(1))
                        == .timedOut)
                _ = try await silent.waitForExit(timeout: 10)
                #expect(
                    silent.messageLines.first?.hasPrefix("devices/\(lock.serial)/commands/lock|1|{\"id\":") == true,
                    "\(silent.text)")
            }
        }
    }

    @Test func overLimitClientsGetTheReasonCodeAndOthersAreUnaffected() async throws {
        let python = try requiredPython(module: "paho.mqtt", package: "paho-mqtt")
        let (pub, sub) = try tools()
        let fixture = try await DeviceFixture()
        let device = fixture.thermostats[0]
        // Publish rate: 5 per second per connection.
        try await fixture.withGateway({ $0.limits.publishesPerSecond = 5 }) { _, port, _ in
            let payloads = (1...20).map {
                reading($0, ["temperature": 20, "heating": true, "target": 20])
            }
            let r = try await ChildProcess.run(
                python,
                [DeviceFixture.script, "publish"] + fixture.pahoArguments(device, port: port) + [
                    "--topic", "devices/\(device.serial)/telemetry",
                ] + payloads.flatMap { ["--payload", $0] })
            let codes = jsonLines(r.output).compactMap { line -> Int? in
                if case .number(let d) = line["rc"] { Int(d) } else { nil }
            }
            #expect(codes.count == 20 && codes.prefix(5).allSatisfy { $0 == 0 } && codes.contains(0x97), "\(r.output)")
            #expect(try await stored(fixture, device.serial).count == codes.filter { $0 == 0 }.count)
        }
        // Connections in total: 1. The second gets 0x89 (server busy); the first keeps working.
        try await fixture.withGateway({ $0.maximumConnections = 1 }) { _, _, devPort in
            let holder = try ChildProcess.lineBuffered(
                sub, ["-d", "-h", "127.0.0.1", "-p", "\(devPort)", "-V", "mqttv5", "-t", "hold/#", "-C", "1"])
            #expect(try await holder.waitForSubscription(), "\(holder.text)")
            let busy = try await ChildProcess.run(
                pub, ["-h", "127.0.0.1", "-p", "\(devPort)", "-V", "mqttv5", "-t", "hold/x", "-m", "1"])
            #expect(busy.status != 0 && busy.output.lowercased().contains("busy"), "\(busy.output)")
            holder.signal(SIGTERM)
        }
        // Connects per second: a burst of 1, then one every 1000 s.
        try await fixture.withGateway({
            $0.connectsPerSecond = 0.001
            $0.connectBurst = 1
        }) { _, _, devPort in
            #expect(
                try await ChildProcess.run(
                    pub, ["-h", "127.0.0.1", "-p", "\(devPort)", "-V", "mqttv5", "-t", "a", "-m", "1"]
                ).status == 0)
            let rate = try await ChildProcess.run(
                pub, ["-h", "127.0.0.1", "-p", "\(devPort)", "-V", "mqttv5", "-t", "a", "-m", "1"])
            #expect(rate.status != 0 && rate.output.lowercased().contains("rate"), "\(rate.output)")
        }
    }

    @Test(.enabled(if: pythonPresentOrRequired("paho.mqtt")), arguments: [3, 5])
    func pahoConformanceOnTheDevelopmentListener(_ version: Int) async throws {
        let python = try requiredPython(module: "paho.mqtt", package: "paho-mqtt")
        let fixture = try await DeviceFixture(devices: 0)
        try await fixture.withGateway { _, _, devPort in
            let r = try await ChildProcess.run(
                python, [DeviceFixture.script, "conformance", "--port", "\(devPort)", "--version", "\(version)"],
                timeout: 120)
            let results = try #require(jsonLines(r.output).last, "\(r.output)")
            for check in ["qos", "wildcards", "retained", "will", "session_resume", "request_response"]
                + (version == 5 ? ["will_delay", "message_expiry"] : [])
            {
                #expect(results[check] == true, "\(check) failed (MQTT \(version)): \(r.output)")
            }
        }
    }

    /// The redesign's broker rules with paho-mqtt as the client, on the development listener with
    /// an ACL (as Paho's interoperability suite expects `test/nosubscribe` refused).
    @Test(.enabled(if: pythonPresentOrRequired("paho.mqtt")), arguments: [3, 5])
    func pahoBrokerRulesOnTheDevelopmentListener(_ version: Int) async throws {
        let python = try requiredPython(module: "paho.mqtt", package: "paho-mqtt")
        let fixture = try await DeviceFixture(devices: 0)
        try await fixture.withGateway({ $0.developmentDenied = ["test/nosubscribe"] }) { _, _, devPort in
            let r = try await ChildProcess.run(
                python, [DeviceFixture.script, "rules", "--port", "\(devPort)", "--version", "\(version)"],
                timeout: 120)
            let results = try #require(jsonLines(r.output).last, "\(r.output)")
            var checks = ["client_id_with_space", "denied_subscription", "keepalive_will", "overlapping"]
            if version == 5 {
                checks += [
                    "subscription_identifiers", "subscribe_options", "shared", "maximum_packet_size", "receive_maximum",
                    "disconnect_session_expiry",
                ]
            }
            for check in checks {
                #expect(results[check] == true, "\(check) failed (MQTT \(version)): \(r.output)")
            }
        }
    }

    /// The device listener holds to ``TLSPolicy`` with a client no one here wrote (openssl
    /// s_client, with a valid device certificate): TLS 1.1, a CBC suite and a key exchange group
    /// outside the policy are refused; TLS 1.2 and 1.3 within it are served.
    @Test(.enabled(if: toolsPresentOrRequired("openssl"))) func theDeviceListenerHoldsToTheTLSPolicy() async throws {
        let openssl = try requiredTool("openssl", package: "openssl")
        let fixture = try await DeviceFixture()
        let device = fixture.thermostats[0]
        try await fixture.withGateway { _, port, _ in
            func handshake(_ options: [String]) async throws -> Bool {
                let command =
                    ([
                        openssl, "s_client", "-connect", "127.0.0.1:\(port)", "-cert", device.certPath, "-key",
                        device.keyPath,
                        "-CAfile", fixture.rootCAPath, "-verify_return_error",
                    ] + options).map { "'\($0)'" }.joined(separator: " ")
                let r = try await ChildProcess.run("/bin/sh", ["-c", command + " < /dev/null"], timeout: 60)
                return r.status == 0 && r.output.contains("Verify return code: 0")
            }
            let cases: [(options: [String], served: Bool, what: String)] = [
                (["-tls1_3"], true, "TLS 1.3"),
                (["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"], true, "TLS 1.2 within the policy"),
                (["-tls1_1", "-cipher", "ALL:@SECLEVEL=0"], false, "TLS 1.1"),
                (["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"], false, "a CBC suite"),
                (
                    ["-tls1_3", "-groups", "P-521"], false,
                    "P-521 key exchange (outside the policy and BoringSSL's defaults)"
                ),
            ]
            for c in cases {
                let served = try await handshake(c.options)
                #expect(served == c.served, "\(c.what): served \(served)")
            }
            // Without a client certificate (TLS 1.2, where the refusal is in the handshake itself).
            let anonymous = try await ChildProcess.run(
                "/bin/sh",
                [
                    "-c",
                    "'\(openssl)' s_client -connect 127.0.0.1:\(port) -CAfile '\(fixture.rootCAPath)' -tls1_2 < /dev/null",
                ], timeout: 60)
            #expect(
                anonymous.status != 0 && anonymous.output.contains("alert handshake failure"),
                "\(anonymous.output.suffix(2_000))")
            // No session is resumed: every connect proves the device key (ARCHITECTURE 96).
            for version in ["-tls1_2", "-tls1_3"] {
                let command =
                    "'\(openssl)' s_client -connect 127.0.0.1:\(port) -cert '\(device.certPath)' -key '\(device.keyPath)' "
                    + "-CAfile '\(fixture.rootCAPath)' \(version) -reconnect < /dev/null"
                let r = try await ChildProcess.run("/bin/sh", ["-c", command], timeout: 60)
                let lines = r.output.split(separator: "\n")
                #expect(lines.filter { $0.hasPrefix("New,") }.count >= 5, "\(version): \(r.output.suffix(2_000))")
                #expect(!lines.contains { $0.hasPrefix("Reused,") }, "\(version): a session was resumed")
            }
        }
    }

    /// The device listener serves the hybrid post-quantum key exchange X25519MLKEM768 over TLS 1.3,
    /// and classical peers (X25519, P-256; TLS 1.2) still connect; a group outside the policy is
    /// refused (``TLSProbe/keyExchangeCases(_:)``, a client with a valid device certificate).
    @Test func theDeviceListenerServesTheHybridPostQuantumKeyExchange() async throws {
        let fixture = try await DeviceFixture()
        let device = fixture.thermostats[0]
        let client = TLSPolicy.client(
            trustRoots: try NIOSSLCertificate.fromPEMFile(fixture.rootCAPath),
            certificateChain: try NIOSSLCertificate.fromPEMFile(device.certPath),
            privateKey: try NIOSSLPrivateKey(file: device.keyPath, format: .pem))
        try await fixture.withGateway { _, port, _ in
            for c in TLSProbe.keyExchangeCases(client) {
                let error = await TLSProbe.handshake(port: port, c.configuration)
                #expect((error == nil) == c.served, "device port, \(c.what): \(String(describing: error))")
            }
        }
    }

    @Test func persistentSessionsAndRetainedMessagesSurviveARestart() async throws {
        let (pub, sub) = try tools()
        let fixture = try await DeviceFixture(devices: 0)
        let path = fixture.folder.appendingPathComponent("broker.sqlite").path
        let id = "resume-\(UUID().uuidString.prefix(8))"
        try await fixture.withGateway(brokerState: try SQLiteBrokerStateStore(path: path)) { _, _, port in
            let base = ["-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5"]
            // A persistent session (expiry 300 s) subscribes, then goes away.
            // -E: leave as soon as the subscription is acknowledged.
            let first = try await ChildProcess.run(
                sub, base + ["-i", id, "-c", "-x", "300", "-q", "1", "-t", "inbox/#", "-E"], timeout: 20)
            #expect(first.status == 0, "\(first.output)")
            // While it is away: a QoS 1 message for it, and a retained message.
            #expect(
                try await ChildProcess.run(pub, base + ["-q", "1", "-t", "inbox/1", "-m", "kept for you"], timeout: 20)
                    .status == 0)
            #expect(
                try await ChildProcess.run(pub, base + ["-q", "1", "-r", "-t", "status/hub", "-m", "online"]).status
                    == 0)
        }
        // A new gateway on the same file, opened afresh (as after a restart): only what was written
        // to disk comes back.
        try await fixture.withGateway(brokerState: try SQLiteBrokerStateStore(path: path)) { _, _, port in
            let base = ["-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5"]
            let resumed = try await ChildProcess.run(
                sub,
                base + ["-i", id, "-c", "-x", "300", "-q", "1", "-t", "inbox/#", "-C", "1", "-W", "10", "-F", "%t|%p"])
            #expect(
                resumed.output.trimmingCharacters(in: .whitespacesAndNewlines) == "inbox/1|kept for you",
                "\(resumed.output)")
            let retained = try await ChildProcess.run(
                sub, base + ["-t", "status/#", "-C", "1", "-W", "10", "-F", "%t|%p|%r"])
            #expect(
                retained.output.trimmingCharacters(in: .whitespacesAndNewlines) == "status/hub|online|1",
                "\(retained.output)")
        }
    }

    /// Guideline 10 with a client no one here wrote: a device that reaches into another device's
    /// topics and `$SYS` is flagged once (high severity, the topic in the evidence), and one that
    /// sends invalid readings over and over is flagged once too; a device publishing valid
    /// readings is not.
    @Test func devicesThatProbeOrSendGarbageAreFlaggedOnce() async throws {
        let (pub, _) = try tools()
        let fixture = try await DeviceFixture()
        let (prober, other) = (fixture.thermostats[0], fixture.thermostats[1])
        let garbler = fixture.locks[0]
        let seen = CollectedDetections()
        try await fixture.withGateway { gateway, port, _ in
            gateway.attach(alerts: seen)
            func send(_ device: DeviceFixture.Device, _ topic: String, _ message: String, times: Int = 1) async throws {
                _ = try await ChildProcess.run(
                    pub,
                    fixture.tlsArguments(device, port: port) + [
                        "-V", "mqttv5", "-q", "1", "-t", topic, "-m", message, "--repeat", "\(times)",
                    ])
            }
            try await send(
                other, "devices/\(other.serial)/telemetry",
                reading(1, ["temperature": 20, "heating": false, "target": 21]), times: 5)
            for topic in [
                "devices/\(other.serial)/telemetry", "devices/\(other.serial)/commands/unlock/result", "$SYS/x",
            ] {
                try await send(prober, topic, "{}")
            }
            try await send(
                garbler, "devices/\(garbler.serial)/telemetry", #"{"seq":1,"values":{"nonsense":1}}"#, times: 12)
            let deadline = Date().addingTimeInterval(10)
            while seen.all.count < 2, Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
            try await Task.sleep(for: .milliseconds(300))  // anything more would be a duplicate
            let found = seen.all.sorted { $0.1.kind.rawValue > $1.1.kind.rawValue }
            #expect(found.map { $0.1.kind } == [.probe, .garbage], "\(found)")
            #expect(found.first?.0 == prober.serial && found.first?.1.severity == .high)
            #expect(found.first?.1.evidence["lastTopic"] == "$SYS/x")
            #expect(found.last?.0 == garbler.serial)
            #expect(gateway.counters.detections == 2)
        }
    }

    /// Guideline 10: a quarantined device (paho, a client no one here wrote) keeps its connection
    /// and its way out — update reports are taken — while its readings are refused with 0x87 and
    /// not stored; released, its readings are taken again.
    @Test func aQuarantinedDeviceMayOnlyUpdateUntilReleased() async throws {
        let python = try requiredPython(module: "paho.mqtt", package: "paho-mqtt")
        let fixture = try await DeviceFixture()
        let device = fixture.thermostats[0]
        let updates = RecordingUpdates()
        try await fixture.withGateway { gateway, port, _ in
            gateway.attach(updates: updates)
            func codes(_ topic: String, _ payloads: [String]) async throws -> [Int] {
                let r = try await ChildProcess.run(
                    python,
                    [DeviceFixture.script, "publish"] + fixture.pahoArguments(device, port: port) + [
                        "--topic", topic, "--qos", "1",
                    ] + payloads.flatMap { ["--payload", $0] })
                return jsonLines(r.output).compactMap { line -> Int? in
                    if case .number(let d) = line["rc"] { Int(d) } else { nil }
                }
            }
            let telemetry = "devices/\(device.serial)/telemetry"
            let values: [String: JSONValue] = ["temperature": 20, "heating": false, "target": 21]
            let before = try await codes(telemetry, [reading(1, values)])
            #expect(before == [0])
            await gateway.quarantineChanged(device.serial, reason: "probing other devices")
            let held = try await codes(telemetry, [reading(2, values), reading(3, values)])
            #expect(held == [0x87, 0x87])
            let report = try await codes("devices/\(device.serial)/update", [#"{"phase":"idle","version":"1.0.0"}"#])
            #expect(report == [0], "its update reports are still taken")
            #expect(updates.received.withLock { $0.count } == 1)
            #expect(try await stored(fixture, device.serial) == [1], "nothing stored while quarantined")
            #expect(gateway.counters.quarantineRefused >= 2)
            await gateway.quarantineChanged(device.serial, reason: nil)
            let after = try await codes(telemetry, [reading(4, values)])
            #expect(after == [0])
            #expect(try await stored(fixture, device.serial) == [1, 4])
        }
    }

    /// What the operator's console lists: each device connected now, since when, newest first, the
    /// count however short the list, and nothing once they have gone.
    @Test func theGatewayListsItsLiveDeviceConnections() async throws {
        let (_, sub) = try tools()
        let fixture = try await DeviceFixture()
        let (thermostat, lock) = (fixture.thermostats[0], fixture.locks[0])
        try await fixture.withGateway { gateway, port, _ in
            #expect(await gateway.connections(limit: 10) == LiveConnections())
            let before = Date().addingTimeInterval(-1)
            var subscribers: [ChildProcess] = []
            defer { for s in subscribers { s.signal(SIGKILL) } }
            for device in [thermostat, lock] {
                let s = try ChildProcess.lineBuffered(
                    sub,
                    fixture.tlsArguments(device, port: port) + [
                        "-d", "-V", "mqttv5", "-q", "1", "-t", "devices/\(device.serial)/commands/#",
                    ])
                subscribers.append(s)
                #expect(try await s.waitForSubscription(), "\(s.text)")
            }
            let live = await gateway.connections(limit: 10)
            #expect(live.newest.map(\.serial) == [lock.serial, thermostat.serial], "newest first")
            #expect(live.newest.allSatisfy { $0.node == nil && $0.since >= before && $0.since <= Date() })
            #expect(live.perNode == [nil: 2])
            let short = await gateway.connections(limit: 1)
            #expect(short.newest.map(\.serial) == [lock.serial] && short.perNode == [nil: 2], "the count is all")
            #expect(await gateway.connections(limit: -5).newest.isEmpty, "a negative limit lists none")
            for s in subscribers { s.signal(SIGKILL) }
            var left = live
            for _ in 0..<200 where !left.perNode.isEmpty {
                try await Task.sleep(for: .milliseconds(50))
                left = await gateway.connections(limit: 10)
            }
            #expect(left == LiveConnections(), "gone once they leave")
        }
    }
}

/// The update channel's edge for gateway tests: the real report parser, a recorded list.
final class RecordingUpdates: DeviceUpdateChannel {
    let received = Mutex<[(DeviceSerial, UpdateReport)]>([])
    func received(report payload: [UInt8], from serial: DeviceSerial, model: ProductModelID) async throws -> [UInt8] {
        let report = try UpdateReport(payload: payload)
        received.withLock { $0.append((serial, report)) }
        return UpdateOffer(supportEnds: CalendarDate("2031-12-31")!, supportEnded: false, target: nil).payload
    }
}

@Suite struct UpdateTopicTests {
    @Test func malformedUpdateReportsAreRefusedWithAReasonCodeAndNeverReachTheService() async throws {
        let python = try requiredPython(module: "paho.mqtt", package: "paho-mqtt")
        let fixture = try await DeviceFixture()
        let device = fixture.thermostats[0]
        let payloads: [(String, Bool)] = [
            ("not json", false), ("[]", false), (#"{"phase":"idle"}"#, false),
            (#"{"phase":"hacked","version":"1.0.0"}"#, false),
            (#"{"phase":"idle","version":"1.0.0","evil":1}"#, false),
            (#"{"phase":"failed","version":"1.0.0","reason":"\#(String(repeating: "r", count: 400))"}"#, false),
            (String(repeating: " ", count: 2000) + #"{"phase":"idle","version":"1.0.0"}"#, false),
            (#"{"phase":"downloading","version":"1.0.0","target":"thermostat-t1-1.1.0.img"}"#, true),
        ]
        let updates = RecordingUpdates()
        try await fixture.withGateway { gateway, port, _ in
            gateway.attach(updates: updates)
            let r = try await ChildProcess.run(
                python,
                [DeviceFixture.script, "publish"] + fixture.pahoArguments(device, port: port) + [
                    "--topic", "devices/\(device.serial)/update", "--qos", "1",
                ] + payloads.flatMap { ["--payload", $0.0] })
            let codes = jsonLines(r.output).compactMap { line -> Int? in
                if case .number(let d) = line["rc"] { Int(d) } else { nil }
            }
            #expect(codes == payloads.map { $0.1 ? 0 : 0x99 }, "\(r.output)")
            let got = updates.received.withLock { $0 }
            #expect(got.count == 1 && got.first?.0 == device.serial && got.first?.1.phase == .downloading)
            // Another device's report topic is refused (not authorised), and reaches nothing.
            let other = fixture.thermostats[1]
            let foreign = try await ChildProcess.run(
                python,
                [DeviceFixture.script, "publish"] + fixture.pahoArguments(device, port: port) + [
                    "--topic", "devices/\(other.serial)/update", "--qos", "1", "--payload", payloads.last!.0,
                ])
            #expect(
                jsonLines(foreign.output).compactMap { line -> Int? in
                    if case .number(let d) = line["rc"] { Int(d) } else { nil }
                } == [0x87], "\(foreign.output)")
            #expect(updates.received.withLock { $0.count } == 1)
        }
    }

}

/// A stand-in for the server's alert service: keeps what it is given.
final class CollectedDetections: DeviceAlertChannel {
    private let items = Mutex<[(DeviceSerial, Detection)]>([])
    var all: [(DeviceSerial, Detection)] { items.withLock { $0 } }
    func detected(_ detection: Detection, device serial: DeviceSerial) async {
        items.withLock { $0.append((serial, detection)) }
    }
}

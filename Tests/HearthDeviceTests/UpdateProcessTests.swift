import Foundation
import HearthCore
import HearthFixtures
import HearthTestSupport
import Testing

/// A real deployment for update tests, driven through the command lines a maker and an operator
/// use: `hearth release` signs 1.0.0 and 1.1.0 of the thermostat in a maker's workspace, `hearth
/// updates import` brings them to the server, `hearth factory provision` flashes 1.0.0 into the
/// units, and `hearth serve` runs (HTTPS with the TUF repository, and the MQTT gateway).
final class UpdateDeployment: @unchecked Sendable {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("hearth-updp-\(UUID().uuidString)")
    var data: String { dir.appendingPathComponent("data").path }
    var workspace: String { dir.appendingPathComponent("ws").path }
    var bundles: URL { dir.appendingPathComponent("bundles") }
    var server: ChildProcess?
    var httpsPort = 0, mqttPort = 0
    let current = "thermostat-t1-1.0.0.img", next = "thermostat-t1-1.1.0.img"

    @discardableResult
    func hearth(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) async throws -> String {
        let r = try await ChildProcess.run(builtProduct("hearth").path, arguments)
        #expect(
            r.status == 0, "hearth \(arguments.prefix(3).joined(separator: " ")): \(r.output)",
            sourceLocation: sourceLocation)
        return r.output
    }

    func image(_ version: String, size: Int) throws -> String {
        let path = dir.appendingPathComponent("fw-\(version).bin").path
        var bytes = Array("HEARTH-FW thermostat-t1 \(version)\n".utf8)
        var rng = SplitMix64(state: UInt64(size) &+ UInt64(version.utf8.count))
        while bytes.count < size { bytes.append(UInt8(truncatingIfNeeded: rng.next())) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    func publish(_ version: String, from: String, size: Int) async throws {
        try await hearth([
            "release", "publish", "--workspace", workspace, "--image", try image(version, size: size), "--model",
            "thermostat-t1", "--version", version,
            "--min-from", from, "--fixes", "Release \(version): fixes a crash when the schedule is empty.",
            "--severity", "high", "--support-ends", "2031-12-31",
        ])
        try await hearth(["updates", "import", "--data", data, "--from", dir.appendingPathComponent("ws/publish").path])
    }

    /// Models, keys, 1.0.0 flashed into `devices` units, 1.1.0 released, the server started.
    static func make(devices: Int, imageSize: Int = 256 * 1024) async throws -> UpdateDeployment {
        let d = UpdateDeployment()
        try FileManager.default.createDirectory(at: d.dir, withIntermediateDirectories: true)
        for model in ProductModel.demoModels() {
            let file = d.dir.appendingPathComponent("\(model.id).json")
            try Data(model.json.text.utf8).write(to: file)
            try await d.hearth(["model", "add", "--data", d.data, "--file", file.path])
        }
        let keys = d.dir.appendingPathComponent("online-keys.json")
        try Data(try await d.hearth(["updates", "online-keys", "--data", d.data]).utf8).write(to: keys)
        try await d.hearth(["release", "init", "--workspace", d.workspace, "--online-keys", keys.path])
        try await d.publish("1.0.0", from: "0.0.0", size: imageSize)
        try await d.hearth([
            "factory", "provision", "--data", d.data, "--model", "thermostat-t1", "--count", "\(devices)", "--out",
            d.bundles.path, "--public-url", "https://127.0.0.1:1",
        ])
        try await d.publish("1.1.0", from: "1.0.0", size: imageSize)
        let server = try ChildProcess(
            builtProduct("hearth"),
            [
                "serve", "--data", d.data, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                "--mqtt-listen", "127.0.0.1:0",
            ])
        d.server = server
        #expect(try await server.wait(for: "Hearth is serving"), "\(server.text)")
        #expect(try await server.wait(for: "mqtts://"), "\(server.text)")
        d.httpsPort = Int(Self.digits(after: "https://127.0.0.1:", in: server.text) ?? "") ?? 0
        d.mqttPort = Int(Self.digits(after: "mqtts://127.0.0.1:", in: server.text) ?? "") ?? 0
        return d
    }

    /// The digits right after `prefix` (a port, a time in ms).
    static func digits(after prefix: String, in text: String) -> String? {
        guard let r = text.range(of: prefix) else { return nil }
        return String(text[r.upperBound...].prefix { $0.isNumber })
    }

    var repository: String { "https://127.0.0.1:\(httpsPort)/tuf" }
    var serials: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: bundles.path)) ?? []).sorted() }
    func bundle(_ serial: String) -> String { bundles.appendingPathComponent(serial).path }

    func device(_ serial: String, _ extra: [String] = []) throws -> ChildProcess {
        try ChildProcess(
            builtProduct("hearth-device"),
            [
                "thermostat", "--bundle", bundle(serial), "--mqtt", "127.0.0.1:\(mqttPort)", "--repository", repository,
                "--hardware-key", dir.appendingPathComponent("hw.key").path,
                "--startup-delay", "0", "--report-every", "0.2", "--reconnect-window", "1", "--update-check", "0.5",
            ] + extra)
    }

    /// `hearth-device boot` on a unit: (exit status, version or nil, the JSON line).
    func boot(_ serial: String, commit: Bool = false) async throws -> (Int32, String?, String) {
        let r = try await ChildProcess.run(
            builtProduct("hearth-device").path, ["boot", "--bundle", bundle(serial)] + (commit ? ["--commit"] : []))
        let json = r.output.split(separator: "\n").last.map(String.init) ?? ""
        guard case .object(let o)? = try? JSONValue.parse(Array(json.utf8)), case .string(let v)? = o["version"] else {
            return (r.status, nil, r.output)
        }
        return (r.status, v, json)
    }

    func tamper(_ serial: String, slot: String) throws {
        let url = bundles.appendingPathComponent(serial).appendingPathComponent("update/slot-\(slot)/image")
        var bytes = try Data(contentsOf: url)
        bytes[bytes.count / 3] ^= 0x5A
        try bytes.write(to: url)
    }

    func stop() async throws {
        server?.signal(SIGTERM)
        _ = try await server?.waitForExit()
        try? FileManager.default.removeItem(at: dir)
    }
}

extension HeavyProcessTests {
    @Suite("Updates end to end: repository, power loss, verified boot, rollout")
    struct UpdateProcessTests {
        @Test(.timeLimit(.minutes(5)))
        func pythonTUFsUpdaterVerifiesTheRepositoryBeforeAndAfterARootRotation() async throws {
            let python = try requiredPython(module: "tuf", package: "tuf")
            let d = try await UpdateDeployment.make(devices: 1)
            defer { Task { try? await d.stop() } }
            let root1 = d.dir.appendingPathComponent("ws/publish/metadata/1.root.json").path
            func updater(_ work: String) async throws -> (Int32, String) {
                let r = try await ChildProcess.run(
                    "/usr/bin/env",
                    [
                        "SSL_CERT_FILE=\(d.data)/root-ca.pem", python, tufUpdaterScript,
                        "https://127.0.0.1:\(d.httpsPort)", root1, d.dir.appendingPathComponent(work).path, d.next,
                    ])
                return (r.status, r.output)
            }
            let (status, output) = try await updater("client-1")
            #expect(status == 0, "\(output)")
            #expect(
                output.contains(#""root": 1"#) && output.contains(#""targets": 3"#)
                    && output.contains(#""downloaded": 262144"#), "\(output)")
            #expect(
                output.contains(#""min_version": "1.0.0""#) && output.contains("fixes a crash"),
                "custom metadata: \(output)")

            // The maker rotates the root and targets keys; a client that trusts root v1 follows.
            try await d.hearth(["release", "rotate-root", "--workspace", d.workspace, "--targets"])
            try await d.hearth([
                "updates", "import", "--data", d.data, "--from", d.dir.appendingPathComponent("ws/publish").path,
            ])
            let (rotated, after) = try await updater("client-2")
            #expect(rotated == 0 && after.contains(#""root": 2"#) && after.contains(#""targets": 4"#), "\(after)")

            // Targets signed with the retired key are refused at import, and nothing changes.
            let retired = d.dir.appendingPathComponent("ws/keys/retired")
            let keys = d.dir.appendingPathComponent("ws/keys")
            for f in try FileManager.default.contentsOfDirectory(atPath: keys.path) where f.hasPrefix("targets-") {
                try FileManager.default.removeItem(at: keys.appendingPathComponent(f))
            }
            for f in try FileManager.default.contentsOfDirectory(atPath: retired.path) where f.hasPrefix("targets-") {
                try FileManager.default.copyItem(
                    at: retired.appendingPathComponent(f), to: keys.appendingPathComponent(f))
            }
            try await d.hearth([
                "release", "publish", "--workspace", d.workspace, "--image", try d.image("1.2.0", size: 1000),
                "--model", "thermostat-t1", "--version", "1.2.0", "--min-from", "1.0.0", "--fixes",
                "Signed with a key that was rotated out.", "--severity", "low", "--support-ends", "2031-12-31",
            ])
            let refused = try await ChildProcess.run(
                builtProduct("hearth").path,
                ["updates", "import", "--data", d.data, "--from", d.dir.appendingPathComponent("ws/publish").path])
            #expect(
                refused.status == 1 && refused.output.contains("too_few_signatures") == false
                    && refused.output.contains("valid signatures"), "\(refused.output)")
            let (still, unchanged) = try await updater("client-3")
            #expect(still == 0 && unchanged.contains(#""targets": 4"#), "\(unchanged)")
        }

        /// 100 runs: the device is killed (SIGKILL) at a random moment of downloading, verifying,
        /// installing, switching or committing; every restart boots a verified image, the old version
        /// or the new one.
        @Test(.timeLimit(.minutes(8)))
        func powerLossAtAnyPointLeavesAVerifiedOldOrNewVersion() async throws {
            let lanes = 2
            let runsPerLane = 50
            let d = try await UpdateDeployment.make(devices: lanes, imageSize: 4 << 20)
            defer { Task { try? await d.stop() } }
            // How long an update and a commit take here, and when the update's work starts (after the
            // process has started), to spread the kills over the work.
            let probe = d.serials[0]
            let start = Date()
            let whole = try ChildProcess(
                builtProduct("hearth-device"),
                ["update", "--bundle", d.bundle(probe), "--target", d.next, "--repository", d.repository])
            #expect(try await whole.wait(for: "boot: "))
            let workStarts = Date().timeIntervalSince(start)
            #expect(try await whole.waitForExit() == 0 && whole.text.contains("switched: 1.1.0"), "\(whole.text)")
            let updateSpan = Date().timeIntervalSince(start)
            let commitStart = Date()
            #expect(try await d.boot(probe, commit: true).1 == "1.1.0")
            let commitSpan = Date().timeIntervalSince(commitStart)
            try FileManager.default.removeItem(
                at: d.bundles.appendingPathComponent(probe).appendingPathComponent("update"))

            let results = try await withThrowingTaskGroup(of: [String].self) { group in
                for lane in 0..<lanes {
                    let serial = d.serials[lane]
                    group.addTask {
                        var seen: [String] = []
                        for run in 0..<runsPerLane {
                            // Factory state: 1.0.0 in slot A (a reset after a run that ended on 1.1.0).
                            try? FileManager.default.removeItem(
                                at: d.bundles.appendingPathComponent(serial).appendingPathComponent("update"))
                            #expect(try await d.boot(serial).1 == "1.0.0")
                            let commit = run % 4 == 3
                            let arguments: [String]
                            let window: ClosedRange<Double>
                            if commit {
                                // The update completes; the restart that commits it is killed.
                                let r = try await ChildProcess.run(
                                    builtProduct("hearth-device").path,
                                    [
                                        "update", "--bundle", d.bundle(serial), "--target", d.next, "--repository",
                                        d.repository,
                                    ])
                                #expect(r.status == 0, "\(r.output)")
                                arguments = ["boot", "--bundle", d.bundle(serial), "--commit"]
                                window = 0...(commitSpan * 1.2)
                            } else {
                                arguments = [
                                    "update", "--bundle", d.bundle(serial), "--target", d.next, "--repository",
                                    d.repository,
                                ]
                                window = (workStarts * 0.9)...(updateSpan * 1.1)
                            }
                            let child = try ChildProcess(builtProduct("hearth-device"), arguments)
                            try await Task.sleep(for: .seconds(Double.random(in: window)))
                            child.signal(SIGKILL)
                            let exit = try await child.waitForExit()
                            var phase =
                                child.text.split(separator: "\n").last(where: {
                                    $0.hasPrefix("phase: ") || $0.hasPrefix("switched") || $0.hasPrefix("boot: ")
                                })
                                .map {
                                    String($0.split(separator: " after ").first ?? $0).replacingOccurrences(
                                        of: "boot: firmware 1.0.0 (slot a, verified)", with: "refreshing metadata")
                                } ?? "starting"
                            if commit { phase = "commit (\(child.text.contains("{") ? "done" : "killed"))" }
                            // It ended before the kill.
                            if exit != nil, child.exited { phase += " [finished]" }
                            let (status, after, line) = try await d.boot(serial)
                            #expect(
                                status == 0 && (after == "1.0.0" || after == "1.1.0"),
                                "after a kill at \(phase): \(line)")
                            seen.append(phase)
                        }
                        return seen
                    }
                }
                var all: [String] = []
                for try await lane in group { all += lane }
                return all
            }
            let phases = Dictionary(grouping: results, by: { $0 }).mapValues(\.count)
            print(
                "power loss: \(results.count) kills; last step reached before the kill: \(phases.sorted { $0.key < $1.key })"
            )
            #expect(results.count == lanes * runsPerLane)
            #expect(
                phases.keys.filter { !$0.contains("[finished]") }.count >= 4,
                "kills landed in several phases: \(phases)")
        }

        @Test(.timeLimit(.minutes(5)))
        func tamperedSlotsFallBackOrStopWithOnlyTheAlertConnection() async throws {
            let d = try await UpdateDeployment.make(devices: 2)
            defer { Task { try? await d.stop() } }
            let (a, b) = (d.serials[0], d.serials[1])
            for serial in [a, b] {
                let r = try await ChildProcess.run(
                    builtProduct("hearth-device").path,
                    ["update", "--bundle", d.bundle(serial), "--target", d.next, "--repository", d.repository])
                #expect(r.status == 0, "\(r.output)")
                #expect(try await d.boot(serial, commit: true).1 == "1.1.0")
            }
            // The active slot (1.1.0) tampered: the device starts 1.0.0 from the other slot and alerts.
            try d.tamper(a, slot: "b")
            let fellBack = try d.device(a)
            #expect(try await fellBack.wait(for: "SECURITY ALERT"), "\(fellBack.text)")
            var shown = ""
            for _ in 0..<100 where !shown.contains("alert\tfell_back") {
                try await Task.sleep(for: .milliseconds(200))
                shown = try await d.hearth(["device", "show", "--data", d.data, a])
            }
            #expect(
                shown.contains("alert\tfell_back") && shown.contains("firmware\t1.0.0"),
                "the owner's device view: \(shown)")
            fellBack.signal(SIGTERM)
            _ = try await fellBack.waitForExit()

            // Both slots tampered: integrity-failure mode. The repository address is a listener that
            // records every connection: the device must contact nothing but the gateway, once.
            try d.tamper(b, slot: "a")
            try d.tamper(b, slot: "b")
            let listener = try ConnectionCounter()
            try await listener.selfTest()
            let stopped = try ChildProcess(
                builtProduct("hearth-device"),
                [
                    "thermostat", "--bundle", d.bundle(b), "--mqtt", "127.0.0.1:\(d.mqttPort)", "--repository",
                    "https://127.0.0.1:\(listener.port)/tuf",
                    "--hardware-key", d.dir.appendingPathComponent("hw.key").path, "--startup-delay", "0",
                    "--report-every", "0.2",
                ])
            #expect(try await stopped.waitForExit(timeout: 60) == 3, "\(stopped.text)")
            #expect(
                stopped.text.contains("INTEGRITY FAILURE") && stopped.text.contains("the owner was alerted"),
                "\(stopped.text)")
            #expect(listener.accepted == 0, "the update repository was contacted \(listener.accepted) times")
            let view = try await d.hearth(["device", "show", "--data", d.data, b])
            #expect(view.contains("alert\tintegrity_failure"), "\(view)")
            #expect(!view.contains("latest\t"), "no telemetry was sent: \(view)")
            listener.close()
        }

        /// An operator drives a rollout from the command line: start, list, pause, resume, advance,
        /// abort; a move the state does not allow is refused and changes nothing. `updates renew`
        /// renews nothing that is not due.
        @Test func anOperatorDrivesARolloutThroughEveryCommandLineAction() async throws {
            let d = try await UpdateDeployment.make(devices: 1)
            defer { Task { try? await d.stop() } }
            let started = try await d.hearth([
                "updates", "rollout", "start", d.next, "--data", d.data, "--stages", "10,100",
            ])
            let id = try #require(started.split(separator: "\t").first.map(String.init))
            #expect(started.contains("\tactive\tstage 1/2 (10%)"), "\(started)")
            let listed = try await d.hearth(["updates", "rollout", "list", "--data", d.data])
            #expect(listed.hasPrefix(id) && listed.contains(d.next), "\(listed)")
            #expect(
                try await d.hearth(["updates", "rollout", "pause", id, "--data", d.data]).contains("\tpaused\t"))
            #expect(
                try await d.hearth(["updates", "rollout", "resume", id, "--data", d.data]).contains("\tactive\t"))
            #expect(
                try await d.hearth(["updates", "rollout", "advance", id, "--data", d.data]).contains("stage 2/2 (100%)")
            )
            #expect(
                try await d.hearth(["updates", "rollout", "abort", id, "--data", d.data]).contains("\taborted\t"))
            let refused = try await ChildProcess.run(
                builtProduct("hearth").path, ["updates", "rollout", "resume", id, "--data", d.data])
            #expect(
                refused.status != 0 && !refused.output.isEmpty, "an aborted rollout stays aborted: \(refused.output)")
            #expect(try await d.hearth(["updates", "rollout", "show", id, "--data", d.data]).contains("\taborted\t"))
            let renewed = try await d.hearth(["updates", "renew", "--data", d.data])
            #expect(renewed.contains("Nothing due."), "just imported, nothing is due: \(renewed)")

            // Devices' downloads from the repository, measured: all succeed, each the whole file.
            let root = try Data(contentsOf: d.dir.appendingPathComponent("ws/publish/metadata/1.root.json"))
            let downloads = try await ChildProcess.run(
                builtProduct("hearth-device").path,
                [
                    "download-bench", "--repository", d.repository, "--ca", d.data + "/root-ca.pem", "--path",
                    "metadata/1.root.json", "--clients", "20",
                ])
            #expect(downloads.status == 0, "\(downloads.output)")
            let line = try JSONValue.parse(Array((downloads.output.split(separator: "\n").last ?? "").utf8))
            #expect(
                line["clients"] == 20 && line["failed"] == 0 && line["bytes"] == .number(Double(20 * root.count)),
                "\(downloads.output)")
        }

        /// A rollout to a running thermostat: offered, downloaded while it keeps regulating, restarted
        /// into 1.1.0, committed once its first reading is delivered; the switch-over is measured.
        @Test(.timeLimit(.minutes(5)))
        func aRolloutUpdatesARunningThermostatWithABoundedSwitchOver() async throws {
            let d = try await UpdateDeployment.make(devices: 1)
            defer { Task { try? await d.stop() } }
            let serial = d.serials[0]
            let device = try d.device(serial)
            defer { device.signal(SIGKILL) }
            #expect(try await device.wait(for: "running"), "\(device.text)")
            let started = try await d.hearth([
                "updates", "rollout", "start", d.next, "--data", d.data, "--stages", "100",
            ])
            let id = try #require(started.split(separator: "\t").first.map(String.init))
            #expect(try await device.wait(for: "update to 1.1.0 committed", timeout: 60), "\(device.text)")
            let restart = Int64(UpdateDeployment.digits(after: "update: restarting at ", in: device.text) ?? "") ?? 0
            let booted =
                device.text.components(separatedBy: "\n").filter { $0.contains("on trial until healthy") }.first.flatMap
            { UpdateDeployment.digits(after: ") at ", in: $0) }.flatMap { Int64($0) } ?? 0
            let downtime = Double(booted - restart) / 1000
            print("switch-over: the thermostat's control loop stopped for \(downtime) s (restart into the new slot)")
            #expect(restart > 0 && booted >= restart && downtime < 10, "bounded switch-over: \(device.text)")
            var shown = ""
            for _ in 0..<100 where !shown.contains("1 succeeded") {
                try await Task.sleep(for: .milliseconds(200))
                shown = try await d.hearth(["updates", "rollout", "show", id, "--data", d.data])
            }
            #expect(shown.contains("completed") && shown.contains("1 succeeded, 0 failed of 1"), "\(shown)")
            #expect(try await d.hearth(["device", "show", "--data", d.data, serial]).contains("firmware\t1.1.0"))
        }
    }
}

/// A TCP listener that only counts connections (the address given to a device that must not call).
/// It proves it can count before it is trusted to say nothing came: ``selfTest()``.
final class ConnectionCounter: @unchecked Sendable {
    let fd: Int32
    let port: Int
    private let lock = NSLock()
    private var count = 0
    private var thread: Thread?

    struct SocketFailed: Error, CustomStringConvertible {
        let description: String
    }

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SocketFailed(description: "socket: errno \(errno)") }
        self.fd = fd
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var size = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, size) }
        }
        guard bound == 0, listen(fd, 16) == 0 else { throw SocketFailed(description: "bind/listen: errno \(errno)") }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &size) }
        }
        guard named == 0, address.sin_port != 0 else { throw SocketFailed(description: "getsockname: errno \(errno)") }
        port = Int(UInt16(bigEndian: address.sin_port))
        thread = Thread { [weak self] in
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { return }
                self?.lock.withLock { self?.count += 1 }
                Glibc.close(client)
            }
        }
        thread?.start()
    }

    /// Connects once itself and waits (up to 10 s) until that connection is counted; then resets
    /// the count. Throws if it never is.
    func selfTest() async throws {
        let probe = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { Glibc.close(probe) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(probe, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw SocketFailed(description: "connect: errno \(errno)") }
        for _ in 0..<1000 where accepted == 0 { try await Task.sleep(for: .milliseconds(10)) }
        guard accepted == 1 else { throw SocketFailed(description: "the listener counted \(accepted), not 1") }
        lock.withLock { count = 0 }
    }

    var accepted: Int { lock.withLock { count } }
    func close() {
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
    }
}

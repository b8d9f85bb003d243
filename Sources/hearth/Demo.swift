import ArgumentParser
import Foundation
import HearthCore
import HearthCrypto
import HearthDevice
import HearthReferenceDevices
import HearthServer
import HearthStorage
import HearthUpdate
import NIOHTTP1
import ServiceLifecycle
import Synchronization

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Run the whole system on a fresh data folder: server, gateway, and reference devices claimed by a demo owner.",
        discussion: """
            Creates the demo product models (a thermostat and a lock), provisions a few units of each, starts \
            the HTTPS server and the MQTT gateway, starts the units as reference devices (each with its own \
            sealed key and offline queue), signs up a demo owner with a fresh random password, claims every \
            unit through the public API with the setup code from its label, shows their telemetry arriving \
            and a command round trip, then keeps running until Ctrl-C.
            """
    )

    @Option(help: "HTTPS address, HOST:PORT (port 0 picks a free port).")
    var listen: ListenAddress = ListenAddress(argument: "127.0.0.1:8443")!

    @Option(help: "Units to provision and run per demo model.")
    var devices: Int = 2

    @OptionGroup var gateway: GatewayOptions

    @OptionGroup var operations: OperationsOptions

    @Option(help: "Data folder; default: a new temporary folder.")
    var data: String?

    @Flag(
        name: .customLong("provision-only"),
        help:
            "Provision the devices but do not run or claim them: drive them yourself with their bundles (e.g. mosquitto_pub with device.pem and device.key.pem)."
    )
    var provisionOnly = false

    func run() async throws {
        try await reportingErrors {
            operations.bootstrapLogging()
            guard (1...50).contains(devices) else { throw HearthError.invalid("devices", "between 1 and 50") }
            let path =
                data
                ?? FileManager.default.temporaryDirectory.appendingPathComponent(
                    "hearth-demo-\(UUID().uuidString.prefix(8))"
                ).path
            // A demo is a first run: on a folder that already holds one it would add a second owner
            // and more devices. Refuse, and say how to run what is there.
            let bundlesPath = URL(fileURLWithPath: path).appendingPathComponent("bundles").path
            if let existing = try? FileManager.default.contentsOfDirectory(atPath: bundlesPath), !existing.isEmpty {
                throw HearthError(
                    .conflict, field: "data",
                    "\(path) already holds a demo (\(existing.count) devices). Nothing was changed. Run `hearth demo` without --data for a fresh one, or `hearth serve --data \(path)` to serve this one again."
                )
            }
            print("Hearth demo: data folder \(path)")
            var options = try DataOptions.parse([])
            options.data = path
            let (folder, storage) = try options.openSQLite()
            let store = storage.store
            var provisioner = Provisioner(
                store: store, deviceCA: folder.deviceCA, rootCA: folder.rootCA, publicURL: "https://\(listen)")
            let bundles = folder.url.appendingPathComponent("bundles")
            let repository = try UpdateRepository(
                store: store, kek: folder.kek, targetsDirectory: folder.targetsDirectory)
            let maker = try DemoMaker(folder: folder, repository: repository)
            var units: [URL] = []
            print(
                "[1/7] Provisioning \(devices) of each demo product (serial, key pair, certificate, setup code, label, signed firmware 1.0.0)…"
            )
            for model in ProductModel.demoModels() {
                if try await store.model(model.id) == nil {
                    try await Fleet(store: store).define(model, actor: "demo")
                }
                try await maker.release(
                    model: model.id, version: "1.0.0", from: "0.0.0",
                    fixes: "The first release of the \(model.name) firmware.", severity: .none)
                provisioner.firmware = try await repository.factoryFirmware(model.id)
                print("      \(devices) × \(model.name)")
                units += try await provisioner.provision(modelID: model.id, count: devices, outDirectory: bundles).map {
                    bundles.appendingPathComponent($0.serial.rawValue)
                }
            }
            try DemoMaker.writeStatements(into: folder)
            print("      The labels in the boxes (a consumer reads the serial and setup code from them):")
            for unit in units {
                let label = try String(contentsOf: unit.appendingPathComponent("label.txt"), encoding: .utf8)
                print(label.split(separator: "\n").map { "        " + $0 }.joined(separator: "\n") + "\n")
            }
            fflush(nil)
            let ready = ServerReady()
            let script = DemoScript(folder: folder, units: units, host: listen.host, ready: ready, maker: maker)
            try await runServer(
                folder: folder, storage: storage, listen: listen, gateway: gateway, operations: operations,
                ready: ready,
                companions: provisionOnly ? [] : [script]
            ) { base in
                if provisionOnly {
                    print(
                        "Devices provisioned in \(bundles.path), not started (--provision-only).\nPress Ctrl-C to stop."
                    )
                }
            }
        }
    }
}

/// Learns the addresses the server bound (ports may be chosen by the system).
final class ServerReady: Sendable {
    let ports = Mutex<(https: Int?, mqtt: Int?)>((nil, nil))

    func https(_ port: Int) { ports.withLock { $0.https = port } }
    func mqtt(_ port: Int) { ports.withLock { $0.mqtt = port } }

    func wait() async throws -> (https: Int, mqtt: Int) {
        while true {
            if case (let https?, let mqtt?) = ports.withLock({ $0 }) { return (https, mqtt) }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}

/// What the demo does once the server is up, as a consumer and their devices would.
struct DemoScript: Service {
    let folder: DataFolder
    let units: [URL]
    let host: String
    let ready: ServerReady
    let maker: DemoMaker

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown { try await script() }
        } catch is CancellationError {
            print("Demo devices stopped.")
        }
    }

    func say(_ text: String) {
        print(text)
        fflush(nil)
    }

    func script() async throws {
        let (httpsPort, mqttPort) = try await ready.wait()
        let base = "https://\(host.contains(":") ? "[\(host)]" : host):\(httpsPort)"
        say(
            "[2/7] Starting \(units.count) reference devices (each verifies its firmware at boot, seals its factory key, keeps a persistent offline queue, and connects over mutual TLS to port \(mqttPort))…"
        )
        let hardwareKey = try DeviceUniqueKey.simulated(
            file: folder.url.appendingPathComponent("demo-hardware.key").path)
        let units = try self.units.map { try DeviceBundle.load($0) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (i, unit) in units.enumerated() {
                group.addTask {
                    try await runUnit(
                        unit, seed: UInt64(i + 1), hardwareKey: hardwareKey, mqttPort: mqttPort, base: base)
                }
            }
            group.addTask {
                try await walkThrough(
                    base: base, httpsPort: httpsPort, devices: units, mqttPort: mqttPort, hardwareKey: hardwareKey)
            }
            while try await group.next() != nil {}
        }
    }

    /// One unit as its firmware runs it: verified boot, the device with its update controller, and
    /// on a restart (after an update is installed) the same again — in this process, so the demo is
    /// one command (`hearth-device` restarts by exec'ing itself).
    func runUnit(_ bundle: DeviceBundle, seed: UInt64, hardwareKey: DeviceUniqueKey, mqttPort: Int, base: String)
        async throws
    {
        while !Task.isCancelled {
            let updater = FirmwareUpdater(
                device: bundle.folder, model: bundle.model,
                fetcher: try HTTPSUpdateFetcher(base: URL(string: base + "/tuf")!, trustRootsPEM: bundle.trustRootsPEM))
            let outcome = try await updater.boot()
            guard let firmware = outcome.firmware else {
                say("      \(bundle.serial): INTEGRITY FAILURE, no verified firmware; stopped")
                return
            }
            let (restarts, restart) = AsyncStream<Void>.makeStream()
            let controller = UpdateController(
                updater: updater, healthDeadline: .seconds(60), log: { say("      \(bundle.serial): \($0)") }
            ) { restart.yield() }
            let device = try ReferenceDevice(
                bundle: bundle, uniqueKey: hardwareKey, reportEvery: 5, seed: seed,
                configure: { c in
                    c.host = host
                    c.port = mqttPort
                    c.reconnect = ReconnectPolicy(startupDelay: 1, window: 5)
                    c.updateCheckInterval = 2
                }, onEvent: { if case .delivered = $0 { Task { await controller.healthy() } } },
                onUpdateOffer: { await controller.offered($0) })
            await controller.attach(device.agent)
            await controller.started(outcome)
            if case .trial = outcome {
                say(
                    "      \(bundle.serial) started firmware \(firmware.version) on trial; it commits once its first reading is delivered"
                )
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await device.run() }
                group.addTask { for await _ in restarts { return } }
                try await group.next()
                group.cancelAll()
            }
            if !Task.isCancelled { say("      \(bundle.serial) restarts into its other slot…") }
        }
    }

    func walkThrough(
        base: String, httpsPort: Int, devices: [DeviceBundle], mqttPort: Int, hardwareKey: DeviceUniqueKey
    ) async throws {
        let api = try HTTPSClient(host: host, port: httpsPort, rootCAPEM: try folder.rootCA.certificate.pem())
        let email = "demo-owner-\(SecureToken.generate().prefix(6).lowercased())@example.com"
        let password = "demo " + SecureToken.generate()
        say(
            "[3/7] Signing up a demo owner (\(email), fresh random password) and claiming every device with the setup code on its label…"
        )
        try await expect(
            api.request(.POST, "/api/v1/accounts", body: ["email": .string(email), "password": .string(password)]), 201,
            "sign up")
        let session = try await expect(
            api.request(.POST, "/api/v1/sessions", body: ["email": .string(email), "password": .string(password)]), 201,
            "sign in")
        guard case .string(let token)? = session["token"] else {
            throw HearthError(.internal, "sign-in returned no token")
        }
        for unit in units {
            let label = try String(contentsOf: unit.appendingPathComponent("label.txt"), encoding: .utf8)
            let (serial, code) = (labelField(label, "Serial:"), labelField(label, "Setup code:"))
            try await expect(
                api.request(
                    .POST, "/api/v1/devices/claim", body: ["serial": .string(serial), "setupCode": .string(code)],
                    token: token), 201, "claim \(serial)")
            say("      claimed \(serial) (\(label.split(separator: "\n").first ?? ""))")
        }
        say("[4/7] Waiting for telemetry from each device…")
        for device in devices {
            let latest = try await waitForReading(api, token, device.serial) { _ in true }
            say("      \(device.serial) \(device.model): \(latest)")
        }
        say("[5/7] Command round trip: the owner sets the thermostat to 23.5 °C and unlocks the lock through the API…")
        if let thermostat = devices.first(where: { $0.model.rawValue == Thermostat.model }) {
            let reply = try await expect(
                api.request(
                    .POST, "/api/v1/devices/\(thermostat.serial)/commands",
                    body: ["name": "setTarget", "parameters": ["target": 23.5]], token: token), 200, "setTarget")
            say("      setTarget → \(reply.json?.text ?? "")")
            let after = try await waitForReading(api, token, thermostat.serial) { $0["target"] == .number(23.5) }
            say("      the thermostat now reports \(after)")
            let refused = try await api.request(
                .POST, "/api/v1/devices/\(thermostat.serial)/commands",
                body: ["name": "setTarget", "parameters": ["target": 99]], token: token)
            say(
                "      setTarget 99 °C → HTTP \(refused.status) \(refused["message"].map { if case .string(let m) = $0 { m } else { $0.text } } ?? "") (out of the model's range; nothing is sent)"
            )
        }
        if let lock = devices.first(where: { $0.model.rawValue == SmartLock.model }) {
            let reply = try await expect(
                api.request(
                    .POST, "/api/v1/devices/\(lock.serial)/commands", body: ["name": "unlock", "parameters": [:]],
                    token: token), 200, "unlock")
            say("      unlock → \(reply.json?.text ?? "")")
        }
        let thermostats = devices.filter { $0.model.rawValue == Thermostat.model }
        say(
            "[6/7] A security update: the maker signs thermostat firmware 1.1.0 offline (TUF), the server imports it and rolls it out; each thermostat downloads it while it keeps regulating, verifies it, installs it in its other slot, restarts, and commits once healthy…"
        )
        let model = try ProductModelID(Thermostat.model)
        try await maker.release(
            model: model, version: "1.1.0", from: "1.0.0",
            fixes:
                "Fixes a crash when the heating schedule is empty, and a bug that let a malformed setpoint command stall the control loop.",
            severity: .high)
        let rollout = try await maker.updates.startRollout(
            target: FirmwareTarget.name(model: model, version: try FirmwareVersion("1.1.0")),
            plan: try RolloutPlan(stages: [50, 100], failureThreshold: 0.2, minimumSample: 3), actor: "demo")
        say(
            "      rollout \(rollout.rollout.id): 50% of the thermostats first, then all; it pauses by itself if more than 20% fail"
        )
        for device in thermostats {
            var view = JSONValue.null
            var shown = ""
            for _ in 0..<1200 {
                view =
                    try await api.request(.GET, "/api/v1/devices/\(device.serial)/update", token: token).json ?? .null
                if case .object(let o) = view, case .object(let latest)? = o["latest"],
                    case .string(let text)? = latest["text"], text != shown
                {
                    shown = text
                    say("      \(device.serial): \(text)")
                }
                if case .object(let o) = view, o["firmwareVersion"] == "1.1.0", case .object(let latest)? = o["latest"],
                    latest["phase"] == "succeeded"
                {
                    break
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            guard case .object(let o) = view, o["firmwareVersion"] == "1.1.0" else {
                throw HearthError(
                    .deviceTimeout, "demo: \(device.serial) did not update within two minutes: \(view.text)")
            }
            if case .object(let release)? = o["release"], case .object(let notes)? = release["notes"],
                case .object(let rn)? = notes["release_notes"], case .string(let fixes)? = rn["fixes"],
                case .string(let severity)? = rn["severity_text"]
            {
                say(
                    "      the owner sees \(device.serial): firmware 1.1.0, updated. Release notes: \(fixes) \(severity)"
                )
            }
            if case .string(let support)? = o["supportText"] { say("      \(support)") }
        }
        if let lock = devices.first(where: { $0.model.rawValue == SmartLock.model }) {
            try await misbehave(
                lock, api: api, token: token, base: base, mqttPort: mqttPort, hardwareKey: hardwareKey)
        }
        let anyThermostat = thermostats.first?.serial.rawValue ?? "SERIAL"
        // The owner's credentials go to a private file, not the terminal: it is also the body of a
        // sign-in request.
        let credentials = folder.url.appendingPathComponent("demo-owner.json")
        try DataFolder.writePrivate(
            Data(JSONValue.object(["email": .string(email), "password": .string(password)]).text.utf8), to: credentials)
        let curl = "curl --cacert \(folder.rootCAPath)"
        say(
            """

            Hearth demo is running: \(base)
              Owner:     \(email); the password is in \(credentials.path) (0600).
                         Sign in at \(base)/signin, then see \(base)/devices
              Root CA:   \(folder.rootCAPath)  (clients verify the server with it)
              Try:       TOKEN=$(\(curl) -s -H 'content-type: application/json' -d @\(credentials.path) \(base)/api/v1/sessions | sed 's/.*"token":"\\([^"]*\\)".*/\\1/')
                         \(curl) -H "authorization: Bearer $TOKEN" \(base)/api/v1/devices/\(anyThermostat)/telemetry/latest
                         \(curl) -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \\
                           -d '{"name":"setTarget","parameters":{"target":19}}' \(base)/api/v1/devices/\(anyThermostat)/commands
              Operator:  open the one-time set-up link printed above to create the operator account,
                         then the console at \(base)/console (fleet, rollouts, audit log).
              Updates:   \(curl) -H "authorization: Bearer $TOKEN" \(base)/api/v1/devices/\(anyThermostat)/update
                         the demo maker's signing workspace (keys that stay offline in production): \(maker.workspace.options.url.path)
              Devices:   their folders (sealed keys, offline queues, firmware slots) are in \(folder.url.appendingPathComponent("bundles").path);
                         run one yourself: swift run hearth-device thermostat --bundle FOLDER --mqtt 127.0.0.1:PORT --hardware-key FILE
            Press Ctrl-C to stop.
            """)
    }

    /// Step 7: security monitoring. The lock's identity is used to reach for other devices' topics
    /// (as a compromised device would); the gateway's detectors raise an alert, high severity
    /// quarantines the lock, and its owner reads both in plain English.
    func misbehave(
        _ lock: DeviceBundle, api: HTTPSClient, token: String, base: String, mqttPort: Int, hardwareKey: DeviceUniqueKey
    ) async throws {
        say(
            "[7/7] Security monitoring: the lock's identity reaches for another device's topic, # and $SYS/# (as a compromised device would; `hearth-device misbehave --kind probe`)…"
        )
        try await Misbehaviour.probe.perform(
            bundle: lock, keyStore: try lock.keyStore(uniqueKey: hardwareKey), host: host, port: mqttPort
        ) { say("      \(lock.serial): \($0)") }
        for _ in 0..<100 {
            let reply = try await api.request(.GET, "/api/v1/devices/\(lock.serial)/alerts", token: token)
            if case .array(let alerts)? = reply["alerts"], case .object(let alert)? = alerts.first,
                case .string(let text)? = alert["text"], case .string(let quarantine)? = reply["quarantine"]
            {
                say(
                    "      alert (\(alert["severity"].map { if case .string(let s) = $0 { s } else { "" } } ?? "")): \(text)"
                )
                say("      the owner sees \(lock.serial) quarantined \(quarantine)")
                say(
                    "      an operator reviews it at \(base)/console/alerts and releases the lock from its console page"
                )
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw HearthError(.deviceTimeout, "demo: no alert for \(lock.serial) within 10 s")
    }

    func labelField(_ label: String, _ name: String) -> String {
        label.split(separator: "\n").first { $0.hasPrefix(name) }.map {
            $0.dropFirst(name.count).trimmingCharacters(in: .whitespaces)
        } ?? ""
    }

    @discardableResult
    func expect(_ reply: HTTPSClient.Reply, _ status: Int, _ what: String) throws -> HTTPSClient.Reply {
        guard reply.status == status else {
            throw HearthError(.internal, "demo: \(what) answered HTTP \(reply.status): \(reply.json?.text ?? "")")
        }
        return reply
    }

    /// Polls the owner's view of a device until its latest reading satisfies `accept` (30 s at most).
    func waitForReading(
        _ api: HTTPSClient, _ token: String, _ serial: DeviceSerial, accept: ([String: JSONValue]) -> Bool
    ) async throws -> String {
        for _ in 0..<300 {
            let reply = try await api.request(.GET, "/api/v1/devices/\(serial)/telemetry/latest", token: token)
            if case .object(let reading)? = reply["reading"], case .object(let values)? = reading["values"],
                accept(values)
            {
                return JSONValue.object(values).text
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw HearthError(.deviceTimeout, "demo: no reading from \(serial) within 30 s")
    }
}

/// The demo's maker: a release workspace inside the data folder (in production the keys stay on the
/// maker's offline machine) that signs releases which the server then imports.
struct DemoMaker: Sendable {
    /// What the demo's maker states for `hearth assess` (DATA/maker-statements.json): the
    /// provisions only a maker can show, answered for the reference devices, and the demo company's
    /// address (a placeholder a real maker replaces).
    static func writeStatements(into folder: DataFolder) throws {
        let file = folder.url.appendingPathComponent("maker-statements.json")
        guard !FileManager.default.fileExists(atPath: file.path) else { return }
        func met(_ how: String) -> JSONValue { ["met": true, "how": .string(how)] }
        let statements: JSONValue = [
            "manufacturers": [
                "Hearth Demo Devices Ltd": ["address": "1 Example Street, Exampletown EX1 1AA, United Kingdom"]
            ],
            "provisions": [
                "5.2-3": met("The demo firmware's components are listed and watched for advisories by the demo maker."),
                "5.4-2": met(
                    "The reference devices seal their identity key under a device-unique key (in software for the demo; a product keeps it in a secure element)."
                ),
                "5.6-3": met("The reference devices are software and expose no physical interface."),
                "5.6-4": [
                    "applies": false,
                    "why":
                        "The reference devices run as software processes: there is no physically accessible debug interface.",
                ],
                "5.6-6": met("The reference firmware does only what the thermostat and lock need."),
                "5.6-8": met("The reference devices run under an operating system with MMU-enforced memory isolation."),
                "5.6-9": met(
                    "The reference devices are built with Hearth: reviewed changes, tests as evidence, CI from a clean clone."
                ),
            ],
        ]
        try DataFolder.writePrivate(statements.serialized(), to: file)
    }

    let workspace: Workspace
    let repository: UpdateRepository
    let updates: Updates

    init(folder: DataFolder, repository: UpdateRepository) throws {
        workspace = Workspace(
            try ReleaseCommand.WorkspaceOptions.parse(["--workspace", folder.url.appendingPathComponent("maker").path]))
        self.repository = repository
        updates = Updates(repository: repository)
    }

    /// Signs and imports `version` of `model` (once; a release is never replaced).
    func release(model: ProductModelID, version: String, from: String, fixes: String, severity: UpdateSeverity)
        async throws
    {
        let v = try FirmwareVersion(version)
        guard try await repository.store.release(FirmwareTarget.name(model: model, version: v)) == nil else { return }
        if !FileManager.default.fileExists(atPath: workspace.options.keys.path) {
            guard case .object(let online) = try await repository.onlinePublicKeys(), let s = online["snapshot"],
                let t = online["timestamp"]
            else { throw HearthError(.internal, "no online keys") }
            try workspace.initialize(online: (try TUFKey(json: s), try TUFKey(json: t)))
        }
        guard let supportEnds = try await repository.store.model(model)?.supportEnds else {
            throw HearthError(.notFound, "no model \(model)")
        }
        var image = Array("HEARTH-FW \(model) \(version)\n".utf8)
        var rng = SplitMix64(state: UInt64(image.count) &* 0x9E37_79B9)
        while image.count < 256 * 1024 { image.append(UInt8(truncatingIfNeeded: rng.next())) }
        _ = try workspace.publish(
            image: Data(image), model: model, version: v, minimumFrom: try FirmwareVersion(from), fixes: fixes,
            severity: severity,
            keepsWorking: true, downtime: 5, supportEnds: supportEnds
        )
        _ = try await repository.importPublication(from: workspace.options.url.appendingPathComponent("publish"))
    }
}

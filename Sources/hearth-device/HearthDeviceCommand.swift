import ArgumentParser
import Foundation
import HearthCore
import HearthDevice
import HearthReferenceDevices
import HearthUpdate
import Logging
import ServiceLifecycle

extension HostPort: ExpressibleByArgument {
    public init?(argument: String) { self.init(parsing: argument) }
}

@main
struct HearthDeviceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hearth-device",
        abstract: "Hearth's reference devices: a thermostat and a smart lock built on the device SDK.",
        discussion: """
            Each runs from a device folder that `hearth factory provision` wrote (its bundle). On first boot \
            the device seals its factory key with its hardware-unique key and deletes the plain copy. It keeps \
            working without the network: readings wait in a persistent offline queue and go out, in order, \
            once the server is back.
            """,
        subcommands: [
            ThermostatCommand.self, LockCommand.self, Fleet.self, CSR.self, BootCommand.self, UpdateCommand.self,
            ResetCommand.self, MisbehaveCommand.self, DownloadBench.self,
        ]
    )
}

/// What every device command shares.
struct DeviceOptions: ParsableArguments {
    @Option(help: "The device's folder (a factory bundle).")
    var bundle: String

    @Option(
        help: "The gateway's MQTT address, HOST:PORT. Default: the host of the server URL in the bundle, port 8883.")
    var mqtt: HostPort?

    @Option(
        name: .customLong("hardware-key"),
        help:
            "A file holding the device-unique key (32+ bytes, mode 0600; created if missing) that seals the device key. Default: derived from /etc/machine-id."
    )
    var hardwareKey: String?

    @Option(name: .customLong("report-every"), help: "Seconds between periodic readings.")
    var reportEvery: Double = 10

    @Option(
        name: .customLong("reconnect-window"),
        help:
            "Seconds over which the first reconnect after a lost connection is spread (full jitter; doubles per failure up to 10 minutes)."
    )
    var reconnectWindow: Double = 30

    @Option(
        name: .customLong("startup-delay"),
        help: "Longest random wait before the first connection after power-on, in seconds.")
    var startupDelay: Double = 10

    @Option(
        name: .customLong("queue-capacity"),
        help: "Readings the offline queue keeps at most; beyond it the oldest are dropped, counted and reported.")
    var queueCapacity = 10_000

    @Option(help: "Seed of the simulated room and of the reconnect jitter (random if absent).")
    var seed: UInt64?

    @Flag(help: "Print each connection event.")
    var verbose = false

    @Option(help: "The update repository's base URL. Default: the bundle's server URL with /tuf.")
    var repository: String?

    @Option(
        name: .customLong("update-check"),
        help: "Seconds between asking the server for updates while connected (it also asks at every connect).")
    var updateCheck: Double = 3600

    @Option(
        name: .customLong("health-deadline"),
        help:
            "Seconds a new firmware version has to deliver a reading before the device rolls back to the previous one.")
    var healthDeadline: Double = 120

    func validate() throws {
        guard reportEvery >= 0.01, reportEvery <= 86_400 else {
            throw ValidationError("--report-every must be between 0.01 and 86400 seconds")
        }
        guard reconnectWindow > 0, reconnectWindow <= 3600, startupDelay >= 0, startupDelay <= 3600 else {
            throw ValidationError("--reconnect-window and --startup-delay must be between 0 and 3600 seconds")
        }
        guard (1...1_000_000).contains(queueCapacity) else {
            throw ValidationError("--queue-capacity must be between 1 and 1000000")
        }
        guard updateCheck >= 0.1, updateCheck <= 7 * 86_400, healthDeadline >= 1, healthDeadline <= 3600 else {
            throw ValidationError(
                "--update-check must be between 0.1 s and 7 days, --health-deadline between 1 and 3600 s")
        }
    }

    func uniqueKey() throws -> DeviceUniqueKey {
        if let hardwareKey { return try DeviceUniqueKey.simulated(file: hardwareKey) }
        return try DeviceUniqueKey.machineID()
    }

    /// The device in `--bundle`, which must be a `kind`; prints its events with `--verbose`. With
    /// firmware in the bundle, verified boot runs first: a device whose slots all fail verification
    /// only raises the alert and stops (nil).
    func start(_ kind: ReferenceDevice.Kind) async throws -> ReferenceDevice? {
        let verbose = self.verbose
        let folder = URL(fileURLWithPath: bundle)
        let key = try uniqueKey()
        guard FirmwareUpdater.hasFirmware(folder) else {
            let device = try device(folder, key: key) { if verbose { line(describe($0)) } }
            guard device.kind == kind else {
                throw DeviceError(
                    "the bundle \(bundle) is a \(device.kind.rawValue); run `hearth-device \(device.kind.rawValue)`")
            }
            return device
        }
        let bundle = try DeviceBundle.load(folder)
        let updater = try self.updater(bundle)
        let outcome = try await updater.boot()
        line("boot: \(describe(outcome)) at \(millis())")
        if case .integrityFailure(let reason) = outcome {
            try await DeviceAgent.raiseAlert(
                UpdateReport(phase: .integrityFailure, version: "0.0.0", reason: reason),
                configuration: try configuration(bundle),
                keyStore: try bundle.keyStore(uniqueKey: key), trustRootsPEM: bundle.trustRootsPEM
            )
            line("integrity failure: the owner was alerted; this device stops until it is serviced")
            return nil
        }
        let controller = UpdateController(
            updater: updater, healthDeadline: .milliseconds(Int64(healthDeadline * 1000)),
            log: { line("update: \($0)") }
        ) {
            line("update: restarting at \(millis())")
            restartProcess()
        }
        let device = try self.device(
            folder, key: key,
            onEvent: { event in
                if verbose { line(describe(event)) }
                if case .delivered = event { Task { await controller.healthy() } }
            }, onUpdateOffer: { await controller.offered($0) })
        guard device.kind == kind else {
            throw DeviceError(
                "the bundle \(self.bundle) is a \(device.kind.rawValue); run `hearth-device \(device.kind.rawValue)`")
        }
        await controller.attach(device.agent)
        await controller.started(outcome)
        return device
    }

    func updater(_ bundle: DeviceBundle) throws -> FirmwareUpdater {
        let base = repository.flatMap(URL.init(string:)) ?? bundle.server.appendingPathComponent("tuf")
        return FirmwareUpdater(
            device: bundle.folder, model: bundle.model,
            fetcher: try HTTPSUpdateFetcher(base: base, trustRootsPEM: bundle.trustRootsPEM))
    }

    func configuration(_ bundle: DeviceBundle) throws -> DeviceConfiguration {
        guard let model = ProductModel.demoModels().first(where: { $0.id == bundle.model }) else {
            throw DeviceError("unknown model \(bundle.model)")
        }
        var c = DeviceConfiguration(
            serial: bundle.serial, model: model, host: bundle.server.host ?? "127.0.0.1", port: 8883)
        if let mqtt {
            c.host = mqtt.host
            c.port = mqtt.port
        }
        return c
    }

    func device(
        _ folder: URL, key: DeviceUniqueKey, onEvent: @escaping @Sendable (DeviceEvent) -> Void,
        onUpdateOffer: @escaping @Sendable (UpdateOffer) async -> Void = { _ in }
    ) throws -> ReferenceDevice {
        let bundle = try DeviceBundle.load(folder)
        let seed = self.seed ?? UInt64.random(in: .min ... .max)
        return try ReferenceDevice(
            bundle: bundle, uniqueKey: key, reportEvery: reportEvery, seed: seed,
            configure: { c in
                if let mqtt {
                    c.host = mqtt.host
                    c.port = mqtt.port
                }
                c.reconnect = ReconnectPolicy(startupDelay: startupDelay, window: reconnectWindow)
                c.queue.capacity = queueCapacity
                c.updateCheckInterval = updateCheck
            }, onEvent: onEvent, onUpdateOffer: onUpdateOffer)
    }
}

func describe(_ event: DeviceEvent) -> String {
    switch event {
    case .waiting(let s): "waiting \(String(format: "%.1f", s)) s before connecting"
    case .connected(let v, let resumed):
        "connected (MQTT \(v == .v5 ? "5.0" : "3.1.1"), session \(resumed ? "resumed" : "new"))"
    case .connectFailed(let why): "connect failed: \(why)"
    case .disconnected(let why): "disconnected: \(why)"
    case .delivered(let seq): "delivered reading \(seq)"
    case .refusedByServer(let seq, let why): "server refused reading \(seq): \(why)"
    case .command(let name, let status, let detail):
        "command \(name): \(status.rawValue)\(detail.map { " (\($0))" } ?? "")"
    case .policy(let withheld):
        withheld.isEmpty
            ? "the owner allows every optional field"
            : "not sent, as the owner chose: \(withheld.joined(separator: ", "))"
    case .resetAcknowledged(let id): "the server heard of factory reset \(id) and ended the owner's claim"
    case .rekeyed: "made a new key and installed its certificate; reconnecting with it (the old key is then refused)"
    case .rekeyFailed(let why): "could not make a new key: \(why)"
    }
}

/// The device's factory reset (its long press), for a device that is not running.
struct MisbehaveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "misbehave",
        abstract: "Make a device misbehave once, on purpose, to see security monitoring work (tests, demos).",
        discussion: """
            Uses the device's real identity from its bundle. Kinds: flood (200 messages in a second), garbage \
            (15 invalid readings), probe (another device's topic, # and $SYS/#), clone (its identity from \
            127.0.0.1 and 127.0.0.2 taking turns; loopback gateways only), fake-firmware (reports version 99.0.0, \
            never released). The server raises an alert within seconds; probe, clone and fake-firmware are high \
            severity and quarantine the device until an operator releases it.
            """)

    @OptionGroup var device: DeviceOptions

    @Option(help: "What to do: \(Misbehaviour.allCases.map(\.rawValue).joined(separator: ", ")).")
    var kind: Misbehaviour

    func run() async throws {
        try await failing {
            let bundle = try DeviceBundle.load(URL(fileURLWithPath: device.bundle))
            let keyStore = try bundle.keyStore(uniqueKey: try device.uniqueKey())
            let host = device.mqtt?.host ?? bundle.server.host ?? "127.0.0.1"
            let port = device.mqtt?.port ?? 8883
            try await kind.perform(bundle: bundle, keyStore: keyStore, host: host, port: port) {
                line("\(millis()) \(kind.rawValue): \($0)")
            }
            line(
                "\(bundle.serial) misbehaved (\(kind.rawValue)); the server should raise a '\(kind.expectedAlert)' alert."
            )
        }
    }
}

extension Misbehaviour: ExpressibleByArgument {}

struct ResetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "factory-reset",
        abstract: "Reset a device to factory state: erase its owner's settings, queued readings and command history.",
        discussion: """
            Keeps the device's identity (its sealed key and certificate) and firmware. Run it while the device \
            is stopped; it works offline. The next time the device runs it tells the server, which ends the \
            owner's claim: the code on the label then sets the device up again, for anyone who holds it.
            """)

    @OptionGroup var device: DeviceOptions

    func run() async throws {
        let folder = URL(fileURLWithPath: device.bundle)
        let unit = try device.device(folder, key: try device.uniqueKey()) { _ in }
        let id = try await unit.factoryReset()
        print("Reset \(unit.serial) to factory state (reset \(id)).")
        print(
            "The server ends the owner's claim when the device next connects; then its label's code sets it up again.")
    }
}

func describe(_ outcome: BootOutcome) -> String {
    switch outcome {
    case .booted(let slot, let f): "firmware \(f.version) (slot \(slot.rawValue), verified)"
    case .trial(let slot, let f): "firmware \(f.version) (slot \(slot.rawValue), verified, on trial until healthy)"
    case .rolledBack(let slot, let f, let why):
        "firmware \(f.version) (slot \(slot.rawValue), verified) after rolling back: \(why)"
    case .fellBack(let slot, let f, let why):
        "firmware \(f.version) (slot \(slot.rawValue), verified) — SECURITY ALERT, the other slot failed verification: \(why)"
    case .integrityFailure(let why): "INTEGRITY FAILURE, no slot verifies: \(why)"
    }
}

func millis() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

/// The device's reboot: the process replaces itself with a fresh copy (same arguments), which runs
/// verified boot again.
func restartProcess() {
    fflush(nil)
    let arguments = CommandLine.arguments.map { strdup($0) } + [nil]
    execv("/proc/self/exe", arguments)
    FileHandle.standardError.write(Data("hearth-device: cannot restart: \(String(cString: strerror(errno)))\n".utf8))
    exit(1)
}

func line(_ text: String) {
    print(text)
    fflush(nil)
}

func failing(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as DeviceError {
        FileHandle.standardError.write(Data("hearth-device: \(error.description)\n".utf8))
        throw ExitCode.failure
    }
}

/// Runs `work` until it ends, or until SIGINT or SIGTERM cancel it.
func runUntilSignalled(_ work: @escaping @Sendable () async throws -> Void) async throws {
    struct Work: Service {
        let body: @Sendable () async throws -> Void
        func run() async throws {
            do { try await cancelWhenGracefulShutdown(body) } catch is CancellationError {}
        }
    }
    var logger = Logger(label: "hearth-device")
    logger.logLevel = .warning
    try await ServiceGroup(services: [Work(body: work)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        .run()
}

struct ThermostatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "thermostat",
        abstract: "Run the reference thermostat: a simulated room, a heater and a setpoint.",
        discussion:
            "It regulates on the last setpoint whether or not the server is reachable, and obeys `setTarget` from its owner."
    )
    @OptionGroup var options: DeviceOptions

    func run() async throws {
        try await failing {
            guard let device = try await options.start(.thermostat) else { throw ExitCode(3) }
            line("thermostat \(device.serial) running; Ctrl-C stops it")
            try await runUntilSignalled { try await device.run() }
        }
    }
}

struct LockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lock",
        abstract: "Run the reference smart lock; its keypad is standard input.",
        discussion:
            "Type lock, unlock or toggle (the button) and Enter. Local use works offline; the events are queued and reported once the server is back."
    )
    @OptionGroup var options: DeviceOptions

    func run() async throws {
        try await failing {
            guard let device = try await options.start(.lock) else { throw ExitCode(3) }
            line("lock \(device.serial) running; type lock, unlock or toggle; Ctrl-C stops it")
            try await runUntilSignalled {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await device.run() }
                    group.addTask {
                        for await input in standardInputLines() {
                            let known = try await device.press(input)
                            line(
                                known
                                    ? "lock: \(await device.lockState.state.rawValue)"
                                    : "lock: unknown input (lock, unlock, toggle)")
                        }
                        try await Task.sleep(for: .seconds(86_400 * 365))
                    }
                    try await group.next()
                    group.cancelAll()
                }
            }
        }
    }
}

struct Fleet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Simulate many reference devices in one process (every bundle under a folder).",
        discussion:
            "Prints one JSON status line per second: devices connected, readings queued, resident memory and CPU time of this process. For load tests and the SDK footprint benchmark."
    )
    @Option(help: "A folder of device bundles (as `hearth factory provision --out` writes).") var bundles: String
    @Option(help: "Devices to run at most.") var count = 1000
    @Option(
        name: .customLong("hardware-key"),
        help:
            "The simulated device-unique key file every simulated device derives its own sealing key from (created 0600 if missing)."
    ) var hardwareKey: String
    @Option var mqtt: HostPort?
    @Option(name: .customLong("report-every")) var reportEvery: Double = 30
    @Option(name: .customLong("reconnect-window")) var reconnectWindow: Double = 30
    @Option(name: .customLong("startup-delay")) var startupDelay: Double = 10
    @Flag(
        name: .customLong("log-connects"),
        help:
            "Also print a JSON line each time a device connects: {\"event\":\"connected\",\"device\":N,\"at\":UNIX-SECONDS}."
    ) var logConnects = false

    func validate() throws {
        guard (1...100_000).contains(count) else { throw ValidationError("--count must be between 1 and 100000") }
    }

    func run() async throws {
        try await failing {
            let folder = URL(fileURLWithPath: bundles)
            let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted().prefix(max(1, count))
            var options = try DeviceOptions.parse([
                "--bundle", "-", "--report-every", "\(reportEvery)", "--reconnect-window", "\(reconnectWindow)",
                "--startup-delay", "\(startupDelay)",
            ])
            options.mqtt = mqtt
            let key = try DeviceUniqueKey.simulated(file: hardwareKey)
            raiseOpenFileLimit()
            var devices: [ReferenceDevice] = []
            let logConnects = self.logConnects
            for (i, name) in names.enumerated() {
                options.seed = UInt64(i + 1)
                devices.append(
                    try options.device(folder.appendingPathComponent(name), key: key) { event in
                        if logConnects, case .connected = event {
                            line(
                                #"{"event":"connected","device":\#(i),"at":\#(String(format: "%.3f", Date().timeIntervalSince1970))}"#
                            )
                        }
                    })
            }
            line(#"{"event":"started","devices":\#(devices.count)}"#)
            let all = devices
            try await runUntilSignalled {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for device in all { group.addTask { try await device.run(tickEvery: .seconds(5)) } }
                    group.addTask {
                        let start = Date()
                        while true {
                            try await Task.sleep(for: .seconds(1))
                            var connected = 0
                            var queued = 0
                            for d in all {
                                if await d.agent.isConnected { connected += 1 }
                                queued += await d.agent.queued.count
                            }
                            let usage = ProcessUsage.current()
                            line(
                                #"{"t":\#(Int(Date().timeIntervalSince(start))),"connected":\#(connected),"devices":\#(all.count),"queued":\#(queued),"rssMB":\#(usage.rssMB),"cpuSeconds":\#(usage.cpuSeconds)}"#
                            )
                        }
                    }
                    try await group.next()
                    group.cancelAll()
                }
            }
        }
    }
}

/// Standard input, line by line, read on a thread of its own (reads block).
func standardInputLines() -> AsyncStream<String> {
    let (stream, continuation) = AsyncStream<String>.makeStream()
    Thread.detachNewThread {
        while let text = readLine(strippingNewline: true) { continuation.yield(String(text.prefix(256))) }
        continuation.finish()
    }
    return stream
}

/// Up to the hard limit of open files: each simulated device holds a socket.
func raiseOpenFileLimit() {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    limit.rlim_cur = limit.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

/// This process's resident memory and CPU time, from /proc and getrusage.
enum ProcessUsage {
    static func current() -> (rssMB: Double, cpuSeconds: Double) {
        var usage = rusage()
        getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
        let cpu =
            Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(
                usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let kb =
            status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }.flatMap {
                Double($0.split(separator: " ").dropFirst().first ?? "")
            } ?? 0
        return ((kb / 1024 * 10).rounded() / 10, (cpu * 100).rounded() / 100)
    }
}

struct CSR: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "csr",
        abstract: "First boot without a factory key: make the device key here and print a certificate signing request.",
        discussion:
            "Give the CSR to `hearth factory sign-csr`, then copy the bundle it writes (bundle.json, device.pem, server-root-ca.pem, label.txt) into FOLDER. The private key never leaves FOLDER, where it is sealed."
    )
    @Option(help: "The device's folder (created 0700).") var folder: String
    @Option(name: .customLong("hardware-key"), help: "The device-unique key file (default: from /etc/machine-id).")
    var hardwareKey: String?

    func run() async throws {
        try await failing {
            let key = try hardwareKey.map { try DeviceUniqueKey.simulated(file: $0) } ?? DeviceUniqueKey.machineID()
            try FileManager.default.createDirectory(
                atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            print(try FileKeyStore(folder: URL(fileURLWithPath: folder), uniqueKey: key).generateKey(), terminator: "")
        }
    }
}

/// Verified boot alone (for tests and service): prints what booted, as JSON, and exits.
struct BootCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "boot",
        abstract: "Run verified boot on a device folder and print the outcome as JSON (no network).",
        discussion:
            "With --commit, a version on trial is committed at once (as if its health check passed). Exit 0 booted, 3 integrity failure."
    )
    @Option(help: "The device's folder.") var bundle: String
    @Flag(help: "Commit a version on trial.") var commit = false

    func run() async throws {
        try await failing {
            let bundle = try DeviceBundle.load(URL(fileURLWithPath: self.bundle))
            let updater = FirmwareUpdater(device: bundle.folder, model: bundle.model, fetcher: nil)
            let outcome = try await updater.boot()
            if commit, case .trial = outcome { try await updater.commit() }
            var o: [String: JSONValue] = ["outcome": .string(describe(outcome))]
            switch outcome {
            case .booted(let s, let f), .trial(let s, let f), .rolledBack(let s, let f, _), .fellBack(let s, let f, _):
                o["slot"] = .string(s.rawValue)
                o["version"] = .string(f.version.description)
            case .integrityFailure: o["version"] = .null
            }
            line(JSONValue.object(o).text)
            if case .integrityFailure = outcome { throw ExitCode(3) }
        }
    }
}

/// One update, without MQTT: verified boot, then the TUF workflow and the A/B install of a
/// target, printing each phase. For tests (power loss) and manual service.
struct UpdateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "update",
        abstract:
            "Install a target from the update repository into the inactive slot and switch to it (the next boot runs it on trial).",
        discussion:
            "Exit 0 switched, 2 refused (the reason printed: which attack it stopped), 3 integrity failure at boot."
    )
    @Option(help: "The device's folder.") var bundle: String
    @Option(help: "The target to install, MODEL-VERSION.img.") var target: String
    @Option(help: "The update repository's base URL. Default: the bundle's server URL with /tuf.") var repository:
        String?

    func run() async throws {
        try await failing {
            let bundle = try DeviceBundle.load(URL(fileURLWithPath: self.bundle))
            var options = try DeviceOptions.parse(["--bundle", self.bundle])
            options.repository = repository
            let updater = try options.updater(bundle)
            let outcome = try await updater.boot()
            line("boot: \(describe(outcome))")
            if case .integrityFailure = outcome { throw ExitCode(3) }
            do {
                let start = Date()
                let installed = try await updater.install(target) {
                    line("phase: \($0.rawValue) after \(Int(Date().timeIntervalSince(start) * 1000)) ms")
                }
                line("switched: \(installed.version) after \(Int(Date().timeIntervalSince(start) * 1000)) ms")
            } catch let refusal as UpdateRefusal {
                line("refused: \(refusal.attack): \(refusal)")
                throw ExitCode(2)
            }
        }
    }
}

/// Many devices download one image at once (the download-throughput benchmark).
struct DownloadBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "download-bench",
        abstract:
            "N concurrent HTTPS downloads of one repository file, as N devices would make; prints one JSON line with the aggregate throughput."
    )
    @Option(help: "The update repository's base URL, e.g. https://127.0.0.1:8443/tuf.") var repository: String
    @Option(help: "The deployment root CA (PEM) that the server's certificate chains to.") var ca: String
    @Option(help: "The file under the repository, e.g. targets/SHA256.NAME.") var path: String
    @Option(help: "Concurrent downloads.") var clients = 1000

    func run() async throws {
        try await failing {
            guard (1...20_000).contains(clients), let base = URL(string: repository) else {
                throw DeviceError("--clients 1…20000 and an https --repository")
            }
            raiseOpenFileLimit()
            let fetcher = try HTTPSUpdateFetcher(
                base: base, trustRootsPEM: try String(contentsOfFile: ca, encoding: .utf8), timeout: .seconds(600))
            let start = Date()
            let (bytes, failures) = try await withThrowingTaskGroup(of: Int?.self) { group in
                for _ in 0..<clients { group.addTask { try? await fetcher.drain(path, limit: 1 << 30) } }
                var total = 0
                var failed = 0
                for try await n in group { if let n { total += n } else { failed += 1 } }
                return (total, failed)
            }
            let seconds = Date().timeIntervalSince(start)
            line(
                #"{"clients":\#(clients),"failed":\#(failures),"bytes":\#(bytes),"seconds":\#(String(format: "%.3f", seconds)),"MBps":\#(String(format: "%.1f", Double(bytes) / seconds / 1e6))}"#
            )
        }
    }
}

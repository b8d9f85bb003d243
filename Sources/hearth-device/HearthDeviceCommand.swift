import ArgumentParser
import Foundation
import HearthCore
import HearthDevice
import HearthReferenceDevices
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
        subcommands: [ThermostatCommand.self, LockCommand.self, Fleet.self, CSR.self]
    )
}

/// What every device command shares.
struct DeviceOptions: ParsableArguments {
    @Option(help: "The device's folder (a factory bundle).")
    var bundle: String

    @Option(help: "The gateway's MQTT address, HOST:PORT. Default: the host of the server URL in the bundle, port 8883.")
    var mqtt: HostPort?

    @Option(name: .customLong("hardware-key"), help: "A file holding the device-unique key (32+ bytes, mode 0600; created if missing) that seals the device key. Default: derived from /etc/machine-id.")
    var hardwareKey: String?

    @Option(name: .customLong("report-every"), help: "Seconds between periodic readings.")
    var reportEvery: Double = 10

    @Option(name: .customLong("reconnect-window"), help: "Seconds over which the first reconnect after a lost connection is spread (full jitter; doubles per failure up to 10 minutes).")
    var reconnectWindow: Double = 30

    @Option(name: .customLong("startup-delay"), help: "Longest random wait before the first connection after power-on, in seconds.")
    var startupDelay: Double = 10

    @Option(name: .customLong("queue-capacity"), help: "Readings the offline queue keeps at most; beyond it the oldest are dropped, counted and reported.")
    var queueCapacity = 10_000

    @Option(help: "Seed of the simulated room and of the reconnect jitter (random if absent).")
    var seed: UInt64?

    @Flag(help: "Print each connection event.")
    var verbose = false

    func validate() throws {
        guard reportEvery >= 0.01, reportEvery <= 86_400 else { throw ValidationError("--report-every must be between 0.01 and 86400 seconds") }
        guard reconnectWindow > 0, reconnectWindow <= 3600, startupDelay >= 0, startupDelay <= 3600 else { throw ValidationError("--reconnect-window and --startup-delay must be between 0 and 3600 seconds") }
        guard (1...1_000_000).contains(queueCapacity) else { throw ValidationError("--queue-capacity must be between 1 and 1000000") }
    }

    func uniqueKey() throws -> DeviceUniqueKey {
        if let hardwareKey { return try DeviceUniqueKey.simulated(file: hardwareKey) }
        return try DeviceUniqueKey.machineID()
    }

    /// The device in `--bundle`, which must be a `kind`; prints its events with `--verbose`.
    func start(_ kind: ReferenceDevice.Kind) throws -> ReferenceDevice {
        let verbose = self.verbose
        let device = try device(URL(fileURLWithPath: bundle), key: try uniqueKey()) { if verbose { line(describe($0)) } }
        guard device.kind == kind else { throw DeviceError("the bundle \(bundle) is a \(device.kind.rawValue); run `hearth-device \(device.kind.rawValue)`") }
        return device
    }

    func device(_ folder: URL, key: DeviceUniqueKey, onEvent: @escaping @Sendable (DeviceEvent) -> Void) throws -> ReferenceDevice {
        let bundle = try DeviceBundle.load(folder)
        let seed = self.seed ?? UInt64.random(in: .min ... .max)
        return try ReferenceDevice(bundle: bundle, uniqueKey: key, reportEvery: reportEvery, seed: seed, configure: { c in
            if let mqtt { c.host = mqtt.host; c.port = mqtt.port }
            c.reconnect = ReconnectPolicy(startupDelay: startupDelay, window: reconnectWindow)
            c.queue.capacity = queueCapacity
        }, onEvent: onEvent)
    }
}

func describe(_ event: DeviceEvent) -> String {
    switch event {
    case .waiting(let s): "waiting \(String(format: "%.1f", s)) s before connecting"
    case .connected(let v, let resumed): "connected (MQTT \(v == .v5 ? "5.0" : "3.1.1"), session \(resumed ? "resumed" : "new"))"
    case .connectFailed(let why): "connect failed: \(why)"
    case .disconnected(let why): "disconnected: \(why)"
    case .delivered(let seq): "delivered reading \(seq)"
    case .refusedByServer(let seq, let why): "server refused reading \(seq): \(why)"
    case .command(let name, let status, let detail): "command \(name): \(status.rawValue)\(detail.map { " (\($0))" } ?? "")"
    }
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
    try await ServiceGroup(services: [Work(body: work)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger).run()
}

struct ThermostatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "thermostat",
        abstract: "Run the reference thermostat: a simulated room, a heater and a setpoint.",
        discussion: "It regulates on the last setpoint whether or not the server is reachable, and obeys `setTarget` from its owner."
    )
    @OptionGroup var options: DeviceOptions

    func run() async throws {
        try await failing {
            let device = try options.start(.thermostat)
            line("thermostat \(device.serial) running; Ctrl-C stops it")
            try await runUntilSignalled { try await device.run() }
        }
    }
}

struct LockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lock",
        abstract: "Run the reference smart lock; its keypad is standard input.",
        discussion: "Type lock, unlock or toggle (the button) and Enter. Local use works offline; the events are queued and reported once the server is back."
    )
    @OptionGroup var options: DeviceOptions

    func run() async throws {
        try await failing {
            let device = try options.start(.lock)
            line("lock \(device.serial) running; type lock, unlock or toggle; Ctrl-C stops it")
            try await runUntilSignalled {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await device.run() }
                    group.addTask {
                        for await input in standardInputLines() {
                            let known = try await device.press(input)
                            line(known ? "lock: \(await device.lockState.state.rawValue)" : "lock: unknown input (lock, unlock, toggle)")
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
        discussion: "Prints one JSON status line per second: devices connected, readings queued, resident memory and CPU time of this process. For load tests and the SDK footprint benchmark."
    )
    @Option(help: "A folder of device bundles (as `hearth factory provision --out` writes).") var bundles: String
    @Option(help: "Devices to run at most.") var count = 1000
    @Option(name: .customLong("hardware-key"), help: "The simulated device-unique key file every simulated device derives its own sealing key from (created 0600 if missing).") var hardwareKey: String
    @Option var mqtt: HostPort?
    @Option(name: .customLong("report-every")) var reportEvery: Double = 30
    @Option(name: .customLong("reconnect-window")) var reconnectWindow: Double = 30
    @Option(name: .customLong("startup-delay")) var startupDelay: Double = 10
    @Flag(name: .customLong("log-connects"), help: "Also print a JSON line each time a device connects: {\"event\":\"connected\",\"device\":N,\"at\":UNIX-SECONDS}.") var logConnects = false

    func validate() throws {
        guard (1...100_000).contains(count) else { throw ValidationError("--count must be between 1 and 100000") }
    }

    func run() async throws {
        try await failing {
            let folder = URL(fileURLWithPath: bundles)
            let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted().prefix(max(1, count))
            var options = try DeviceOptions.parse(["--bundle", "-", "--report-every", "\(reportEvery)", "--reconnect-window", "\(reconnectWindow)", "--startup-delay", "\(startupDelay)"])
            options.mqtt = mqtt
            let key = try DeviceUniqueKey.simulated(file: hardwareKey)
            raiseOpenFileLimit()
            var devices: [ReferenceDevice] = []
            let logConnects = self.logConnects
            for (i, name) in names.enumerated() {
                options.seed = UInt64(i + 1)
                devices.append(try options.device(folder.appendingPathComponent(name), key: key) { event in
                    if logConnects, case .connected = event {
                        line(#"{"event":"connected","device":\#(i),"at":\#(String(format: "%.3f", Date().timeIntervalSince1970))}"#)
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
                            var connected = 0, queued = 0
                            for d in all {
                                if await d.agent.isConnected { connected += 1 }
                                queued += await d.agent.queued.count
                            }
                            let usage = ProcessUsage.current()
                            line(#"{"t":\#(Int(Date().timeIntervalSince(start))),"connected":\#(connected),"devices":\#(all.count),"queued":\#(queued),"rssMB":\#(usage.rssMB),"cpuSeconds":\#(usage.cpuSeconds)}"#)
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
        let cpu = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let kb = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }.flatMap { Double($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
        return ((kb / 1024 * 10).rounded() / 10, (cpu * 100).rounded() / 100)
    }
}

struct CSR: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "csr",
        abstract: "First boot without a factory key: make the device key here and print a certificate signing request.",
        discussion: "Give the CSR to `hearth factory sign-csr`, then copy the bundle it writes (bundle.json, device.pem, server-root-ca.pem, label.txt) into FOLDER. The private key never leaves FOLDER, where it is sealed."
    )
    @Option(help: "The device's folder (created 0700).") var folder: String
    @Option(name: .customLong("hardware-key"), help: "The device-unique key file (default: from /etc/machine-id).") var hardwareKey: String?

    func run() async throws {
        try await failing {
            let key = try hardwareKey.map { try DeviceUniqueKey.simulated(file: $0) } ?? DeviceUniqueKey.machineID()
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            print(try FileKeyStore(folder: URL(fileURLWithPath: folder), uniqueKey: key).generateKey(), terminator: "")
        }
    }
}



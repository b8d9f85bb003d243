import Foundation
import HearthCore
import HearthDevice
import HearthUpdate
import Synchronization

/// A reference device: the thermostat or the lock, wired to a ``DeviceAgent`` through the SDK's
/// public API only. Its local loop (``tick()``, ``press(_:)``) never waits for the network.
public actor ReferenceDevice {
    public enum Kind: String, Sendable, CaseIterable {
        case thermostat, lock
    }

    public nonisolated let kind: Kind
    public nonisolated let agent: DeviceAgent
    public nonisolated let serial: DeviceSerial
    let clock: any TimeSource
    let reportEvery: TimeInterval
    var thermostat: Thermostat
    var lock = SmartLock()
    var lastReport: Date?
    /// The owner's settings (setpoint, bolt), kept on the device's storage so that a restart (a
    /// firmware switch-over, a power cut) comes back as the owner left it (issue 13).
    public nonisolated let settingsURL: URL

    /// - Parameters:
    ///   - bundle: the device's folder (factory bundle plus its own state).
    ///   - uniqueKey: seals the device key (see ``DeviceUniqueKey``).
    ///   - configure: adjusts the agent's configuration (server address, reconnect policy…).
    ///   - reportEvery: seconds between periodic readings.
    public init(
        bundle: DeviceBundle, uniqueKey: DeviceUniqueKey, clock: any TimeSource = SystemTimeSource(),
        reportEvery: TimeInterval = 10, seed: UInt64 = 1,
        configure: (inout DeviceConfiguration) -> Void = { _ in },
        onEvent: @escaping @Sendable (DeviceEvent) -> Void = { _ in },
        onUpdateOffer: @escaping @Sendable (UpdateOffer) async -> Void = { _ in }
    ) throws {
        guard let kind = [Thermostat.model: Kind.thermostat, SmartLock.model: .lock][bundle.model.rawValue],
            let model = ProductModel.demoModels().first(where: { $0.id == bundle.model })
        else { throw DeviceError("this firmware runs \(Thermostat.model) or \(SmartLock.model), not \(bundle.model)") }
        var configuration = DeviceConfiguration(
            serial: bundle.serial, model: model, host: bundle.server.host ?? "127.0.0.1", port: 8883)
        configuration.seed = seed
        configure(&configuration)
        let target = CommandTarget()
        agent = try DeviceAgent(
            configuration: configuration, keyStore: try bundle.keyStore(uniqueKey: uniqueKey),
            trustRootsPEM: bundle.trustRootsPEM,
            queuePath: bundle.queuePath, clock: clock, onEvent: onEvent, onUpdateOffer: onUpdateOffer
        ) { command in
            await target.device.withLock { $0.device }?.handle(command) ?? .failed("starting up")
        }
        self.kind = kind
        serial = bundle.serial
        self.clock = clock
        self.reportEvery = reportEvery
        settingsURL = bundle.folder.appendingPathComponent("settings.json")
        let saved = Self.loadSettings(settingsURL)
        var savedTarget = 21.0
        if case .number(let t)? = saved["target"], t.isFinite, (5...30).contains(t) { savedTarget = t }
        thermostat = Thermostat(room: RoomSimulation(seed: seed), target: savedTarget, now: clock.now())
        if case .string(let s)? = saved["state"], let state = SmartLock.State(rawValue: s), state != .jammed {
            lock = SmartLock(state: state)
        }
        target.device.withLock { $0.device = self }
    }

    /// The local control loop, one step: run the room and the thermostat up to now, and queue a
    /// reading when one is due.
    public func tick() async throws {
        if kind == .thermostat { thermostat.advance(to: clock.now()) }
        if let last = lastReport, clock.now().timeIntervalSince(last) < reportEvery { return }
        try await report()
    }

    /// A local event on the lock's keypad or button (`lock`, `unlock`, `toggle`); queued as a
    /// reading. Returns false for an input the lock does not know.
    @discardableResult
    public func press(_ input: String) async throws -> Bool {
        guard kind == .lock, lock.press(input) else { return false }
        saveSettings()
        try await report()
        return true
    }

    public var thermostatState: Thermostat { thermostat }
    public var lockState: SmartLock { lock }

    func handle(_ command: DeviceCommand) async -> CommandReply {
        let reply = kind == .thermostat ? thermostat.apply(command) : lock.apply(command)
        if reply.status == .ok {
            saveSettings()
            try? await report()
        }
        return reply
    }

    /// Factory reset (EN 303 645 5.11-1, the device's long press): the owner's settings go back to
    /// the factory's (setpoint 21 °C; the lock's bolt stays where it physically is, but its saved
    /// state is erased), the agent erases its queue and command history and tells the server, which
    /// ends the claim. Identity and firmware stay. Works offline. Returns the reset's id.
    @discardableResult
    public func factoryReset() async throws -> String {
        try? FileManager.default.removeItem(at: settingsURL)
        if kind == .thermostat {
            thermostat = Thermostat(room: thermostat.room, target: 21, now: clock.now())
        }
        lastReport = nil
        return try await agent.factoryReset()
    }

    /// What survives a restart: the setpoint or the bolt's state. Written atomically (temporary
    /// file, fsync, rename), before the command is answered ok.
    func saveSettings() {
        let settings: JSONValue =
            kind == .thermostat ? ["target": .number(thermostat.target)] : ["state": .string(lock.state.rawValue)]
        try? FirmwareUpdater.writeAtomically(Data(settings.text.utf8), to: settingsURL)
    }

    /// The saved settings; empty when there are none or the file is unreadable (factory state).
    static func loadSettings(_ url: URL) -> [String: JSONValue] {
        guard let data = try? Data(contentsOf: url), data.count < 4096,
            case .object(let o)? = try? JSONValue.parse(Array(data))
        else { return [:] }
        return o
    }

    func report() async throws {
        lastReport = clock.now()
        try await agent.report(kind == .thermostat ? thermostat.reading : lock.reading)
    }

    /// Runs the agent and the local loop (a tick a second, or per reading if that is more often)
    /// until cancelled.
    public func run() async throws {
        try await run(tickEvery: .seconds(min(1, reportEvery)))
    }

    /// Runs the agent and the local loop (a tick every `tickEvery`) until cancelled.
    public func run(tickEvery: Duration) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.agent.run() }
            group.addTask {
                while !Task.isCancelled {
                    try await self.tick()
                    try await Task.sleep(for: tickEvery)
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }
}

/// Lets the agent's command handler reach the device that owns the agent (weakly: no cycle).
final class CommandTarget: Sendable {
    struct Reference {
        weak var device: ReferenceDevice?
    }

    let device = Mutex(Reference())
}

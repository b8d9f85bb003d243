import Foundation
import HearthCore
import HearthCrypto
import HearthStorage
import Logging
import ServiceLifecycle
import Synchronization

/// The link between the nodes sharing one database (see ``ClusterStore``):
/// - records which devices this node holds a connection to, and says it is alive;
/// - closes a connection here when its device connected to another node since (0x8E);
/// - sends a device on another node its commands: queued for that node, answered through the
///   table, with the same outcomes (and so the same 409/504) as for a device on this node;
/// - runs the commands other nodes queued for devices here;
/// - moves a device's MQTT session to this node when it is needed here (``SessionHandoff``): the
///   node that kept it is asked through the table to write it to the store and let it go.
///
/// Nodes poll the tables (every `interval`) instead of waiting on notifications: a poll misses
/// nothing across a node's or the database's restart, and costs two indexed reads per interval.
public final class ClusterLink: Service, ConnectionRecorder, DeviceCommandChannel, SessionHandoff {
    let store: any ClusterStore
    let node: String
    let local: any DeviceCommandChannel
    let takenOver: @Sendable (DeviceSerial) -> Void
    let interval: Duration
    let logger: Logger
    let waiting = Mutex(Waiting())
    /// A node not heard from for this long holds no device.
    static let aliveWithin: TimeInterval = 10
    /// How long a node waits for another to hand a session over before it uses what is stored
    /// (a live node answers within a round or two of its poll).
    static let handOverWithin: TimeInterval = 2
    /// A node that kept a session and was heard from this recently is asked to hand it over; one
    /// silent for longer (heartbeats come every 2 s) is taken to have died: devices leaving a
    /// dead node do not each wait for it.
    static let keeperAliveWithin: TimeInterval = 3

    public init(
        store: any ClusterStore, node: String = Node.id, local: any DeviceCommandChannel,
        takenOver: @escaping @Sendable (DeviceSerial) -> Void, interval: Duration = .milliseconds(100),
        logger: Logger = Logger(label: "hearth.cluster")
    ) {
        self.store = store
        self.node = node
        self.local = local
        self.takenOver = takenOver
        self.interval = interval
        self.logger = logger
    }

    // MARK: ConnectionRecorder

    public func connected(_ serial: DeviceSerial, since: Date) async {
        do { try await store.connected(serial, node: node, since: since) } catch {
            logger.warning("could not record a device connection", metadata: ["error": "\(error)"])
        }
    }

    public func disconnected(_ serial: DeviceSerial, since: Date) async {
        do { try await store.disconnected(serial, node: node, since: since) } catch {
            logger.warning("could not record a device disconnection", metadata: ["error": "\(error)"])
        }
    }

    // MARK: DeviceCommandChannel

    public func send(command: String, parameters: [String: JSONValue], to serial: DeviceSerial, timeout: Duration)
        async -> CommandOutcome
    {
        let here = await local.send(command: command, parameters: parameters, to: serial, timeout: timeout)
        guard here == .offline else { return here }
        let now = Date()
        guard let holder = try? await store.holder(serial, aliveSince: now.addingTimeInterval(-Self.aliveWithin)),
            holder.node != node
        else { return .offline }
        let relayed = RelayedCommand(
            id: SecureToken.generate(), serial: serial, command: command, parameters: JSONValue.object(parameters).text,
            deadline: now.addingTimeInterval(timeout.timeInterval))
        do { try await store.relay(relayed, to: holder.node) } catch {
            logger.warning("could not relay a command", metadata: ["error": "\(error)"])
            return .timedOut
        }
        // The holder answers by the deadline (it times the device out itself); a little longer
        // for its last write to land.
        let outcome = await answer(to: relayed.id, by: relayed.deadline.addingTimeInterval(1))
        try? await store.forget(relayed.id)
        return outcome ?? .timedOut
    }

    // MARK: Answers to what this node relayed

    struct Waiting: Sendable {
        var answers: [String: (deadline: Date, answer: CheckedContinuation<CommandOutcome?, Never>)] = [:]
        var stopped = false
    }

    /// Waits for the answer to relayed request `id`: nil if none came by `deadline`. The answers
    /// are read in ``run()``'s rounds, one read for every request this node waits on (a node
    /// dying with 10,000 devices has them all ask its successor at once).
    func answer(to id: String, by deadline: Date) async -> CommandOutcome? {
        await withCheckedContinuation { answer in
            let stopped = waiting.withLock { w in
                if !w.stopped { w.answers[id] = (deadline, answer) }
                return w.stopped
            }
            if stopped { answer.resume(returning: nil) }
        }
    }

    /// Hands out the answers that came, and nil to those waiting past their deadline (or all,
    /// once the link stops).
    func collectAnswers(now: Date, stopping: Bool = false) async {
        let ids = waiting.withLock { w in
            w.stopped = w.stopped || stopping
            return Array(w.answers.keys)
        }
        guard !ids.isEmpty else { return }
        var answered: [String: CommandOutcome] = [:]
        if !stopping {
            do { answered = try await store.outcomes(ids) } catch {
                logger.warning("answers from other nodes not read", metadata: ["error": "\(error)"])
            }
        }
        let done = waiting.withLock { w in
            var done: [(CheckedContinuation<CommandOutcome?, Never>, CommandOutcome?)] = []
            for (id, entry) in w.answers where answered[id] != nil || entry.deadline <= now || w.stopped {
                done.append((entry.answer, answered[id]))
                w.answers[id] = nil
            }
            return done
        }
        for (answer, outcome) in done { answer.resume(returning: outcome) }
    }

    // MARK: SessionHandoff

    /// Records this node as the session's keeper; a live node that kept it is asked (as the
    /// control `$release`) to write it to the store and let it go, and waited for up to
    /// ``handOverWithin``. A node that died kept nothing newer than what it wrote.
    public func handOver(_ serial: DeviceSerial) async throws -> Bool {
        let now = Date()
        guard
            let previous = try await store.keepSession(
                serial, node: node, aliveSince: now.addingTimeInterval(-Self.keeperAliveWithin))
        else { return false }
        guard previous.alive else { return true }
        let relayed = RelayedCommand(
            id: SecureToken.generate(), serial: serial, command: "$release", parameters: "{}",
            deadline: now.addingTimeInterval(Self.handOverWithin))
        try await store.relay(relayed, to: previous.node)
        let released = await answer(to: relayed.id, by: relayed.deadline) != nil
        try? await store.forget(relayed.id)
        if !released {
            logger.warning(
                "a node did not hand a device's session over in time; using what it stored",
                metadata: ["serial": "\(serial)", "node": "\(previous.node)"])
        }
        return true
    }

    // MARK: What the server tells a device's connection, wherever it is

    /// The connection here (if any) hears it at once; the node holding the device, if another,
    /// hears it through the table as a control (a name no command can have: `$…`). True if
    /// another node holds the device.
    @discardableResult
    func control(_ name: String, _ parameters: [String: JSONValue], _ serial: DeviceSerial) async -> Bool {
        let now = Date()
        guard let holder = try? await store.holder(serial, aliveSince: now.addingTimeInterval(-Self.aliveWithin)),
            holder.node != node
        else { return false }
        let relayed = RelayedCommand(
            id: SecureToken.generate(), serial: serial, command: name, parameters: JSONValue.object(parameters).text,
            deadline: now.addingTimeInterval(30))
        do { try await store.relay(relayed, to: holder.node) } catch {
            logger.warning(
                "could not relay to the device's node", metadata: ["control": "\(name)", "error": "\(error)"])
        }
        return true
    }

    /// Applies a control another node relayed to the connection here.
    func apply(_ relayed: RelayedCommand) async {
        guard case .object(let p)? = try? JSONValue.parse(Array(relayed.parameters.utf8)) else { return }
        let serial = relayed.serial
        switch relayed.command {
        case "$quarantine":
            var reason: String?
            if case .string(let text)? = p["reason"] { reason = text }
            await (local as? any DeviceQuarantining)?.quarantineChanged(serial, reason: reason)
        case "$policy":
            if let json = p["policy"], let policy = try? DevicePolicy(payload: json.serialized()) {
                await (local as? any DevicePolicyChannel)?.policyChanged(serial, policy)
            }
        case "$disconnect":
            if case .string(let reason)? = p["reason"] {
                await (local as? any DeviceDisconnecting)?.disconnect(serial, reason: reason)
            }
        case "$rekey":
            if case .string(let id)? = p["id"] { await (local as? any DeviceRekeying)?.requestRekey(serial, id: id) }
        case "$release":
            await (local as? any SessionReleasing)?.release(serial)
        default: break
        }
    }

    // MARK: Service

    public func run() async throws {
        // Whoever still waits for another node hears nil once the link stops.
        do { try await rounds() } catch {
            await collectAnswers(now: Date(), stopping: true)
            throw error
        }
        await collectAnswers(now: Date(), stopping: true)
    }

    private func rounds() async throws {
        try await cancelWhenGracefulShutdown {
            try await withThrowingDiscardingTaskGroup { group in
                var checkedUntil = Date()
                var heartbeat = Date.distantPast
                while !Task.isCancelled {
                    let now = Date()
                    do {
                        if now.timeIntervalSince(heartbeat) >= 2 {
                            try await self.store.heartbeat(self.node, at: now)
                            heartbeat = now
                        }
                        // Connections taken over elsewhere since the last look (a few seconds'
                        // margin for the nodes' clocks); closing one no longer here does nothing.
                        for moved in try await self.store.movedAway(
                            from: self.node, since: checkedUntil.addingTimeInterval(-5))
                        {
                            self.takenOver(moved.serial)
                        }
                        checkedUntil = now
                        for relayed in try await self.store.takeRelayed(for: self.node, limit: 1000) {
                            group.addTask { await self.carryOut(relayed) }
                        }
                    } catch {
                        self.logger.warning("cluster tables not read", metadata: ["error": "\(error)"])
                    }
                    await self.collectAnswers(now: Date())
                    try? await Task.sleep(for: self.interval)
                }
            }
        }
    }

    /// Runs a command another node relayed for a device here, and records its outcome (a
    /// control is applied, and forgotten: nobody waits for it; a release is answered, its node
    /// waits for it).
    func carryOut(_ relayed: RelayedCommand) async {
        if relayed.command == "$release" {
            await apply(relayed)
            try? await store.answer(relayed.id, .answered(status: "ok", detail: nil))
            return
        }
        if relayed.command.hasPrefix("$") {
            await apply(relayed)
            try? await store.forget(relayed.id)
            return
        }
        let left = relayed.deadline.timeIntervalSinceNow
        var outcome = CommandOutcome.timedOut
        if left > 0, case .object(let parameters)? = try? JSONValue.parse(Array(relayed.parameters.utf8)) {
            outcome = await local.send(
                command: relayed.command, parameters: parameters, to: relayed.serial,
                timeout: .milliseconds(Int64(left * 1000)))
        }
        do { try await store.answer(relayed.id, outcome) } catch {
            logger.warning("could not record a relayed command's outcome", metadata: ["error": "\(error)"])
        }
    }
}

extension ClusterLink: DeviceQuarantining, DevicePolicyChannel, DeviceDisconnecting, DeviceRekeying, DevicePresence {
    public func quarantineChanged(_ serial: DeviceSerial, reason: String?) async {
        await (local as? any DeviceQuarantining)?.quarantineChanged(serial, reason: reason)
        await control("$quarantine", ["reason": reason.map(JSONValue.string) ?? .null], serial)
    }

    public func policyChanged(_ serial: DeviceSerial, _ policy: DevicePolicy) async {
        await (local as? any DevicePolicyChannel)?.policyChanged(serial, policy)
        await control("$policy", ["policy": policy.json], serial)
    }

    public func disconnect(_ serial: DeviceSerial, reason: String) async {
        await (local as? any DeviceDisconnecting)?.disconnect(serial, reason: reason)
        await control("$disconnect", ["reason": .string(reason)], serial)
    }

    /// A device connected to another node gets the request there; otherwise it waits in the
    /// device's session, which this node takes over to store it (and hands on when the device
    /// connects elsewhere).
    public func requestRekey(_ serial: DeviceSerial, id: String) async {
        guard await !control("$rekey", ["id": .string(id)], serial) else { return }
        await (local as? any DeviceRekeying)?.requestRekey(serial, id: id)
    }

    /// Every alive node's connections, from the shared table (each node records its own); this
    /// node's own list if the database cannot be read.
    public func connections(limit: Int) async -> LiveConnections {
        let aliveSince = Date().addingTimeInterval(-Self.aliveWithin)
        do {
            async let newest = store.connections(aliveSince: aliveSince, limit: limit)
            async let counts = store.connectionCounts(aliveSince: aliveSince)
            return LiveConnections(
                newest: try await newest.map {
                    LiveConnections.Connection(serial: $0.serial, node: $0.node, since: $0.since)
                },
                perNode: Dictionary(uniqueKeysWithValues: try await counts.map { (Optional($0.key), $0.value) }))
        } catch {
            logger.warning("could not read the cluster's connections", metadata: ["error": "\(error)"])
            var here = await (local as? any DevicePresence)?.connections(limit: limit) ?? LiveConnections()
            here.newest = here.newest.map { LiveConnections.Connection(serial: $0.serial, node: node, since: $0.since) }
            here.perNode = here.perNode.values.first.map { [node: $0] } ?? [:]
            return here
        }
    }

    /// Connected here, or to another node that is alive.
    public func connected(_ serials: [DeviceSerial]) async -> Set<DeviceSerial> {
        let here = await (local as? any DevicePresence)?.connected(serials) ?? []
        let elsewhere = serials.filter { !here.contains($0) }
        guard !elsewhere.isEmpty else { return here }
        let aliveSince = Date().addingTimeInterval(-Self.aliveWithin)
        return here.union((try? await store.held(elsewhere, aliveSince: aliveSince)) ?? [])
    }
}

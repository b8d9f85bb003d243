import Foundation
import HearthCore

/// A command relayed to the node holding a device's connection, and its outcome once answered.
public struct RelayedCommand: Sendable, Equatable {
    public let id: String
    public let serial: DeviceSerial
    public let command: String
    /// The parameters as JSON text (validated against the model by the node that took the request).
    public let parameters: String
    public let deadline: Date

    public init(id: String, serial: DeviceSerial, command: String, parameters: String, deadline: Date) {
        self.id = id
        self.serial = serial
        self.command = command
        self.parameters = parameters
        self.deadline = deadline
    }
}

/// What nodes sharing one database tell each other: which node holds each device's connection
/// (and since when), and commands for a device on another node. Only a shared database needs it
/// (PostgreSQL); one node on SQLite has every connection itself.
///
/// Nodes poll it (see `ClusterLink`): a table survives a node's or the database's restart with
/// nothing missed, which a notification channel does not.
public protocol ClusterStore: Sendable {
    /// `node` holds the device's connection since `since` — unless a later connection (elsewhere)
    /// was already recorded.
    func connected(_ serial: DeviceSerial, node: String, since: Date) async throws
    /// The connection `node` recorded at `since` ended (a later one, here or elsewhere, stays).
    func disconnected(_ serial: DeviceSerial, node: String, since: Date) async throws
    /// `node` is alive at `at` (each node says so every few seconds).
    func heartbeat(_ node: String, at: Date) async throws
    /// The node holding the device's connection, and since when, if that node was alive at or
    /// after `aliveSince` (a node that died holds nothing).
    func holder(_ serial: DeviceSerial, aliveSince: Date) async throws -> (node: String, since: Date)?
    /// Which of `serials` a node alive at or after `aliveSince` holds (one query for a page of devices).
    func held(_ serials: [DeviceSerial], aliveSince: Date) async throws -> Set<DeviceSerial>
    /// Devices connected to another node than `node` at or after `since`: connections `node`
    /// holds for them were taken over.
    func movedAway(from node: String, since: Date) async throws -> [(serial: DeviceSerial, since: Date)]
    /// The live connections of nodes alive at or after `aliveSince`, for the operator console (at
    /// most `limit`, newest first).
    func connections(aliveSince: Date, limit: Int) async throws -> [(serial: DeviceSerial, node: String, since: Date)]
    /// How many live connections each node alive at or after `aliveSince` holds.
    func connectionCounts(aliveSince: Date) async throws -> [String: Int]

    /// Makes `node` the keeper of the device's MQTT session (the one node that holds it in memory)
    /// and returns the previous keeper if another, with whether it was alive at or after
    /// `aliveSince`: that node must hand the session over first (see `SessionHandoff`).
    func keepSession(_ serial: DeviceSerial, node: String, aliveSince: Date) async throws -> (
        node: String, alive: Bool
    )?

    /// Queues a command for the node holding the device.
    func relay(_ command: RelayedCommand, to node: String) async throws
    /// Commands queued for `node` and not taken yet; marks them taken.
    func takeRelayed(for node: String, limit: Int) async throws -> [RelayedCommand]
    /// Records a relayed command's outcome.
    func answer(_ id: String, _ outcome: CommandOutcome) async throws
    /// The outcomes of those of the relayed commands `ids` that were answered (one read for every
    /// command a node waits on); an answered or abandoned command is deleted by ``forget(_:)``.
    func outcomes(_ ids: [String]) async throws -> [String: CommandOutcome]
    func forget(_ id: String) async throws
}

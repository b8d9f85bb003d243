import Foundation
import HearthCore

/// A stored reading with its position, which pages through a device's history.
public struct TelemetryRecord: Sendable, Equatable {
    /// Increases with every stored reading; the paging cursor.
    public let position: Int64
    public let reading: TelemetryReading

    public init(position: Int64, reading: TelemetryReading) {
        self.position = position
        self.reading = reading
    }
}

/// A slice of time in a reading's history: how many numeric values, and their range and mean.
public struct TelemetryBucket: Sendable, Equatable {
    public let start: Date
    public let count: Int
    public let min: Double
    public let max: Double
    public let mean: Double

    public init(start: Date, count: Int, min: Double, max: Double, mean: Double) {
        self.start = start
        self.count = count
        self.min = min
        self.max = max
        self.mean = mean
    }
}

/// A refused payload, as counted: never the payload itself.
public struct TelemetryRefusal: Sendable, Equatable {
    public let serial: DeviceSerial
    public let kind: TelemetryRejection
    public let at: Date

    public init(serial: DeviceSerial, kind: TelemetryRejection, at: Date) {
        self.serial = serial
        self.kind = kind
        self.at = at
    }
}

/// How often one device sent one kind of invalid payload (input for security monitoring).
public struct RefusalCount: Sendable, Equatable {
    public let kind: TelemetryRejection
    public let count: Int
    public let lastAt: Date

    public init(kind: TelemetryRejection, count: Int, lastAt: Date) {
        self.kind = kind
        self.count = count
        self.lastAt = lastAt
    }
}

/// Where device readings go. Separate from ``HearthStore`` because its load is of another kind
/// (many small appends, group-committed) and a deployment may put it on its own disk or database.
///
/// Rules every driver keeps (checked by the contract suite):
/// - `append` is one durable transaction: when it returns, every reading in it survives a crash;
/// - a reading whose (serial, sequence) is already stored is skipped, not duplicated;
/// - reads return readings in the order they were received (the server's clock), then stored;
///   a page's cursor still works when its reading has been deleted since.
public protocol TelemetryStore: Sendable {
    /// Makes readings ready to store: seals their values under the keys in force now. No write; it
    /// can run while an earlier batch commits (the gateway's ingest overlaps the two).
    func prepare(_ readings: [TelemetryReading]) async throws -> PreparedReadings
    /// Stores prepared readings (skipping ones already stored) and adds `refusals` to the
    /// per-device counts, in one transaction. Returns how many readings were new.
    @discardableResult
    func append(_ readings: PreparedReadings, refusals: [TelemetryRefusal]) async throws -> Int
    /// The device's last reading received.
    func latest(_ serial: DeviceSerial) async throws -> TelemetryRecord?
    /// Readings received in `from ..< to`, oldest first, after the `after` cursor, at most `limit`.
    func readings(_ serial: DeviceSerial, from: Date, to: Date, after: Int64?, limit: Int) async throws
        -> [TelemetryRecord]
    /// Numeric fields' readings received in `from ..< to`, summarised in slices of `slice` seconds
    /// that are multiples of it since 1970 (so a slice is the same in every request; the first may
    /// begin before `from`), only slices with readings, oldest first, by field: what history
    /// charts draw. JSON booleans and text are not numbers. Slices that end by `settledBefore` are
    /// final — the caller promises no reading will be received for them any more (readings are
    /// stamped when received) — so a driver may keep them once computed.
    func series(
        _ serial: DeviceSerial, fields: [String], from: Date, to: Date, slice: TimeInterval, settledBefore: Date
    ) async throws -> [String: [TelemetryBucket]]
    func refusals(_ serial: DeviceSerial) async throws -> [RefusalCount]
    /// The readings a device said it dropped from its offline queue, summed over what it sent.
    func droppedTotal(_ serial: DeviceSerial) async throws -> Int
    func readingCount() async throws -> Int
    /// Deletes the device's readings received in `from ..< to` (and anything summarised from them);
    /// returns how many went.
    @discardableResult
    func deleteReadings(_ serial: DeviceSerial, from: Date, to: Date) async throws -> Int
    /// Retention: removes each field from the device's readings received before that field's
    /// cutoff, and deletes readings left with no field. Returns how many readings changed or went.
    @discardableResult
    func expire(_ serial: DeviceSerial, cutoffs: [String: Date]) async throws -> Int
}

extension TelemetryStore {
    /// Prepares and stores `readings` in one step.
    @discardableResult
    public func append(_ readings: [TelemetryReading], refusals: [TelemetryRefusal]) async throws -> Int {
        try await append(prepare(readings), refusals: refusals)
    }
}

/// A data key readings are sealed under at rest (AES-256-GCM in the server). `context` is bound as
/// associated data (the device and sequence number), so a sealed value cannot be moved to another
/// reading unnoticed.
public protocol ReadingKey: Sendable {
    /// Stored beside each sealed reading; never the key itself.
    var id: String { get }
    func seal(_ plaintext: [UInt8], context: [UInt8]) throws -> [UInt8]
    /// Throws when the value was altered or sealed for another context.
    func open(_ sealed: [UInt8], context: [UInt8]) throws -> [UInt8]
}

/// Where a telemetry store gets its data keys: one per owner, so destroying an owner's key
/// crypto-shreds their readings everywhere they were copied (the database, its log, backups).
public protocol ReadingKeys: Sendable {
    /// The key readings of `serial` received now are sealed under (its owner's, or the
    /// deployment's for a device nobody holds).
    func sealing(_ serial: DeviceSerial) async throws -> any ReadingKey
    /// The keys with these ids that still exist; a destroyed key is absent, and the readings under
    /// it are unreadable.
    func opening(_ ids: Set<String>) async throws -> [String: any ReadingKey]
}

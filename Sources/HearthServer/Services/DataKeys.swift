import Foundation
import HearthCore
import HearthCrypto
import HearthStorage
import Synchronization

extension DataKey: ReadingKey {}

/// The per-owner data keys readings are sealed under at rest (guideline 11: deleting an account
/// destroys its key, so its readings are unreadable wherever copies went — the database's log, a
/// backup). Each key is stored wrapped by the KEK; unwrapped keys and which key a device's readings
/// go under now are kept in memory. Ownership changes call ``forget(_:)`` so the next reading goes
/// under the new holder's key; a reading sealed in the instant between (under the previous
/// holder's key) is unreadable once that key is destroyed.
public final class DataKeys: ReadingKeys {
    struct Cache {
        var bySerial: [DeviceSerial: (key: DataKey, at: Date)] = [:]
        var byID: [String: (key: DataKey, at: Date)] = [:]
        var owners: [String: AccountID] = [:]
    }

    let store: any HearthStore
    let kek: KeyEncryptionKey
    let time: any TimeSource
    /// How long a cached answer holds. Nil (one node): until this process hears of a change
    /// (``forget(_:)``, ``destroyed(owner:)``). With nodes sharing a database, which hear of
    /// changes made on the others only through it, a few seconds.
    let ttl: TimeInterval?
    private let cache = Mutex(Cache())

    public init(
        store: any HearthStore, kek: KeyEncryptionKey, time: any TimeSource = SystemTimeSource(),
        ttl: TimeInterval? = nil
    ) {
        self.store = store
        self.kek = kek
        self.time = time
        self.ttl = ttl
    }

    func fresh(_ at: Date, now: Date) -> Bool { ttl.map { now.timeIntervalSince(at) < $0 } ?? true }

    public func sealing(_ serial: DeviceSerial) async throws -> any ReadingKey {
        let now = time.now()
        if let cached = cache.withLock({ $0.bySerial[serial] }), fresh(cached.at, now: now) { return cached.key }
        let owner = try await store.device(serial)?.owner
        let key = try await key(of: owner)
        cache.withLock { $0.bySerial[serial] = (key, now) }
        return key
    }

    public func opening(_ ids: Set<String>) async throws -> [String: any ReadingKey] {
        var found: [String: any ReadingKey] = [:]
        let now = time.now()
        let missing = cache.withLock { c in
            ids.filter { id in
                guard let cached = c.byID[id], fresh(cached.at, now: now) else { return true }
                found[id] = cached.key
                return false
            }
        }
        for record in try await store.dataKeys(ids: Set(missing)) { found[record.id] = try remember(record) }
        return found
    }

    /// The device changed hands (claimed, released, reset): its next readings go under the new
    /// holder's key.
    public func forget(_ serial: DeviceSerial) {
        _ = cache.withLock { $0.bySerial.removeValue(forKey: serial) }
    }

    /// The owner's key was deleted with their account: drop it from memory too.
    public func destroyed(owner: AccountID) {
        cache.withLock { c in
            for (id, o) in c.owners where o == owner {
                c.byID[id] = nil
                c.owners[id] = nil
                c.bySerial = c.bySerial.filter { $0.value.key.id != id }
            }
        }
    }

    /// The owner's key (nil: the deployment's), made on first use.
    func key(of owner: AccountID?) async throws -> DataKey {
        if let record = try await store.dataKey(owner: owner) { return try remember(record) }
        let fresh = DataKey()
        let stored = try await store.addDataKey(
            DataKeyRecord(id: fresh.id, owner: owner, wrapped: try fresh.wrapped(by: kek), createdAt: time.now()))
        return try remember(stored)
    }

    private func remember(_ record: DataKeyRecord) throws -> DataKey {
        let key = try DataKey(id: record.id, wrapped: record.wrapped, kek: kek)
        let now = time.now()
        cache.withLock { c in
            c.byID[key.id] = (key, now)
            if let owner = record.owner { c.owners[key.id] = owner }
        }
        return key
    }
}

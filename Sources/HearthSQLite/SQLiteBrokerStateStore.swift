import Foundation
import GRDB
import HearthStorage

/// Persistent MQTT sessions and retained messages in their own SQLite file (WAL, FULL sync).
public final class SQLiteBrokerStateStore: BrokerStateStore {
    let pool: DatabasePool

    public init(path: String) throws {
        pool = try openPool(path: path)
        var m = DatabaseMigrator()
        m.registerMigration("2026-11-27 sessions, retained") { db in
            try db.execute(
                sql: """
                    CREATE TABLE sessions (key TEXT PRIMARY KEY NOT NULL, snapshot TEXT NOT NULL) WITHOUT ROWID;
                    CREATE TABLE retained (topic TEXT PRIMARY KEY NOT NULL, packet BLOB NOT NULL) WITHOUT ROWID;
                    """)
        }
        try m.migrate(pool)
    }

    public func apply(_ change: BrokerStateChange) async throws {
        guard !change.isEmpty else { return }
        try await pool.write { db in
            for (key, snapshot) in change.sessions {
                if let snapshot {
                    try db.execute(
                        sql:
                            "INSERT INTO sessions (key, snapshot) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET snapshot = excluded.snapshot",
                        arguments: [key, snapshot])
                } else {
                    try db.execute(sql: "DELETE FROM sessions WHERE key = ?", arguments: [key])
                }
            }
            for (topic, packet) in change.retained {
                if let packet {
                    try db.execute(
                        sql:
                            "INSERT INTO retained (topic, packet) VALUES (?, ?) ON CONFLICT(topic) DO UPDATE SET packet = excluded.packet",
                        arguments: [topic, Data(packet)])
                } else {
                    try db.execute(sql: "DELETE FROM retained WHERE topic = ?", arguments: [topic])
                }
            }
        }
    }

    public func load() async throws -> (sessions: [String: String], retained: [String: [UInt8]]) {
        try await pool.read { db in
            var sessions: [String: String] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT key, snapshot FROM sessions") {
                sessions[row["key"]] = row["snapshot"]
            }
            var retained: [String: [UInt8]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT topic, packet FROM retained") {
                retained[row["topic"]] = [UInt8](row["packet"] as Data)
            }
            return (sessions, retained)
        }
    }

    public func session(_ key: String) async throws -> String? {
        try await pool.read { db in
            try String.fetchOne(db, sql: "SELECT snapshot FROM sessions WHERE key = ?", arguments: [key])
        }
    }
}

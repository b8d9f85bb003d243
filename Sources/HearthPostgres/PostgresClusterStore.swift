import Foundation
import HearthCore
import HearthStorage

extension PostgresStore: ClusterStore {
    public func connected(_ serial: DeviceSerial, node: String, since: Date) async throws {
        try await db.run { sql in
            try await sql.execute(
                """
                INSERT INTO device_connections (serial, node, since) VALUES (?, ?, ?)
                ON CONFLICT (serial) DO UPDATE SET node = excluded.node, since = excluded.since
                WHERE excluded.since >= device_connections.since
                """, [serial.rawValue, node, millis(since)])
        }
    }

    public func disconnected(_ serial: DeviceSerial, node: String, since: Date) async throws {
        try await db.run { sql in
            try await sql.execute(
                "DELETE FROM device_connections WHERE serial = ? AND node = ? AND since = ?",
                [serial.rawValue, node, millis(since)])
        }
    }

    public func heartbeat(_ node: String, at: Date) async throws {
        try await db.run { sql in
            try await sql.execute(
                """
                INSERT INTO cluster_nodes (node, seen_at) VALUES (?, ?)
                ON CONFLICT (node) DO UPDATE SET seen_at = GREATEST(cluster_nodes.seen_at, excluded.seen_at)
                """, [node, millis(at)])
        }
    }

    public func held(_ serials: [DeviceSerial], aliveSince: Date) async throws -> Set<DeviceSerial> {
        guard !serials.isEmpty else { return [] }
        let rows = try await db.run {
            try await $0.rows(
                """
                SELECT c.serial FROM device_connections c JOIN cluster_nodes n ON n.node = c.node
                WHERE c.serial = ANY(?) AND n.seen_at >= ?
                """, [TextArray(serials.map(\.rawValue)), millis(aliveSince)])
        }
        return Set(try rows.map { try DeviceSerial(try $0.string("serial")) })
    }

    public func holder(_ serial: DeviceSerial, aliveSince: Date) async throws -> (node: String, since: Date)? {
        guard
            let row = try await db.run({
                try await $0.row(
                    """
                    SELECT c.node, c.since FROM device_connections c JOIN cluster_nodes n ON n.node = c.node
                    WHERE c.serial = ? AND n.seen_at >= ?
                    """, [serial.rawValue, millis(aliveSince)])
            })
        else { return nil }
        return (try row.string("node"), try row.date("since"))
    }

    public func movedAway(from node: String, since: Date) async throws -> [(serial: DeviceSerial, since: Date)] {
        try await db.run {
            try await $0.rows(
                "SELECT serial, since FROM device_connections WHERE node <> ? AND since >= ? ORDER BY since",
                [node, millis(since)])
        }.map { (try DeviceSerial(try $0.string("serial")), try $0.date("since")) }
    }

    public func connections(aliveSince: Date, limit: Int) async throws -> [(
        serial: DeviceSerial, node: String, since: Date
    )] {
        try await db.run {
            try await $0.rows(
                """
                SELECT c.* FROM device_connections c JOIN cluster_nodes n ON n.node = c.node
                WHERE n.seen_at >= ? ORDER BY c.since DESC LIMIT ?
                """, [millis(aliveSince), max(0, limit)])
        }.map { (try DeviceSerial(try $0.string("serial")), try $0.string("node"), try $0.date("since")) }
    }

    public func connectionCounts(aliveSince: Date) async throws -> [String: Int] {
        let rows = try await db.run {
            try await $0.rows(
                """
                SELECT c.node, count(*) AS n FROM device_connections c JOIN cluster_nodes n ON n.node = c.node
                WHERE n.seen_at >= ? GROUP BY c.node
                """, [millis(aliveSince)])
        }
        return try Dictionary(uniqueKeysWithValues: rows.map { (try $0.string("node"), try $0.int("n")) })
    }

    public func keepSession(_ serial: DeviceSerial, node: String, aliveSince: Date) async throws -> (
        node: String, alive: Bool
    )? {
        try await db.transaction(serialised: false) { sql in
            // The row stays locked until commit: a device connecting to two nodes at once is
            // handed from one to the other, never kept by both.
            let previous = try await sql.row(
                """
                SELECT k.node, COALESCE(n.seen_at >= ?, FALSE) AS alive FROM session_keepers k
                LEFT JOIN cluster_nodes n ON n.node = k.node WHERE k.serial = ? FOR UPDATE OF k
                """, [millis(aliveSince), serial.rawValue])
            try await sql.execute(
                """
                INSERT INTO session_keepers (serial, node) VALUES (?, ?)
                ON CONFLICT (serial) DO UPDATE SET node = excluded.node
                """, [serial.rawValue, node])
            guard let previous, try previous.string("node") != node else { return nil }
            return (try previous.string("node"), try previous.bool("alive"))
        }
    }

    public func relay(_ c: RelayedCommand, to node: String) async throws {
        try await db.run { sql in
            try await sql.execute(
                "INSERT INTO relayed_commands (id, serial, node, command, parameters, deadline) VALUES (?, ?, ?, ?, ?, ?)",
                [c.id, c.serial.rawValue, node, c.command, c.parameters, millis(c.deadline)])
        }
    }

    public func takeRelayed(for node: String, limit: Int) async throws -> [RelayedCommand] {
        try await db.run {
            try await $0.rows(
                """
                UPDATE relayed_commands SET taken = TRUE WHERE id IN (
                    SELECT id FROM relayed_commands WHERE node = ? AND NOT taken LIMIT ? FOR UPDATE SKIP LOCKED
                ) RETURNING *
                """, [node, max(0, limit)])
        }.map {
            RelayedCommand(
                id: try $0.string("id"), serial: try DeviceSerial(try $0.string("serial")),
                command: try $0.string("command"), parameters: try $0.string("parameters"),
                deadline: try $0.date("deadline"))
        }
    }

    public func answer(_ id: String, _ outcome: CommandOutcome) async throws {
        let (status, detail): (String, String?) =
            switch outcome {
            case .answered(let status, let detail): ("answered:" + status, detail)
            case .offline: ("offline", nil)
            case .timedOut: ("timed-out", nil)
            }
        try await db.run { sql in
            try await sql.execute(
                "UPDATE relayed_commands SET status = ?, detail = ? WHERE id = ?", [status, detail, id])
        }
    }

    public func outcomes(_ ids: [String]) async throws -> [String: CommandOutcome] {
        guard !ids.isEmpty else { return [:] }
        let rows = try await db.run {
            try await $0.rows(
                "SELECT id, status, detail FROM relayed_commands WHERE id = ANY(?) AND status IS NOT NULL",
                [TextArray(ids)])
        }
        var outcomes: [String: CommandOutcome] = [:]
        for row in rows {
            let status = try row.string("status")
            outcomes[try row.string("id")] =
                status.hasPrefix("answered:")
                ? .answered(status: String(status.dropFirst(9)), detail: try row.optionalString("detail"))
                : status == "offline" ? .offline : .timedOut
        }
        return outcomes
    }

    public func forget(_ id: String) async throws {
        try await db.run { sql in try await sql.execute("DELETE FROM relayed_commands WHERE id = ?", [id]) }
    }
}

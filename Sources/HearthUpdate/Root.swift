import Foundation
import HearthCore

/// The four top-level roles of The Update Framework (specification 1.0).
public enum TUFRole: String, Sendable, CaseIterable {
    case root, targets, snapshot, timestamp
}

/// Builds and checks `root.json`, the document that says which keys may sign for each role.
public enum RootMetadata {
    public static let specVersion = "1.0.31"

    /// The `signed` part of a root document.
    public static func make(
        version: Int, expires: Date, keys: [TUFRole: [TUFKey]], thresholds: [TUFRole: Int],
        consistentSnapshot: Bool = true
    ) throws -> JSONValue {
        var allKeys: [String: JSONValue] = [:]
        var roles: [String: JSONValue] = [:]
        for role in TUFRole.allCases {
            let roleKeys = keys[role] ?? []
            let threshold = thresholds[role] ?? 1
            guard !roleKeys.isEmpty, (1...roleKeys.count).contains(threshold) else {
                throw HearthError.invalid(
                    "roles.\(role.rawValue)", "needs at least one key and a threshold between 1 and its number of keys")
            }
            for key in roleKeys { allKeys[key.keyID] = key.json }
            roles[role.rawValue] = [
                "keyids": .array(roleKeys.map { .string($0.keyID) }), "threshold": .number(Double(threshold)),
            ]
        }
        guard version >= 1 else { throw HearthError.invalid("version", "versions start at 1") }
        return [
            "_type": "root", "spec_version": .string(specVersion), "version": .number(Double(version)),
            "expires": .string(timestamp(expires)), "consistent_snapshot": .bool(consistentSnapshot),
            "keys": .object(allKeys), "roles": .object(roles),
        ]
    }

    /// The keys and threshold a root document gives `role`.
    public static func delegation(_ role: TUFRole, in root: JSONValue) throws -> (
        keys: [String: TUFKey], threshold: Int
    ) {
        guard case .object(let signed) = root, case .object(let keys)? = signed["keys"],
            case .object(let roles)? = signed["roles"],
            case .object(let entry)? = roles[role.rawValue], case .array(let ids)? = entry["keyids"],
            case .number(let threshold)? = entry["threshold"],
            let whole = NetworkInput.wholeNumber(threshold), whole >= 1
        else {
            throw HearthError.invalid("roles.\(role.rawValue)", "the root document does not delegate \(role.rawValue)")
        }
        var delegated: [String: TUFKey] = [:]
        for case .string(let id) in ids {
            guard let key = keys[id] else { throw HearthError.invalid("keys", "key \(id.prefix(16))… is not listed") }
            let parsed = try TUFKey(json: key)
            guard parsed.keyID == id else {
                throw HearthError.invalid("keys", "key id \(id.prefix(16))… does not match its key")
            }
            delegated[id] = parsed
        }
        return (delegated, whole)
    }

    /// RFC 3339 in UTC to the second, as TUF writes `expires`.
    public static func timestamp(_ date: Date) -> String { Advisory.timestamp(date) }
}

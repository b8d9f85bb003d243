import Foundation
import HTTPTypes
import HearthCore
import HearthMonitor
import HearthStorage
import Hummingbird

/// Security alerts in the API: operators list and move them along; owners read their device's.
extension API {
    static let quarantineBody = ObjectSchema([
        FieldSchema("reason", .string(maxLength: 200), "why, in words the owner will read")
    ])

    func alertEndpoints() -> [(Endpoint, EndpointHandler)] {
        let hearth = self.hearth
        var endpoints: [(Endpoint, EndpointHandler)] = [
            (
                Endpoint(
                    method: .get, path: "/api/v1/alerts",
                    summary:
                        "Security alerts (operators), newest first (query: state = open, acknowledged or resolved, comma-separated; default open,acknowledged)",
                    access: .operator, body: nil, success: .ok, errors: [.badRequest, .unauthorized, .forbidden]),
                { request, context, _ in
                    var states: Set<AlertRecord.State> = [.open, .acknowledged]
                    if let given = request.uri.queryParameters.get("state") {
                        let names = given.split(separator: ",", omittingEmptySubsequences: false).prefix(4)
                        let parsed = names.compactMap { AlertRecord.State(rawValue: String($0)) }
                        guard parsed.count == names.count, !parsed.isEmpty else {
                            throw HearthError.invalid("state", "open, acknowledged or resolved, comma-separated")
                        }
                        states = Set(parsed)
                    }
                    let alerts = try await hearth.alerts(in: states, by: try context.requireIdentity())
                    return JSON.response(["alerts": .array(alerts.map { Self.alertJSON($0, operator: true) })])
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/devices/{serial}/alerts",
                    summary: "The owner's device: its security alerts since you claimed it, in plain English",
                    access: .signedIn, body: nil, success: .ok, errors: [.unauthorized, .notFound]),
                { _, context, _ in
                    let identity = try context.requireIdentity()
                    let serial = context.parameters.get("serial") ?? ""
                    let alerts = try await hearth.deviceAlerts(serial, by: identity)
                    let device = try await hearth.ownedDevice(serial, by: identity)
                    return JSON.response([
                        "alerts": .array(alerts.map { Self.alertJSON($0, operator: false) }),
                        "quarantine": device.quarantine.map { .string(Hearth.quarantineText($0)) } ?? .null,
                    ])
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/devices/{serial}/quarantine",
                    summary:
                        "Quarantine a device (operators; audited): it may still connect, report on and fetch updates, re-key and reset; everything else is refused",
                    access: .operator, body: Self.quarantineBody, success: .ok,
                    errors: [
                        .badRequest, .contentTooLarge, .unsupportedMediaType, .unprocessableContent, .unauthorized,
                        .forbidden, .notFound, .conflict,
                    ]),
                { _, context, body in
                    let serial = context.parameters.get("serial") ?? ""
                    try await hearth.quarantine(
                        serial, reason: body.string("reason"), by: try context.requireIdentity())
                    return JSON.response(["serial": .string(serial), "quarantined": true])
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/devices/{serial}/quarantine/release",
                    summary: "Release a device from quarantine (operators; audited)", access: .operator, body: nil,
                    success: .ok, errors: [.unauthorized, .forbidden, .notFound, .conflict]),
                { _, context, _ in
                    let serial = context.parameters.get("serial") ?? ""
                    try await hearth.quarantine(serial, reason: nil, by: try context.requireIdentity())
                    return JSON.response(["serial": .string(serial), "quarantined": false])
                }
            ),
        ]
        for (verb, state) in [("acknowledge", AlertRecord.State.acknowledged), ("resolve", .resolved)] {
            endpoints.append(
                (
                    Endpoint(
                        method: .post, path: "/api/v1/alerts/{id}/\(verb)",
                        summary:
                            "\(verb.prefix(1).uppercased() + verb.dropFirst()) a security alert (operators; audited)",
                        access: .operator, body: nil, success: .ok,
                        errors: [.unauthorized, .forbidden, .conflict]),
                    { _, context, _ in
                        let id = context.parameters.get("id") ?? ""
                        try await hearth.setAlertState(id, state, by: try context.requireIdentity())
                        return JSON.response(["id": .string(id), "state": .string(state.rawValue)])
                    }
                ))
        }
        return endpoints
    }

    /// An alert for the operator (kind, severity, evidence, state) or the owner (what happened, in
    /// plain English, and when).
    static func alertJSON(_ a: AlertRecord, operator: Bool) -> JSONValue {
        let timestamp = Date.ISO8601FormatStyle()
        var o: [String: JSONValue] = [
            "kind": .string(a.kind), "severity": .string(a.severity),
            "raisedAt": .string(a.raisedAt.formatted(timestamp)),
            "state": .string(a.state.rawValue),
            "text": .string(Self.plainEnglish(kind: a.kind)),
        ]
        if `operator` {
            o["id"] = .string(a.id)
            o["serial"] = .string(a.serial.rawValue)
            o["evidence"] = (try? JSONValue.parse(Array(a.evidence.utf8))) ?? .null
            o["updatedAt"] = .string(a.updatedAt.formatted(timestamp))
        }
        return .object(o)
    }

    static func plainEnglish(kind: String) -> String {
        Detection.Kind(rawValue: kind)?.plainEnglish ?? "A security alert."
    }
}

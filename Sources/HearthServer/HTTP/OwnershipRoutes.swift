import Foundation
import HTTPTypes
import HearthCore
import HearthStorage
import Hummingbird

/// The owner's data rights in the API: removing, transferring and disposing of a device.
extension API {
    static let history = FieldSchema(
        "history", .oneOf(["keep", "delete"]),
        "keep: your readings from your time stay in your export; delete: they are deleted now")
    static let unclaimBody = ObjectSchema([history])
    static let rekeyBody = ObjectSchema([])
    static let transferBody = ObjectSchema([
        FieldSchema(
            "to", .string(maxLength: 254, pattern: EmailAddress.pattern),
            "the new owner's e-mail address: only they can claim it for 14 days"),
        history,
    ])
    static let disposeBody = ObjectSchema([
        FieldSchema(
            "confirm", .string(maxLength: 32, pattern: DeviceSerial.pattern),
            "the device's serial again: disposal cannot be undone")
    ])

    func ownershipEndpoints() -> [(Endpoint, EndpointHandler)] {
        let hearth = self.hearth
        let bad: [HTTPResponse.Status] = [.badRequest, .contentTooLarge, .unsupportedMediaType, .unprocessableContent]
        return [
            (
                Endpoint(
                    method: .post, path: "/api/v1/devices/{serial}/unclaim",
                    summary:
                        "The owner's device: remove it from the account, keeping or deleting its readings from your time",
                    access: .signedIn, body: Self.unclaimBody, success: .ok,
                    errors: bad + [.unauthorized, .notFound, .conflict]),
                { _, context, body in
                    let ended = try await hearth.unclaim(
                        context.parameters.get("serial") ?? "", keepHistory: body.string("history") == "keep",
                        by: try context.requireIdentity())
                    return JSON.response(Self.ownershipJSON(ended))
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/devices/{serial}/transfer",
                    summary:
                        "The owner's device: hand it to another person, who claims it with the label's code; your history stays invisible to them",
                    access: .signedIn, body: Self.transferBody, success: .ok,
                    errors: bad + [.unauthorized, .notFound, .conflict]),
                { _, context, body in
                    let ended = try await hearth.transfer(
                        context.parameters.get("serial") ?? "", to: body.string("to") ?? "",
                        keepHistory: body.string("history") == "keep", by: try context.requireIdentity())
                    return JSON.response(Self.ownershipJSON(ended))
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/devices/{serial}/dispose",
                    summary:
                        "The owner's device: dispose of it (its certificate is revoked, its history deleted); cannot be undone",
                    access: .signedIn, body: Self.disposeBody, success: .ok,
                    errors: bad + [.unauthorized, .notFound, .conflict]),
                { _, context, body in
                    let serial = context.parameters.get("serial") ?? ""
                    guard body.string("confirm") == serial else {
                        throw HearthError.invalid("confirm", "give the device's serial again to confirm")
                    }
                    let ended = try await hearth.dispose(serial, by: try context.requireIdentity())
                    return JSON.response(Self.ownershipJSON(ended))
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/devices/{serial}/rekey",
                    summary:
                        "The owner's device: ask it to make a new key; once it connects with the new key's certificate, the old one is refused",
                    access: .signedIn, body: nil, success: .accepted,
                    errors: [.unauthorized, .notFound, .conflict, .serviceUnavailable]),
                { _, context, _ in
                    let id = try await hearth.requestRekey(
                        context.parameters.get("serial") ?? "", by: try context.requireIdentity())
                    return JSON.response(
                        [
                            "request": .string(id),
                            "status": "the device makes its new key when it is next connected",
                        ], status: .accepted)
                }
            ),
        ]
    }

    static func ownershipJSON(_ o: OwnershipRecord) -> JSONValue {
        let timestamp = Date.ISO8601FormatStyle()
        return [
            "serial": .string(o.serial.rawValue), "reason": .string(o.reason.rawValue),
            "claimedAt": .string(o.claimedAt.formatted(timestamp)),
            "releasedAt": .string(o.releasedAt.formatted(timestamp)),
            "history": .string(o.historyKept ? "kept" : "deleted"),
        ]
    }
}

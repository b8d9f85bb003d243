import Foundation
import HearthCore
import HearthStorage

/// The operator's changes to the fleet itself: product models and device revocation. One place
/// builds each change and its audit entry, whoever asks: the API and console through ``Hearth``
/// (which checks the operator role first) and the host's CLI (`hearth model add`,
/// `hearth device revoke`), which holds the data folder and is audited as `cli`.
public struct Fleet: Sendable {
    let store: any HearthStore
    let time: any TimeSource

    public init(store: any HearthStore, time: any TimeSource = SystemTimeSource()) {
        self.store = store
        self.time = time
    }

    /// Defines a product model from its JSON; a taken id is a conflict on `id`.
    public func createModel(_ json: JSONValue, actor: String) async throws -> ProductModel {
        let model = try ProductModel(json: json)
        try await define(model, actor: actor)
        return model
    }

    /// Defines `model`; a taken id is a conflict on `id`.
    public func define(_ model: ProductModel, actor: String) async throws {
        let now = time.now()
        do {
            try await store.createModel(
                model, at: now, audit: AuditEntry(.modelCreated, actor: actor, subject: model.id.rawValue, at: now))
        } catch let error as HearthError where error.code == .conflict {
            throw HearthError(.conflict, field: "id", "a product model with id '\(model.id)' exists")
        }
    }

    /// Revokes a device's certificate: the gateway refuses it from then on. False if it already was.
    public func revoke(_ serial: DeviceSerial, actor: String) async throws -> Bool {
        let now = time.now()
        return try await store.revokeDevice(
            serial, at: now, audit: AuditEntry(.deviceRevoked, actor: actor, subject: serial.rawValue, at: now))
    }
}

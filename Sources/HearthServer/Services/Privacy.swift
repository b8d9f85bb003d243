import Crypto
import Foundation
import HearthCore
import HearthStorage

/// What a model's devices collect and why, in plain English, made from the maker's declarations
/// (EN 303 645 5.8-3, 6-1, 6-5): public, readable before purchase.
public struct PrivacyNotice: Sendable {
    public struct Item: Sendable {
        public let name: String
        public let kind: String
        public let category: String
        public let purpose: String
        public let optional: Bool
        public let personal: Bool
        public let recipients: String
        public let kept: String
    }

    public let model: ProductModel
    /// Changes whenever a declaration changes; every consent choice records the one it was made under.
    public let version: String
    public let items: [Item]

    public init(_ model: ProductModel) {
        self.model = model
        let declarations: JSONValue = [
            "purposes": .array(model.purposes.map(\.json)),
            "telemetry": .array(model.telemetry.map { .array([.string($0.name), $0.declaration?.json ?? .null]) }),
            "commands": .array(model.commands.map { .array([.string($0.name), $0.declaration?.json ?? .null]) }),
        ]
        version = SHA256.hash(data: declarations.serialized()).prefix(8).map { String(format: "%02x", $0) }.joined()
        func item(_ name: String, _ kind: String, _ d: DataDeclaration?) -> Item? {
            guard let d, let purpose = model.purpose(d.purpose) else { return nil }
            return Item(
                name: name, kind: kind, category: d.category.plainEnglish, purpose: purpose.description,
                optional: !purpose.essential, personal: d.personal,
                recipients: d.recipients.joined(separator: "; "),
                kept: d.retentionDays == 1 ? "1 day" : "\(d.retentionDays) days")
        }
        items =
            model.telemetry.compactMap { item($0.name, $0.unit.map { "reading (\($0))" } ?? "reading", $0.declaration) }
            + model.commands.compactMap { item($0.name, "command and its history", $0.declaration) }
    }
}

/// The owner's choices for one device: each optional purpose, agreed or not, and the history.
public struct ConsentState: Sendable {
    public struct Choice: Sendable {
        public let purpose: DataPurpose
        public let granted: Bool
        /// When the current choice was made; nil while it is the default (not agreed).
        public let since: Date?
    }

    public let device: DeviceRecord
    public let notice: PrivacyNotice
    public let choices: [Choice]
    public let history: [ConsentRecord]
    public var policy: DevicePolicy { DevicePolicy(model: notice.model, granted: history.granted) }
}

extension Hearth {
    /// A model's privacy notice; public (no account needed).
    public func privacyNotice(_ rawModel: String) async throws -> PrivacyNotice {
        guard let id = try? ProductModelID(rawModel), let model = try await store.model(id) else {
            throw HearthError(.notFound, field: "model", "no product model \(rawModel.prefix(40))")
        }
        return PrivacyNotice(model)
    }

    /// The caller's choices for their device.
    public func consents(_ rawSerial: String, by identity: Identity) async throws -> ConsentState {
        let device = try await ownedDevice(rawSerial, by: identity)
        return try await consentState(device, owner: identity.account.id)
    }

    func consentState(_ device: DeviceRecord, owner: AccountID) async throws -> ConsentState {
        guard let model = try await store.model(device.model) else {
            throw HearthError(.integrity, "the device's product model is missing")
        }
        let history = try await store.consents(device.serial, owner: owner)
        let latest = history.latest
        let choices = model.optionalPurposes.map { purpose in
            let choice = latest[purpose.id]
            return ConsentState.Choice(purpose: purpose, granted: choice?.granted ?? false, since: choice?.at)
        }
        return ConsentState(device: device, notice: PrivacyNotice(model), choices: choices, history: history)
    }

    /// Sets which optional purposes the owner agrees to: `granted` is the whole set, everything
    /// else is withdrawn. Only changes are recorded (with the notice version), and the gateway is
    /// told at once. Unknown or essential purposes are refused and nothing changes.
    public func setConsents(_ rawSerial: String, granted: [String], by identity: Identity) async throws -> ConsentState
    {
        let device = try await ownedDevice(rawSerial, by: identity)
        let before = try await consentState(device, owner: identity.account.id)
        let model = before.notice.model
        guard Set(granted).count == granted.count else {
            throw HearthError.invalid("granted", "name each purpose once")
        }
        for id in granted {
            guard let purpose = model.purpose(id) else {
                throw HearthError.invalid("granted", "'\(id.prefix(40))' is not an optional purpose of this device")
            }
            guard !purpose.essential else {
                throw HearthError.invalid(
                    "granted", "'\(id)' is essential to what the device does: it needs no consent and cannot be refused"
                )
            }
        }
        let now = time.now()
        let changes = before.choices.filter { $0.granted != granted.contains($0.purpose.id) }.map {
            ConsentRecord(
                serial: device.serial, owner: identity.account.id, purpose: $0.purpose.id, granted: !$0.granted,
                noticeVersion: before.notice.version, at: now)
        }
        guard !changes.isEmpty else { return before }
        let detail = changes.map { "\($0.purpose): \($0.granted ? "agreed" : "withdrawn")" }.joined(separator: ", ")
        guard
            try await store.recordConsents(
                changes,
                audit: AuditEntry(
                    .consentChanged, actor: identity.account.id.description, subject: device.serial.rawValue,
                    detail: "\(detail) (notice \(before.notice.version))", at: now))
        else {
            throw HearthError(.notFound, field: "serial", "you have no device with this serial")
        }
        let after = try await consentState(device, owner: identity.account.id)
        await policyChanged(device.serial, after.policy)
        return after
    }

    /// Tells the gateway, when this process runs one.
    func policyChanged(_ serial: DeviceSerial, _ policy: DevicePolicy) async {
        await (commands as? any DevicePolicyChannel)?.policyChanged(serial, policy)
    }
}

/// The MQTT topic layout of one device: the one place that names it, used by the gateway's access
/// policy and routing, the device SDK, the bench client and the tests.
///
/// (`S` is the device serial, taken from its certificate, never from the client id):
/// ```
/// devices/S/telemetry            device → server   readings, checked against the model's schema
/// devices/S/events               device → server   events (e.g. a lock's keypad use)
/// devices/S/commands/NAME        server → device   a command; the device subscribes to devices/S/commands/+
/// devices/S/commands/NAME/result device → server   the command's result (request/response)
/// devices/S/update               device → server   update progress and integrity alerts
/// devices/S/update/offer         server → device   the answer: support period, target to install
/// devices/S/policy               server → device   retained: fields the owner has not agreed to (DevicePolicy)
/// devices/S/reset                device → server   reset to factory state: the server ends the owner's claim
/// devices/S/rekey                server → device   the owner asks the device to make a new key
/// devices/S/csr                  device → server   a signing request for its new key
/// devices/S/certificate          server → device   the answer: the new key's certificate
/// ```
public struct DeviceTopics: Sendable, Equatable {
    /// The first level of every device topic.
    public static let namespace = "devices"
    /// Third levels a device publishes to (as the whole topic).
    public static let published: Set<String> = ["telemetry", "events", "update", "reset", "csr"]
    /// Third levels a device subscribes to and receives (as the whole topic).
    public static let received: Set<String> = ["policy", "rekey", "certificate"]

    /// `devices/S`
    public let prefix: String
    /// The topics the gateway compares every publish with, made once (not per message).
    public let telemetry: String
    public let update: String
    public let reset: String
    public let csr: String

    public init(_ serial: DeviceSerial) { self.init(serial: serial.rawValue) }

    /// For a serial already checked (the access policy's, from a certificate).
    public init(serial: String) {
        prefix = "\(Self.namespace)/\(serial)"
        telemetry = prefix + "/telemetry"
        update = prefix + "/update"
        reset = prefix + "/reset"
        csr = prefix + "/csr"
    }

    public var events: String { prefix + "/events" }
    public var updateOffer: String { prefix + "/update/offer" }
    /// The retained ``DevicePolicy`` the device subscribes to.
    public var policy: String { prefix + "/policy" }
    public var rekey: String { prefix + "/rekey" }
    public var certificate: String { prefix + "/certificate" }
    /// What a device subscribes to for its commands.
    public var commands: String { prefix + "/commands/+" }
    /// The prefix of every command topic, `devices/S/commands/`.
    public var commandPrefix: String { prefix + "/commands/" }

    public func command(_ name: String) -> String { commandPrefix + name }
    public func commandResult(_ name: String) -> String { command(name) + "/result" }

    /// What a quarantined device may still publish: update reports (and integrity alerts), its
    /// factory reset, and a signing request for a new key; the way out of trouble, nothing else.
    public func allowedInQuarantine(_ topic: String) -> Bool {
        topic == update || topic == reset || topic == csr
    }

    /// What a quarantined device may still subscribe to: update offers, its policy, re-keying.
    public func receivableInQuarantine(_ filter: String) -> Bool {
        filter == updateOffer || filter == policy || filter == rekey || filter == certificate
    }

    /// True for `devices/S/commands/NAME/result` with one NAME level.
    public func isCommandResult(_ topic: String) -> Bool {
        guard topic.hasPrefix(commandPrefix), topic.hasSuffix("/result") else { return false }
        let name = topic.dropFirst(commandPrefix.count).dropLast("/result".count)
        return !name.isEmpty && !name.contains("/")
    }
}

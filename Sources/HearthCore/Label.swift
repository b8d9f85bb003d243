/// The text printed on a device's label and in its box: what a consumer needs to set it up
/// (Code of Practice guideline 12).
public struct DeviceLabel: Sendable {
    public let model: ProductModel
    public let serial: DeviceSerial
    public let setupCode: SetupCode
    public let setupURL: String

    public init(model: ProductModel, serial: DeviceSerial, setupCode: SetupCode, setupURL: String) {
        self.model = model
        self.serial = serial
        self.setupCode = setupCode
        self.setupURL = setupURL
    }

    /// The model's privacy notice, beside the set-up page (readable without an account).
    public var privacyURL: String {
        let base = setupURL.hasSuffix("/claim") ? String(setupURL.dropLast("/claim".count)) : setupURL
        return "\(base)/models/\(model.id.rawValue)/privacy"
    }

    public var text: String {
        """
        \(model.name) — \(model.maker)
        Serial:     \(serial)
        Setup code: \(setupCode.formatted)
        Set up at \(setupURL) and enter the serial and setup code.
        Security updates until \(model.supportEnds.plainEnglish).
        What it collects and why: \(privacyURL)
        This code is unique to this device. Keep it: a factory reset returns the device to it.

        """
    }
}

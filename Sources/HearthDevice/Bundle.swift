import Foundation
import HearthCore

/// A device's folder: what the factory wrote (`hearth factory provision`) plus what the device keeps
/// there itself — its sealed key and its offline queue. It stands for the device's flash.
///
/// - `bundle.json` (0600): serial, model, setup code and server URL;
/// - `device.pem`, `server-root-ca.pem`: the device's certificate chain and the server's anchor;
/// - `device.key.pem` until first boot, then `device.key.sealed` (see ``FileKeyStore``);
/// - `queue.log`: the offline queue (see ``OfflineQueue``).
public struct DeviceBundle: Sendable {
    public let folder: URL
    public let serial: DeviceSerial
    public let model: ProductModelID
    /// The server's HTTPS URL, as printed on the label.
    public let server: URL
    public let trustRootsPEM: String

    public var queuePath: String { folder.appendingPathComponent("queue.log").path }

    public static func load(_ folder: URL) throws -> DeviceBundle {
        let file = folder.appendingPathComponent("bundle.json")
        guard let data = FileManager.default.contents(atPath: file.path), data.count <= 16 * 1024 else {
            throw DeviceError(
                "no device bundle at \(folder.path) (expected bundle.json from `hearth factory provision`)")
        }
        try FileKeyStore.requirePrivate(file.path)
        guard case .object(let json)? = try? JSONValue.parse(Array(data)),
            case .string(let serial)? = json["serial"], case .string(let model)? = json["model"],
            case .string(let server)? = json["server"], let url = URL(string: server), url.scheme == "https",
            url.host != nil
        else { throw DeviceError("\(file.path) is not a device bundle") }
        guard let root = try? String(contentsOf: folder.appendingPathComponent("server-root-ca.pem"), encoding: .utf8)
        else {
            throw DeviceError("no server-root-ca.pem in \(folder.path)")
        }
        do {
            return DeviceBundle(
                folder: folder, serial: try DeviceSerial(serial), model: try ProductModelID(model), server: url,
                trustRootsPEM: root)
        } catch {
            throw DeviceError("\(file.path) has an invalid serial or model id")
        }
    }

    /// The key store over this folder, sealing the factory key on first boot.
    public func keyStore(uniqueKey: DeviceUniqueKey) throws -> FileKeyStore {
        let store = FileKeyStore(folder: folder, uniqueKey: uniqueKey)
        try store.sealFactoryKey()
        return store
    }
}

import Foundation
import HearthCore
import HearthCrypto
import HearthStorage
import Synchronization

/// Re-keying (EN 303 645 5.1-4 for device credentials): a device that made a new key sends a
/// signing request for it over its authenticated connection; this issues the certificate with the
/// device CA and stores it as pending. Both certificates work until the device connects with the
/// new one (the gateway then retires the old one), so a lost answer never locks a device out.
public final class DeviceCertificates: DeviceCertificateChannel {
    let store: any HearthStore
    let deviceCA: CertificateAuthority
    let time: any TimeSource
    /// When each device last got a certificate: one a minute at most, so a device (or someone with
    /// its key) cannot make the server sign and audit without end.
    private let issued = Mutex<[DeviceSerial: Date]>([:])
    static let interval: TimeInterval = 60

    public init(store: any HearthStore, deviceCA: CertificateAuthority, time: any TimeSource = SystemTimeSource()) {
        self.store = store
        self.deviceCA = deviceCA
        self.time = time
    }

    public func certificateRequested(_ payload: [UInt8], from serial: DeviceSerial, model: ProductModel) async throws
        -> [UInt8]
    {
        guard payload.count <= 8_192, case .object(let o) = try JSONValue.parse(payload),
            case .string(let id)? = o["id"], RequestID.isWellFormed(id), case .string(let csr)? = o["csr"]
        else {
            throw HearthError.invalid("csr", #"expected {"id": ID, "csr": PEM}, ID 8-64 letters, digits or dashes"#)
        }
        let now = time.now()
        let certificate = try deviceCA.signDeviceCSR(pem: csr, serial: serial, model: model, now: now)
        try issued.withLock { last in
            if let previous = last[serial], now.timeIntervalSince(previous) < Self.interval {
                throw HearthError(.throttled, "one new certificate a minute; try again later")
            }
            if last.count > 10_000 { last = last.filter { now.timeIntervalSince($0.value) < Self.interval } }
            last[serial] = now
        }
        let pem = try certificate.pem()
        guard
            try await store.setPendingCertificate(
                serial, pem: pem,
                audit: AuditEntry(
                    .deviceCertificateIssued, actor: "device", subject: serial.rawValue,
                    detail: "for a new key (request \(id))", at: now))
        else { throw HearthError(.notFound, field: "serial", "no such device, or it is revoked") }
        return Array(
            JSONValue.object([
                "id": .string(id), "certificate": .string(pem + "\n" + (try deviceCA.certificate.pem()) + "\n"),
            ]).text
                .utf8)
    }
}

/// The ids devices and owners give requests (a reset, a re-key): 8-64 letters, digits or dashes.
enum RequestID {
    static func isWellFormed(_ id: String) -> Bool {
        (8...64).contains(id.utf8.count)
            && id.utf8.allSatisfy {
                $0 == UInt8(ascii: "-") || (0x30...0x39).contains($0) || (0x41...0x5A).contains($0)
                    || (0x61...0x7A).contains($0)
            }
    }
}

extension Hearth {
    /// The owner asks their device to make a new key (its old key may have been exposed, or it
    /// changes hands): the request reaches the device when it is next connected; it sends a
    /// signing request, gets a certificate, and once it connects with it the old one is refused.
    /// Returns the request's id.
    public func requestRekey(_ rawSerial: String, by identity: Identity) async throws -> String {
        let device = try await ownedDevice(rawSerial, by: identity)
        guard device.revokedAt == nil else {
            throw HearthError(.conflict, field: "serial", "this device was disposed of and cannot connect")
        }
        guard let channel = commands as? any DeviceRekeying else {
            throw HearthError(.unavailable, "this server runs no device gateway")
        }
        let id = UUID().uuidString.lowercased()
        try await store.appendAudit(
            AuditEntry(
                .deviceRekeyRequested, actor: identity.account.id.description, subject: device.serial.rawValue,
                detail: "request \(id)", at: time.now()))
        await channel.requestRekey(device.serial, id: id)
        return id
    }
}

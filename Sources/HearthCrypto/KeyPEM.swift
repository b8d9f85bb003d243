import Crypto
import Foundation
import HearthCore

extension P256.Signing.PrivateKey {
    /// Seals this key's PEM with the KEK for storage in the data folder.
    public func sealed(context: String, kek: KeyEncryptionKey) throws -> Data {
        try Envelope.seal(Data(pemRepresentation.utf8), context: context, kek: kek)
    }

    public static func unsealed(_ data: Data, context: String, kek: KeyEncryptionKey) throws -> P256.Signing.PrivateKey
    {
        let pem = try Envelope.open(data, context: context, kek: kek)
        return try P256.Signing.PrivateKey(pemRepresentation: String(decoding: pem, as: UTF8.self))
    }
}

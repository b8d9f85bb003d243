import Crypto
import Foundation
import HearthCore
import HearthCrypto
import Hummingbird
import HummingbirdTesting
import Testing
import X509

@testable import HearthServer

@Suite struct SecretsAtRestTests {
    /// The database file (and its write-ahead log), searched byte by byte, holds no password, setup
    /// code, session token, private key or e-mail address.
    @Test func theDatabaseRevealsNoSecret() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let units = try await d.provisionThermostats(20)
        let password = "a long and unusual passphrase"
        let sessionToken = try await d.application.test(.router) { client in
            _ = try await makeOperator(d, client)
            let sessionToken = try await client.owner("ann.secret@example.com", password: password)
            let r = try await client.call(
                .post, "/api/v1/devices/claim",
                body: #"{"serial":"\#(units[0].serial)","setupCode":"\#(units[0].setupCode.digits)"}"#,
                token: sessionToken)
            #expect(r.status == 201)
            return sessionToken
        }
        var bytes = Data()
        for suffix in ["", "-wal"] {
            if let data = FileManager.default.contents(atPath: d.folder.databasePath + suffix) { bytes += data }
        }
        #expect(bytes.count > 10_000)
        var needles: [(String, Data)] = [
            ("owner password", Data(password.utf8)), ("operator password", Data(operatorPassword.utf8)),
            ("owner e-mail", Data("ann.secret@example.com".utf8)), ("operator e-mail", Data("op@example.com".utf8)),
            ("session token", Data(sessionToken.utf8)),
            ("KEK", try Data(contentsOf: d.folder.url.appendingPathComponent("kek.key"))),
            ("device CA key", d.folder.deviceCA.privateKey.rawRepresentation),
            ("root CA key", d.folder.rootCA.privateKey.rawRepresentation),
        ]
        for unit in units {
            needles.append(("setup code of \(unit.serial)", Data(unit.setupCode.digits.utf8)))
            needles.append(("formatted setup code of \(unit.serial)", Data(unit.setupCode.formatted.utf8)))
            needles.append(("private key of \(unit.serial)", unit.privateKey!.rawRepresentation))
            needles.append(
                (
                    "private key PEM of \(unit.serial)",
                    Data(unit.privateKey!.pemRepresentation.split(separator: "\n")[1].utf8)
                ))
        }
        for (what, needle) in needles {
            #expect(bytes.range(of: needle) == nil, "the database contains the \(what)")
        }
        // And it does hold what is not secret, so the search itself works.
        #expect(bytes.range(of: Data(units[0].serial.rawValue.utf8)) != nil)
    }

    @Test func tenThousandUnitsGetDistinctUnguessableCodesAndDeviceCACertificates() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let units = try await d.provisionThermostats(10_000)
        #expect(units.count == 10_000)
        #expect(try await d.store.deviceCount() == 10_000)
        #expect(Set(units.map(\.setupCode.digits)).count == 10_000, "setup codes are distinct")
        #expect(Set(units.map(\.serial)).count == 10_000, "serials are distinct")
        #expect(units.allSatisfy { !SetupCode.isGuessable($0.setupCode.digits) })
        // Not recoverable from the serial: no code is spelled by the serial's characters, and knowing
        // a serial's characters says nothing about its code's digits (independence over 10,000 units).
        var agree = 0
        for unit in units {
            let fromSerial = String(
                unit.serial.rawValue.compactMap { Base32.alphabet.firstIndex(of: $0).map { String($0 % 10) } }.joined()
                    .prefix(10))
            #expect(fromSerial != unit.setupCode.digits)
            agree += zip(fromSerial, unit.setupCode.digits).filter { $0 == $1 }.count
        }
        // Independent digits agree 1 time in 10: expect 10,000 of 100,000 positions; ±600 is > 6 sigma.
        #expect(abs(agree - 10_000) < 600, "serial and code digits agree \(agree) times")
        for unit in units {
            #expect(await verifyChain(leaf: unit.certificate, root: d.folder.deviceCA.certificate))
        }
        for unit in units.prefix(200) {
            #expect(!(await verifyChain(leaf: unit.certificate, root: d.folder.rootCA.certificate)))
        }
        // The stored hash verifies the unit's own code and not another's.
        let stored = try await d.store.device(units[0].serial)!
        #expect(SecretHasher.verify(units[0].setupCode.digits, against: stored.setupCodeHash))
        #expect(!SecretHasher.verify(units[1].setupCode.digits, against: stored.setupCodeHash))
    }
}

import Crypto
import Foundation
import HearthCore
import HearthTestSupport
import HearthUpdate
import Testing

@Suite struct CanonicalJSONTests {
    @Test func encodesAsSecuresystemslibDoes() throws {
        let value: JSONValue = [
            "b": 1, "a": "x\"y\\z", "c": [true, .null, -5], "é": "ünïcode", "B": ["z": 0, "y": "\n"],
        ]
        let text = String(decoding: try CanonicalJSON.encode(value), as: UTF8.self)
        #expect(
            text
                == "{\"B\":{\"y\":\"\n\",\"z\":0},\"a\":\"x\\\"y\\\\z\",\"b\":1,\"c\":[true,null,-5],\"é\":\"ünïcode\"}"
        )
        #expect(throws: CanonicalJSON.Unencodable.self) { try CanonicalJSON.encode(["x": 1.5]) }
        #expect(throws: CanonicalJSON.Unencodable.self) { try CanonicalJSON.encode([1e300]) }
    }
}

@Suite struct SignedMetadataTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func aThresholdCountsDistinctValidSignaturesOfTheRolesKeys() throws {
        let a = Curve25519.Signing.PrivateKey()
        let b = Curve25519.Signing.PrivateKey()
        let stranger = Curve25519.Signing.PrivateKey()
        let keys = [TUFKey(a.publicKey), TUFKey(b.publicKey)]
        let byID = Dictionary(uniqueKeysWithValues: keys.map { ($0.keyID, $0) })
        var md = SignedMetadata(signed: ["_type": "targets", "version": 3])
        try md.sign(with: a)
        #expect(md.validSignatures(by: byID) == 1)
        try md.sign(with: stranger)
        #expect(md.validSignatures(by: byID) == 1, "a key the role does not list does not count")
        try md.sign(with: b)
        #expect(md.validSignatures(by: byID) == 2)
        var tampered = md
        tampered.signed = ["_type": "targets", "version": 4]
        #expect(tampered.validSignatures(by: byID) == 0, "signatures cover the canonical signed part")
        var forged = md
        forged.signatures[keys[0].keyID] = String(repeating: "0", count: 128)
        #expect(forged.validSignatures(by: byID) == 1)
        // Round trip through JSON, and a key id signing twice is refused.
        #expect(try SignedMetadata(json: md.json) == md)
        let twice: JSONValue = [
            "signed": ["_type": "x"], "signatures": [["keyid": "k", "sig": "00"], ["keyid": "k", "sig": "01"]],
        ]
        #expect(throws: HearthError.self) { try SignedMetadata(json: twice) }
    }

    @Test func rootDelegatesEachRoleToItsKeys() throws {
        let keys = Dictionary(
            uniqueKeysWithValues: TUFRole.allCases.map { ($0, [TUFKey(Curve25519.Signing.PrivateKey().publicKey)]) })
        let root = try RootMetadata.make(version: 1, expires: t0, keys: keys, thresholds: [:])
        for role in TUFRole.allCases {
            let d = try RootMetadata.delegation(role, in: root)
            #expect(d.threshold == 1 && d.keys.keys.sorted() == keys[role]!.map(\.keyID))
        }
        #expect(throws: HearthError.self) {
            try RootMetadata.make(version: 1, expires: t0, keys: keys, thresholds: [.root: 2])
        }
        #expect(throws: HearthError.self) {
            try RootMetadata.make(version: 0, expires: t0, keys: keys, thresholds: [:])
        }
        #expect(throws: HearthError.self) {
            try RootMetadata.make(version: 1, expires: t0, keys: [.root: keys[.root]!], thresholds: [:])
        }
        #expect(RootMetadata.timestamp(t0.addingTimeInterval(0.75)) == "2027-01-15T08:00:00Z")
    }

    /// The reference implementation agrees: python-tuf parses Hearth's root.json, verifies its
    /// signature threshold, and encodes it canonically to the same bytes Hearth signed.
    @Test func pythonTUFVerifiesHearthsRoot() async throws {
        let python = try requiredPython(module: "tuf", package: "tuf")
        let rootKey = Curve25519.Signing.PrivateKey()
        var keys = Dictionary(
            uniqueKeysWithValues: TUFRole.allCases.map { ($0, [TUFKey(Curve25519.Signing.PrivateKey().publicKey)]) })
        keys[.root] = [TUFKey(rootKey.publicKey)]
        var md = SignedMetadata(
            signed: try RootMetadata.make(
                version: 1, expires: Date().addingTimeInterval(365 * 86_400), keys: keys, thresholds: [:]))
        try md.sign(with: rootKey)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent(
            "hearth-root-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: file) }
        try Data(md.json.text.utf8).write(to: file)
        let ok = try await ChildProcess.run(python, [tufScript, file.path])
        #expect(ok.status == 0, "\(ok.output)")
        guard case .object(let o)? = try? JSONValue.parse(Array(ok.output.utf8)),
            case .string(let canonical)? = o["canonical"]
        else {
            Issue.record("no answer: \(ok.output)")
            return
        }
        #expect(Array(canonical.utf8) == (try CanonicalJSON.encode(md.signed)), "the same canonical bytes")
        // Changed after signing: refused by the reference client too.
        var tampered = md
        tampered.signed = try RootMetadata.make(
            version: 2, expires: Date().addingTimeInterval(365 * 86_400), keys: keys, thresholds: [:])
        try Data(tampered.json.text.utf8).write(to: file)
        let refused = try await ChildProcess.run(python, [tufScript, file.path])
        #expect(refused.status == 1 && refused.output.contains("verified\": false"), "\(refused.output)")
    }
}

@Suite struct ReferenceClientTests {
    /// python-tuf's own client workflow (its TrustedMetadataSet, with its own clock) accepts the
    /// whole chain Hearth signs — root, timestamp, snapshot, targets — and the image against its
    /// target entry, custom fields included; a tampered image is refused by it too.
    @Test func pythonTUFAcceptsHearthsWholeChain() async throws {
        let python = try requiredPython(module: "tuf", package: "tuf")
        var repo = Repository()
        repo.now = Date()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("hearth-tuf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let snapshot = try repo.snapshot()
        let files: [(String, [UInt8])] = [
            ("root.json", repo.bytes(try repo.root())),
            ("timestamp.json", repo.bytes(try repo.timestamp(snapshot: snapshot))),
            ("snapshot.json", repo.bytes(snapshot)), ("targets.json", repo.bytes(try repo.targets())),
            ("image", repo.image),
        ]
        for (name, bytes) in files { try Data(bytes).write(to: dir.appendingPathComponent(name)) }
        let arguments =
            [tufScript] + files.dropLast().map { dir.appendingPathComponent($0.0).path } + [
                repo.name, dir.appendingPathComponent("image").path,
            ]
        let ok = try await ChildProcess.run(python, arguments)
        #expect(ok.status == 0 && ok.output.contains(#""model": "thermostat-t1""#), "\(ok.output)")
        var evil = repo.image
        evil[3] ^= 0x01
        try Data(evil).write(to: dir.appendingPathComponent("image"))
        let refused = try await ChildProcess.run(python, arguments)
        #expect(refused.status == 1 && refused.output.contains("LengthOrHashMismatchError"), "\(refused.output)")
    }
}

import Crypto
import Foundation
import HearthCore
import HearthUpdate
import Testing

/// A repository made in code: a key per role, and helpers that sign each role's document.
struct Repository {
    var keys = Dictionary(uniqueKeysWithValues: TUFRole.allCases.map { ($0, Curve25519.Signing.PrivateKey()) })
    var now = Date(timeIntervalSince1970: 1_800_000_000)
    let image = Array("firmware 1.3.0 for thermostat-t1".utf8)
    let name = "thermostat-t1-1.3.0.img"

    func signed(_ signed: JSONValue, by role: TUFRole) throws -> SignedMetadata {
        var md = SignedMetadata(signed: signed)
        try md.sign(with: keys[role]!)
        return md
    }

    func root(version: Int = 1) throws -> SignedMetadata {
        try signed(
            RootMetadata.make(
                version: version, expires: now.addingTimeInterval(365 * 86_400),
                keys: keys.mapValues { [TUFKey($0.publicKey)] }, thresholds: [:]), by: .root)
    }

    func targets(version: Int = 1, image: [UInt8]? = nil) throws -> SignedMetadata {
        try signed(
            RoleMetadata.targets(
                version: version, expires: now.addingTimeInterval(90 * 86_400),
                images: [name: (image ?? self.image, ["model": "thermostat-t1", "version": "1.3.0"])]), by: .targets)
    }

    func snapshot(version: Int = 1, targetsVersion: Int = 1) throws -> SignedMetadata {
        try signed(
            RoleMetadata.snapshot(
                version: version, expires: now.addingTimeInterval(7 * 86_400), targetsVersion: targetsVersion),
            by: .snapshot)
    }

    func timestamp(version: Int = 1, snapshot: SignedMetadata, expires: TimeInterval = 86_400) throws -> SignedMetadata
    {
        try signed(
            RoleMetadata.timestamp(
                version: version, expires: now.addingTimeInterval(expires), snapshotVersion: self.version(snapshot),
                snapshotBytes: bytes(snapshot)), by: .timestamp)
    }

    func version(_ md: SignedMetadata) -> Int {
        if case .object(let o) = md.signed, case .number(let v)? = o["version"] { Int(v) } else { 0 }
    }
    func bytes(_ md: SignedMetadata) -> [UInt8] { Array(md.json.text.utf8) }

    /// A client that trusts the whole chain at version 1.
    func trustingClient() throws -> TrustedMetadata {
        var client = try TrustedMetadata(root: root())
        let snap = try snapshot()
        try client.updateTimestamp(timestamp(snapshot: snap), now: now)
        try client.updateSnapshot(snap, bytes: bytes(snap), now: now)
        try client.updateTargets(targets(), now: now)
        return client
    }
}

@Suite("TUF client workflow: each attack of the specification is refused")
struct ClientTests {
    let repo = Repository()

    @Test func theWholeChainVerifiesAndTheImageMatches() throws {
        let client = try repo.trustingClient()
        try client.verifyTarget(repo.name, repo.image, limit: 1 << 20)
        #expect(try client.target(repo.name).custom["model"] == "thermostat-t1")
    }

    @Test func rollbackIsRefused() throws {
        var client = try repo.trustingClient()
        let snap2 = try repo.snapshot(version: 2)
        try client.updateTimestamp(repo.timestamp(version: 2, snapshot: snap2), now: repo.now)
        let old = try repo.timestamp(version: 1, snapshot: try repo.snapshot())
        #expect(throws: UpdateRefusal.rollback(.timestamp, offered: 1, trusted: 2)) {
            try client.updateTimestamp(old, now: repo.now)
        }
        // A newer timestamp that points at an older snapshot is a rollback too.
        var sneaky = try repo.timestamp(version: 3, snapshot: try repo.snapshot(version: 1))
        sneaky.signatures = [:]
        try sneaky.sign(with: repo.keys[.timestamp]!)
        #expect(throws: UpdateRefusal.rollback(.snapshot, offered: 1, trusted: 2)) {
            try client.updateTimestamp(sneaky, now: repo.now)
        }
    }

    @Test func freezeIsRefused() throws {
        var client = try TrustedMetadata(root: repo.root())
        let stale = try repo.timestamp(snapshot: try repo.snapshot(), expires: -1)
        #expect(throws: UpdateRefusal.self) { try client.updateTimestamp(stale, now: repo.now) }
        do { try client.updateTimestamp(stale, now: repo.now) } catch let e as UpdateRefusal {
            #expect("\(e)".contains("freeze"))
        }
        // An expired root stops everything (the device must get a new root first).
        let fresh = try repo.timestamp(snapshot: try repo.snapshot())
        #expect(throws: UpdateRefusal.self) {
            try client.updateTimestamp(fresh, now: repo.now.addingTimeInterval(400 * 86_400))
        }
    }

    @Test func mixAndMatchIsRefused() throws {
        var client = try TrustedMetadata(root: repo.root())
        let snap1 = try repo.snapshot(version: 1)
        let snap2 = try repo.snapshot(version: 2)
        try client.updateTimestamp(repo.timestamp(snapshot: snap1), now: repo.now)
        #expect(throws: UpdateRefusal.mismatch(.snapshot, "its hash is not the one the timestamp names")) {
            try client.updateSnapshot(snap2, bytes: repo.bytes(snap2), now: repo.now)
        }
        try client.updateSnapshot(snap1, bytes: repo.bytes(snap1), now: repo.now)
        #expect(throws: UpdateRefusal.mismatch(.targets, "version 2, the snapshot names 1")) {
            try client.updateTargets(repo.targets(version: 2), now: repo.now)
        }
    }

    @Test func arbitrarySoftwareAndEndlessDataAreRefused() throws {
        let client = try repo.trustingClient()
        var evil = repo.image
        evil[0] ^= 0xFF
        #expect(throws: UpdateRefusal.self) { try client.verifyTarget(repo.name, evil, limit: 1 << 20) }
        #expect(throws: UpdateRefusal.tooLong(repo.name, limit: repo.image.count)) {
            try client.verifyTarget(repo.name, repo.image + [0], limit: 1 << 20)
        }
        #expect(throws: UpdateRefusal.tooLong(repo.name, limit: 8)) {
            try client.verifyTarget(repo.name, repo.image, limit: 8)
        }
        #expect(throws: UpdateRefusal.self) { try client.verifyTarget("other.img", repo.image, limit: 1 << 20) }
    }

    @Test func tooFewSignaturesAreRefused() throws {
        var client = try TrustedMetadata(root: repo.root())
        var forged = try repo.timestamp(snapshot: try repo.snapshot())
        forged.signatures = [:]
        try forged.sign(with: Curve25519.Signing.PrivateKey())
        #expect(throws: UpdateRefusal.tooFewSignatures(.timestamp, valid: 0, threshold: 1)) {
            try client.updateTimestamp(forged, now: repo.now)
        }
        // The targets key cannot sign for the timestamp role.
        var wrongRole = try repo.timestamp(snapshot: try repo.snapshot())
        wrongRole.signatures = [:]
        try wrongRole.sign(with: repo.keys[.targets]!)
        #expect(throws: UpdateRefusal.tooFewSignatures(.timestamp, valid: 0, threshold: 1)) {
            try client.updateTimestamp(wrongRole, now: repo.now)
        }
    }

    @Test func aKeyRotatedOutByANewRootIsNoLongerTrusted() throws {
        var client = try repo.trustingClient()
        var rotated = repo
        let oldTimestampKey = repo.keys[.timestamp]!
        rotated.keys[.timestamp] = Curve25519.Signing.PrivateKey()
        // Root v2 lists the new timestamp key; the old root key signs it, as does the (unchanged) new one.
        try client.updateRoot(rotated.root(version: 2))
        var byOldKey = try rotated.timestamp(version: 2, snapshot: try rotated.snapshot(version: 2))
        byOldKey.signatures = [:]
        try byOldKey.sign(with: oldTimestampKey)
        #expect(throws: UpdateRefusal.tooFewSignatures(.timestamp, valid: 0, threshold: 1)) {
            try client.updateTimestamp(byOldKey, now: repo.now)
        }
        try client.updateTimestamp(
            rotated.timestamp(version: 2, snapshot: try rotated.snapshot(version: 2)), now: repo.now)
        // A root signed only by a new root key, without the trusted one, is refused; so is a replay of v2.
        var usurper = rotated
        usurper.keys[.root] = Curve25519.Signing.PrivateKey()
        #expect(throws: UpdateRefusal.tooFewSignatures(.root, valid: 0, threshold: 1)) {
            try client.updateRoot(usurper.root(version: 3))
        }
        #expect(throws: UpdateRefusal.rollback(.root, offered: 2, trusted: 2)) {
            try client.updateRoot(rotated.root(version: 2))
        }
    }
}

import Crypto
import Foundation
import HTTPTypes
import HearthCore
import HearthFixtures
import HearthMonitor
import HearthStorage
import HearthUpdate
import Hummingbird
import HummingbirdTesting
import Synchronization
import Testing

@testable import HearthServer

/// A maker's repository whose root delegates snapshot and timestamp to the deployment's online keys.
func makerRepository(for d: TestDeployment) async throws -> MemoryRepository {
    let repo = MemoryRepository()
    repo.now = d.time.now()
    guard case .object(let online) = try await d.updates.repository.onlinePublicKeys() else {
        throw HearthError(.internal, "no online keys")
    }
    repo.delegatedKeys = [
        .snapshot: [try TUFKey(json: online["snapshot"]!)], .timestamp: [try TUFKey(json: online["timestamp"]!)],
    ]
    return repo
}

extension TestDeployment {
    /// Writes the maker's publication and imports it.
    @discardableResult
    func importPublication(
        _ repo: MemoryRepository, roots: [Int: SignedMetadata] = [:],
        targetsSigners: [Curve25519.Signing.PrivateKey]? = nil
    ) async throws -> UpdateRepository.Imported {
        let folder = dir.appendingPathComponent("publish-\(UUID().uuidString)")
        try repo.writePublication(to: folder, roots: roots, targetsSigners: targetsSigners)
        return try await updates.repository.importPublication(from: folder)
    }

    func report(
        _ serial: DeviceSerial, _ phase: UpdatePhase, version: String = "1.0.0", target: String? = nil,
        reason: String? = nil
    ) async throws -> UpdateOffer {
        try UpdateOffer(
            payload: try await updates.received(
                report: UpdateReport(phase: phase, version: version, target: target, reason: reason).payload,
                from: serial, model: try ProductModelID("thermostat-t1")))
    }
}

@Suite("Update repository, rollouts and support periods on the server")
struct UpdateServiceTests {
    @Test func importChecksEverythingAndARefusalChangesNothing() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        _ = try await d.provisionThermostats(1)
        let repo = try await makerRepository(for: d)
        let name = try repo.addImage(model: "thermostat-t1", version: "1.1.0", minFrom: "1.0.0")
        repo.targetsVersion = 1

        // Each refusal, before anything was ever imported and after: the database is unchanged.
        func refused(_ why: String, _ body: () async throws -> Void) async throws {
            let before = try d.snapshot()
            do {
                try await body()
                Issue.record("\(why) was imported")
            } catch let e as HearthError { #expect(e.code != .internal, "\(why): \(e.message)") }
            #expect(try d.snapshot() == before, "\(why) changed the database")
        }
        let stranger = MemoryRepository()
        try await refused("a root without this server's online keys") {
            let folder = d.dir.appendingPathComponent("stranger")
            _ = try stranger.addImage(model: "thermostat-t1", version: "1.1.0")
            stranger.targetsVersion = 1
            try stranger.writePublication(to: folder)
            _ = try await d.updates.repository.importPublication(from: folder)
        }
        try await refused("targets signed by a stranger") {
            try await d.importPublication(repo, targetsSigners: [Curve25519.Signing.PrivateKey()])
        }
        try await refused("an image that is not the signed one") {
            let folder = d.dir.appendingPathComponent("tampered")
            try repo.writePublication(to: folder)
            let image = folder.appendingPathComponent("targets/\(name)")
            var bytes = try Data(contentsOf: image)
            bytes[10] ^= 1
            try bytes.write(to: image)
            _ = try await d.updates.repository.importPublication(from: folder)
        }
        let shorter = MemoryRepository()
        shorter.keys = repo.keys
        shorter.delegatedKeys = repo.delegatedKeys
        _ = try shorter.addImage(model: "thermostat-t1", version: "1.1.0", supportEnds: "2030-01-01")
        shorter.targetsVersion = 1
        try await refused("a release whose support period is shorter than the model's") {
            try await d.importPublication(shorter)
        }
        _ = try shorter.addImage(model: "unknown-model", version: "1.0.0")
        try await refused("an image for a model the server does not have") { try await d.importPublication(shorter) }

        let imported = try await d.importPublication(repo)
        #expect(imported.roots == [1] && imported.targetsVersion == 1 && imported.releases.map(\.name) == [name])
        #expect(try await d.updates.store.tufDocument("snapshot", version: nil)?.version == 1)
        #expect(try await d.updates.store.tufDocument("timestamp", version: nil)?.version == 1)
        try await refused("the same targets version again, with other content") {
            _ = try repo.addImage(model: "thermostat-t1", version: "1.2.0", minFrom: "1.0.0")
            try await d.importPublication(repo)
        }
        try await refused("a new root signed only by a new root key") {
            let usurper = try await makerRepository(for: d)
            usurper.rootVersion = 2
            try await d.importPublication(
                usurper, roots: [1: try repo.rootDocument(version: 1), 2: try usurper.rootDocument(version: 2)])
        }
    }

    @Test func theOnlineRolesAreRenewedBeforeTheyExpire() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        _ = try await d.provisionThermostats(1)
        let repo = try await makerRepository(for: d)
        _ = try repo.addImage(model: "thermostat-t1", version: "1.1.0", minFrom: "1.0.0")
        repo.targetsVersion = 1
        try await d.importPublication(repo)
        #expect(try await d.updates.repository.renewIfDue() == [])
        d.time.advance(by: 13 * 3600)  // the timestamp (1 day) has less than half left
        #expect(try await d.updates.repository.renewIfDue() == [.timestamp])
        #expect(try await d.updates.repository.renewIfDue() == [])
        d.time.advance(by: 3 * 86_400)  // the snapshot (7 days) has less than half left
        #expect(try await d.updates.repository.renewIfDue() == [.snapshot, .timestamp])
        // What is served is fresh, and a TUF client accepts the chain at the new time.
        try await d.application.test(.router) { client in
            let rootReply = try await client.call(.get, "/tuf/metadata/1.root.json")
            let root = try SignedMetadata(json: try #require(rootReply.json))
            var trusted = try TrustedMetadata(root: root)
            let ts = try await client.call(.get, "/tuf/metadata/timestamp.json")
            #expect(ts.headers[.cacheControl] == "no-store")
            try trusted.updateTimestamp(try SignedMetadata(json: try #require(ts.json)), now: d.time.now())
            let snap = try await client.call(.get, "/tuf/metadata/2.snapshot.json")
            try trusted.updateSnapshot(
                try SignedMetadata(json: try #require(snap.json)), bytes: Array(snap.text.utf8), now: d.time.now())
            try trusted.updateTargets(
                try SignedMetadata(
                    json: try #require(try await client.call(.get, "/tuf/metadata/1.targets.json").json)),
                now: d.time.now())
            #expect(try await client.call(.get, "/tuf/metadata/9.targets.json").status == 404)
            #expect(try await client.call(.get, "/tuf/metadata/..%2Fhearth.sqlite").status == 404)
            #expect(try await client.call(.get, "/tuf/targets/../hearth.sqlite").status == 404)
        }
    }

    @Test func imagesAreServedWholeOrFromAnOffsetForResume() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        _ = try await d.provisionThermostats(1)
        let repo = try await makerRepository(for: d)
        let name = try repo.addImage(model: "thermostat-t1", version: "1.1.0", minFrom: "1.0.0", size: 5000)
        repo.targetsVersion = 1
        try await d.importPublication(repo)
        let bytes = repo.images[name]!.bytes
        let path = "/tuf/targets/\(Data(SHA256.hash(data: bytes)).hex).\(name)"
        try await d.application.test(.router) { client in
            let whole = try await client.execute(uri: path, method: .get)
            #expect(
                whole.status == .ok && Array(whole.body.readableBytesView) == bytes
                    && whole.headers[.acceptRanges] == "bytes")
            var range = HTTPFields()
            range[.range] = "bytes=4000-"
            let rest = try await client.execute(uri: path, method: .get, headers: range)
            #expect(
                rest.status == .partialContent && Array(rest.body.readableBytesView) == Array(bytes[4000...])
                    && rest.headers[.contentRange] == "bytes 4000-4999/5000", "\(rest.status) \(rest.headers)")
            for bad in ["bytes=5000-", "bytes=10-20", "bytes=-5", "items=0-", "bytes=abc-"] {
                range[.range] = bad
                #expect(try await client.call(.get, path, headers: range).status == 416, "\(bad)")
            }
            #expect(
                try await client.call(.get, "/tuf/targets/\(String(repeating: "0", count: 64)).\(name)").status == 404,
                "a name with another hash")
            #expect(try await client.call(.get, "/tuf/targets/\(name)").status == 404, "without its hash")
        }
    }

    @Test func aStagedRolloutPausesByItselfAtTheFailureThreshold() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let units = try await d.provisionThermostats(40)
        let repo = try await makerRepository(for: d)
        let name = try repo.addImage(model: "thermostat-t1", version: "1.1.0", minFrom: "1.0.0")
        repo.targetsVersion = 1
        try await d.importPublication(repo)
        let plan = try RolloutPlan(stages: [50, 100], failureThreshold: 0.2, minimumSample: 3)
        let rollout = try await d.updates.startRollout(target: name, plan: plan, actor: "test").rollout
        let members = units.map(\.serial).filter { plan.includes(serial: $0, rollout: rollout.id, stage: 0) }
        let others = units.map(\.serial).filter { !plan.includes(serial: $0, rollout: rollout.id, stage: 0) }
        try #require(members.count >= 6 && !others.isEmpty, "a 50% stage of 40 devices: \(members.count)")

        // Devices in the stage are offered the release; the others not yet.
        #expect(try await d.report(members[0], .idle).target == name)
        #expect(try await d.report(others[0], .idle).target == nil)
        _ = try await d.report(members[0], .succeeded, version: "1.1.0", target: name)
        _ = try await d.report(members[1], .failed, target: name, reason: "arbitrary_software: hash mismatch")
        #expect(try await d.updates.view(rollout.id).rollout.state == "active", "2 finished: under the minimum sample")
        #expect(
            try await d.report(members[1], .idle).target == nil,
            "a device that failed is not offered it again, even after a restart")
        _ = try await d.report(members[2], .rolledBack, target: name, reason: "health check")
        // 2 failures of 3 finished (67% > 20%): paused by itself, and no more offers.
        let paused = try await d.updates.view(rollout.id)
        #expect(
            paused.rollout.state == "paused" && paused.rollout.note?.contains("paused automatically") == true,
            "\(paused.rollout)")
        #expect(paused.tally == RolloutTally(members: members.count, succeeded: 1, failed: 2))
        #expect(try await d.report(members[3], .idle).target == nil)
        #expect(
            try await d.store.auditRecords().contains {
                $0.kind == "rollout.changed" && $0.actor == "policy" && $0.detail.contains("paused automatically")
            })

        // Operators resume, pause and abort through the API; nonsense moves are refused.
        try await d.application.test(.router) { client in
            let op = try await makeOperator(d, client)
            let owner = try await client.owner("owner@example.com")
            let path = "/api/v1/rollouts/\(rollout.id)/control"
            #expect(try await client.call(.post, path, body: #"{"action":"resume"}"#, token: owner).status == 403)
            #expect(try await client.call(.post, path, body: #"{"action":"explode"}"#, token: op).status == 400)
            #expect(
                try await client.call(.post, path, body: #"{"action":"resume"}"#, token: op).string("state") == "active"
            )
            // An operator moves a rollout to its next stage by hand (stage 2 of 2: every device).
            let advanced = try await client.call(.post, path, body: #"{"action":"advance"}"#, token: op)
            #expect(
                advanced.status == 200 && advanced.json?["stage"] == 2 && advanced.json?["percent"] == 100,
                "\(advanced.text)")
            #expect(try await d.updates.view(rollout.id).rollout.stage == 1, "stored")
            #expect(
                try await client.call(.post, path, body: #"{"action":"pause"}"#, token: op).string("state") == "paused")
            #expect(
                try await client.call(.post, path, body: #"{"action":"abort"}"#, token: op).string("state") == "aborted"
            )
            // Operators read rollouts, one or all, with their tallies; owners and strangers cannot.
            let one = try await client.call(.get, "/api/v1/rollouts/\(rollout.id)", token: op)
            #expect(
                one.status == 200 && one.string("state") == "aborted" && one.string("target") == name, "\(one.text)")
            #expect(one.json?["tally"]?["succeeded"] == 1 && one.json?["tally"]?["failed"] == 2, "\(one.text)")
            #expect(try await client.call(.get, "/api/v1/rollouts/RO-nonexistent", token: op).status == 404)
            let all = try await client.call(.get, "/api/v1/rollouts", token: op)
            #expect(all.status == 200 && all.text.contains(rollout.id), "\(all.text)")
            #expect(try await client.call(.get, "/api/v1/rollouts", token: owner).status == 403)
            #expect(try await client.call(.get, "/api/v1/rollouts/\(rollout.id)", token: nil).status == 401)
            // A model's releases are public, with their notes; the online keys are for operators.
            let releases = try await client.call(.get, "/api/v1/models/thermostat-t1/releases")
            #expect(releases.status == 200, "\(releases.text)")
            guard case .array(let listed)? = releases.json?["releases"] else {
                Issue.record("no releases in \(releases.text)")
                return
            }
            #expect(listed.count == 1 && listed[0]["target"] == .string(name) && listed[0]["version"] == "1.1.0")
            #expect(try await client.call(.get, "/api/v1/models/no-such-model/releases").status == 404)
            let keys = try await client.call(.get, "/api/v1/updates/online-keys", token: op)
            let published = try await d.updates.repository.onlinePublicKeys()
            #expect(keys.status == 200 && keys.json == published, "\(keys.text)")
            #expect(keys.json?["snapshot"] != nil && keys.json?["timestamp"] != nil, "\(keys.text)")
            #expect(try await client.call(.get, "/api/v1/updates/online-keys", token: owner).status == 403)
            let again = try await client.call(.post, path, body: #"{"action":"resume"}"#, token: op)
            #expect(again.status == 409, "\(again.text)")
            #expect(
                try await client.call(
                    .post, "/api/v1/rollouts/RO-nonexistent/control", body: #"{"action":"pause"}"#, token: op
                ).status == 404)
            // Bad plans are refused.
            for body in [
                #"{"target":"\#(name)","stages":[10,5]}"#, #"{"target":"\#(name)","failureThreshold":1.5}"#,
                #"{"target":"\#(name)","stages":[10,50]}"#, #"{"target":"nope.img"}"#,
                #"{"target":"\#(name)","extra":1}"#,
            ] {
                let r = try await client.call(.post, "/api/v1/rollouts", body: body, token: op)
                #expect(r.status == 400 || r.status == 404 || r.status == 422, "\(body): \(r.text)")
            }
            d.time.advance(by: 1)
            let fresh = try await client.call(
                .post, "/api/v1/rollouts", body: #"{"target":"\#(name)","stages":[100]}"#, token: op)
            #expect(fresh.status == 201, "\(fresh.text)")
            // A new rollout starts from a clean tally, and offers the release again to devices that failed before.
            let freshID = try #require(fresh.string("id"))
            #expect(
                try await d.updates.view(freshID).tally == RolloutTally(members: units.count, succeeded: 0, failed: 0))
            #expect(try await d.report(members[1], .idle).target == name)
            #expect(
                try await client.call(.post, "/api/v1/rollouts", body: #"{"target":"\#(name)"}"#, token: op).status
                    == 409, "one live rollout per model")
        }
    }

    @Test func aStageThatFinishesAdvancesAndTheLastCompletes() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let units = try await d.provisionThermostats(12)
        let repo = try await makerRepository(for: d)
        let name = try repo.addImage(model: "thermostat-t1", version: "1.1.0", minFrom: "1.0.0")
        repo.targetsVersion = 1
        try await d.importPublication(repo)
        let plan = try RolloutPlan(stages: [30, 100], failureThreshold: 0.5, minimumSample: 3)
        let id = try await d.updates.startRollout(target: name, plan: plan, actor: "test").rollout.id
        for serial in units.map(\.serial) where plan.includes(serial: serial, rollout: id, stage: 0) {
            _ = try await d.report(serial, .succeeded, version: "1.1.0", target: name)
        }
        // Any report lets the rollout decide, as in a fleet; the first stage (30 % of 12, by hash of a
        // random rollout id) is sometimes empty, and then only a device outside it reports.
        if let outside = units.map(\.serial).first(where: { !plan.includes(serial: $0, rollout: id, stage: 0) }) {
            _ = try await d.report(outside, .idle)
        }
        #expect(try await d.updates.view(id).rollout.stage == 1)
        for serial in units.map(\.serial) { _ = try await d.report(serial, .succeeded, version: "1.1.0", target: name) }
        #expect(try await d.updates.view(id).rollout.state == "completed")
    }

    @Test func theSupportPeriodIsPublishedExtendedAndNeverShortened() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try #require(try await d.provisionThermostats(1).first)
        try await d.application.test(.router) { client in
            let op = try await makeOperator(d, client)
            let owner = try await client.owner("owner@example.com")
            let path = "/api/v1/models/thermostat-t1/support"
            #expect(
                try await client.call(.post, path, body: #"{"supportEnds":"2035-01-31"}"#, token: owner).status == 403)
            for bad in [
                #"{"supportEnds":"2035-02-30"}"#, #"{"supportEnds":"soon"}"#, #"{"supportEnds":20350131}"#, #"{}"#,
            ] {
                #expect(try await client.call(.post, path, body: bad, token: op).status == 400, "\(bad)")
            }
            let extended = try await client.call(.post, path, body: #"{"supportEnds":"2035-01-31"}"#, token: op)
            #expect(
                extended.status == 200
                    && extended.string("supportEndsText") == "Security updates until 31 January 2035",
                "\(extended.text)")
            let shortened = try await client.call(.post, path, body: #"{"supportEnds":"2034-12-31"}"#, token: op)
            #expect(shortened.status == 409 && shortened.text.contains("never shortened"), "\(shortened.text)")
            #expect(
                try await d.store.model(try ProductModelID("thermostat-t1"))?.supportEnds == CalendarDate("2035-01-31"))
            #expect(try await d.store.auditRecords().last?.kind == "model.support_shortening_refused")
            // The public model and its page show it; the owner's device shows it.
            #expect(
                try await client.call(.get, "/api/v1/models/thermostat-t1").string("supportEndsText")
                    == "Security updates until 31 January 2035")
            #expect(try await client.call(.get, "/models").text.contains("31 January 2035"))
            try await client.call(
                .post, "/api/v1/devices/claim",
                body: #"{"serial":"\#(unit.serial)","setupCode":"\#(unit.setupCode.digits)"}"#, token: owner)
            let view = try await client.call(.get, "/api/v1/devices/\(unit.serial)/update", token: owner)
            #expect(view.status == 200 && view.text.contains("Security updates until 31 January 2035"), "\(view.text)")
            // Past the end, devices are told and owners see it.
            d.time.advance(by: 20 * 365 * 86_400)
            let again = try await client.call(
                .post, "/api/v1/sessions",
                body: #"{"email":"owner@example.com","password":"a long and unusual passphrase"}"#
            ).string("token")
            let past = try await client.call(.get, "/api/v1/devices/\(unit.serial)/update", token: again)
            #expect(
                past.text.contains(#""supportEnded":true"#) && past.text.contains("ended on 31 January 2035"),
                "\(past.text)")
            #expect(try await d.report(unit.serial, .idle).supportEnded)
            #expect(try await client.call(.get, "/models").text.contains("ended on <strong>") == false)
            #expect(try await client.call(.get, "/models").text.contains("ended on 31 January 2035"))
            #expect(
                try await client.call(
                    .get, "/api/v1/devices/\(unit.serial)/update", token: try await client.owner("other@example.com")
                ).status == 404)
        }
    }
}

/// What update reports tell the security detectors (issue 16): firmware never released — not a
/// release and newer than every release — and the device's own integrity alerts; a factory version
/// older than the releases never alerts. (A report whose version is not MAJOR.MINOR.PATCH is
/// refused before, with PUBACK 0x99.)
@Suite struct FirmwareObservationTests {
    final class Seen: Sendable {
        let list = Mutex<[Observation]>([])
    }

    @Test func onlyFirmwareNewerThanEveryReleaseIsFlagged() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try await d.provisionThermostats(1)[0]
        let seen = Seen()
        d.updates.attach { _, observation in seen.list.withLock { $0.append(observation) } }
        // No release yet: nothing to compare against, nothing flagged.
        _ = try await d.report(unit.serial, .idle, version: "7.0.0")
        #expect(seen.list.withLock { $0 }.isEmpty)
        let repo = try await makerRepository(for: d)
        _ = try repo.addImage(model: "thermostat-t1", version: "1.1.0", minFrom: "1.0.0")
        repo.targetsVersion = 1
        try await d.importPublication(repo)
        for version in ["1.1.0", "1.0.0", "0.9.3"] {
            d.time.advance(by: 60)
            _ = try await d.report(unit.serial, .idle, version: version)
        }
        #expect(seen.list.withLock { $0 }.isEmpty, "a release, or older than the releases: a factory version")
        for version in ["1.1.1", "99.0.0"] {
            d.time.advance(by: 60)
            _ = try await d.report(unit.serial, .idle, version: version)
        }
        d.time.advance(by: 60)
        _ = try await d.report(unit.serial, .integrityFailure, version: "0.0.0", reason: "no slot verifies")
        #expect(
            seen.list.withLock { $0 } == [
                .firmware(version: "1.1.1", released: false), .firmware(version: "99.0.0", released: false),
                .integrityAlert("integrity_failure: no slot verifies"),
            ])
    }
}

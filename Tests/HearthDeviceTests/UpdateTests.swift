import Crypto
import Foundation
import HearthCore
import HearthDevice
import HearthFixtures
import HearthUpdate
import Synchronization
import Testing

/// A device with factory firmware 1.0.0 in slot A and a repository (in memory, signed in code)
/// that offers 1.1.0.
struct UpdateRig {
    let repo = MemoryRepository()
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("hearth-upd-\(UUID().uuidString)")
    let model: ProductModelID
    var factory = "", next = ""

    init(configure: (MemoryRepository) -> Void = { _ in }) throws {
        model = try ProductModelID("thermostat-t1")
        configure(repo)
        factory = try repo.addImage(model: "thermostat-t1", version: "1.0.0")
        try repo.publish()
        try repo.flashFactory(folder, name: factory)
        next = try repo.addImage(model: "thermostat-t1", version: "1.1.0", minFrom: "1.0.0", size: 200 * 1024)
        try repo.publish()
    }

    func updater(capacity: Int = 64 << 20) -> FirmwareUpdater {
        FirmwareUpdater(
            device: folder, model: model, fetcher: repo, clock: ManualTimeSource(repo.now), slotCapacity: capacity)
    }

    /// Installs `name` and expects a refusal for `attack`; then the device still boots 1.0.0 from slot A.
    func expectRefused(_ name: String, attack: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let updater = updater()
        #expect(try await updater.boot() == .booted(.a, try firmware(factory)), sourceLocation: sourceLocation)
        do {
            _ = try await updater.install(name) { _ in }
            Issue.record("\(attack) was not refused", sourceLocation: sourceLocation)
        } catch let refusal as UpdateRefusal {
            #expect(refusal.attack == attack, "\(refusal)", sourceLocation: sourceLocation)
        }
        #expect(
            try await self.updater().boot() == .booted(.a, try firmware(factory)), "still on the old version",
            sourceLocation: sourceLocation)
    }

    func firmware(_ name: String) throws -> FirmwareTarget {
        let image = repo.images[name]!
        return try FirmwareTarget(
            name: name, length: image.bytes.count, sha256: Data(SHA256.hash(data: image.bytes)).hex,
            custom: image.custom)
    }

    func tamper(_ slot: FirmwareSlot, file: String = "image") throws {
        let url = folder.appendingPathComponent("update/slot-\(slot.rawValue)/\(file)")
        var bytes = try Data(contentsOf: url)
        bytes[bytes.count / 2] ^= 0x01
        try bytes.write(to: url)
    }

    func cleanUp() { try? FileManager.default.removeItem(at: folder) }
}

@Suite("Device updates: TUF workflow, A/B install, verified boot")
struct UpdateTests {
    @Test func anUpdateInstallsIntoTheOtherSlotRunsOnTrialAndCommits() async throws {
        let rig = try UpdateRig()
        defer { rig.cleanUp() }
        let updater = rig.updater()
        #expect(try await updater.boot() == .booted(.a, try rig.firmware(rig.factory)))
        let phases = Mutex<[UpdatePhase]>([])
        let installed = try await updater.install(rig.next) { p in phases.withLock { $0.append(p) } }
        #expect(installed.version == (try FirmwareVersion("1.1.0")))
        #expect(phases.withLock { $0 } == [.downloading, .verifying, .installing, .rebooting])
        #expect(
            rig.repo.fetched.withLock { $0 }.prefix(4) == [
                "metadata/2.root.json", "metadata/timestamp.json", "metadata/2.snapshot.json",
                "metadata/2.targets.json",
            ])
        // Restart: the new version runs on trial; it commits once healthy.
        let rebooted = rig.updater()
        #expect(try await rebooted.boot() == .trial(.b, try rig.firmware(rig.next)))
        try await rebooted.commit()
        let committed = rig.updater()
        #expect(try await committed.boot() == .booted(.b, try rig.firmware(rig.next)))
        // The same image again is not newer: refused as a rollback of the firmware version.
        do {
            _ = try await committed.install(rig.next) { _ in }
            Issue.record("reinstalled")
        } catch let r as UpdateRefusal { #expect(r.attack == "rollback") }
    }

    @Test func aTrialThatRestartsWithoutCommittingRollsBack() async throws {
        let rig = try UpdateRig()
        defer { rig.cleanUp() }
        let updater = rig.updater()
        _ = try await updater.boot()
        _ = try await updater.install(rig.next) { _ in }
        #expect(try await rig.updater().boot() == .trial(.b, try rig.firmware(rig.next)))
        guard case .rolledBack(.a, let f, _) = try await rig.updater().boot() else {
            Issue.record("no rollback")
            return
        }
        #expect(f.version == (try FirmwareVersion("1.0.0")))
    }

    /// A version on trial that delivers no reading within the health deadline is rolled back by
    /// itself: reported with the reason, the device restarted, and the next boot runs the old
    /// version; one that does deliver in time is committed and not restarted.
    @Test func aTrialWithoutAReadingBeforeTheHealthDeadlineRollsBack() async throws {
        for deliversAReading in [false, true] {
            let rig = try UpdateRig()
            defer { rig.cleanUp() }
            let installer = rig.updater()
            _ = try await installer.boot()
            _ = try await installer.install(rig.next) { _ in }
            let updater = rig.updater()
            let outcome = try await updater.boot()
            #expect(outcome == .trial(.b, try rig.firmware(rig.next)))
            let restarts = Restarts()
            let controller = UpdateController(updater: updater, healthDeadline: .milliseconds(300)) {
                restarts.count.withLock { $0 += 1 }
            }
            await controller.started(outcome)
            if deliversAReading { await controller.healthy() }
            try await Task.sleep(for: .milliseconds(300))
            for _ in 0..<100 where !deliversAReading && restarts.count.withLock({ $0 }) == 0 {
                try await Task.sleep(for: .milliseconds(50))
            }
            let last = await controller.reports.last
            if deliversAReading {
                #expect(last?.phase == .succeeded && restarts.count.withLock { $0 } == 0, "\(String(describing: last))")
                #expect(try await rig.updater().boot() == .booted(.b, try rig.firmware(rig.next)))
            } else {
                #expect(restarts.count.withLock { $0 } == 1, "restarted into the old version")
                #expect(
                    last?.phase == .rolledBack && last?.reason?.contains("no reading delivered") == true,
                    "\(String(describing: last))")
                guard case .booted(.a, let f) = try await rig.updater().boot() else {
                    Issue.record("the old slot does not run")
                    return
                }
                #expect(f.version == (try FirmwareVersion("1.0.0")))
            }
        }
    }

    @Test func anInterruptedDownloadResumes() async throws {
        let rig = try UpdateRig()
        defer { rig.cleanUp() }
        let target = try rig.firmware(rig.next)
        let partial = rig.folder.appendingPathComponent("update/download/\(target.sha256).partial")
        let updater = rig.updater()
        _ = try await updater.boot()
        try Data(rig.repo.images[rig.next]!.bytes.prefix(70_000)).write(to: partial)
        _ = try await updater.install(rig.next) { _ in }
        #expect(try await rig.updater().boot() == .trial(.b, target))
    }

    // MARK: Each attack of the TUF specification, refused on the device

    @Test func rollbackOfMetadataIsRefused() async throws {
        let rig = try UpdateRig()
        defer { rig.cleanUp() }
        let updater = rig.updater()
        _ = try await updater.boot()
        _ = try await updater.install(rig.next) { _ in }  // the device now trusts timestamp v2
        _ = try await rig.updater().boot()  // 1.1.0 on trial
        _ = try await rig.updater().boot()  // not committed: rolled back to 1.0.0 on A, still trusting timestamp v2
        let stale = try rig.repo.signed(
            RoleMetadata.timestamp(
                version: 1, expires: rig.repo.now.addingTimeInterval(86_400), snapshotVersion: 1,
                snapshotBytes: rig.repo.file("metadata/1.snapshot.json")!), by: .timestamp)
        rig.repo.put("metadata/timestamp.json", stale)
        try await rig.expectRefused(rig.next, attack: "rollback")
    }

    @Test func anOlderFirmwareValidlySignedIsRefused() async throws {
        let rig = try UpdateRig()
        defer { rig.cleanUp() }
        let older = try rig.repo.addImage(model: "thermostat-t1", version: "0.9.0")
        try rig.repo.publish()
        try await rig.expectRefused(older, attack: "rollback")
    }

    @Test func freezeIsRefused() async throws {
        let rig = try UpdateRig()
        defer { rig.cleanUp() }
        rig.repo.now = rig.repo.now.addingTimeInterval(-2 * 86_400)  // signed two days ago: expired
        try rig.repo.publish()
        rig.repo.now = rig.repo.now.addingTimeInterval(2 * 86_400)
        try await rig.expectRefused(rig.next, attack: "freeze")
    }

    @Test func mixAndMatchIsRefused() async throws {
        let rig = try UpdateRig()
        defer { rig.cleanUp() }
        // The snapshot names targets v2, but what is served as v2 is the (validly signed) v1.
        rig.repo.put("metadata/2.targets.json", rig.repo.file("metadata/1.targets.json")!)
        try await rig.expectRefused(rig.next, attack: "mix_and_match")
    }

    @Test func arbitrarySoftwareIsRefused() async throws {
        let rig = try UpdateRig()
        defer { rig.cleanUp() }
        let target = try rig.firmware(rig.next)
        var evil = rig.repo.images[rig.next]!.bytes
        evil[100] ^= 0xFF
        rig.repo.put("targets/\(target.sha256).\(rig.next)", evil)
        try await rig.expectRefused(rig.next, attack: "arbitrary_software")
    }

    @Test func endlessDataIsRefused() async throws {
        let rig = try UpdateRig()
        defer { rig.cleanUp() }
        let target = try rig.firmware(rig.next)
        rig.repo.put(
            "targets/\(target.sha256).\(rig.next)",
            rig.repo.images[rig.next]!.bytes + [UInt8](repeating: 0, count: 1 << 20))
        try await rig.expectRefused(rig.next, attack: "endless_data")
        // A slot smaller than the image: refused before it is filled.
        let small = rig.updater(capacity: 100_000)
        _ = try await small.boot()
        do {
            _ = try await small.install(rig.next) { _ in }
            Issue.record("accepted")
        } catch let r as UpdateRefusal { #expect(r.attack == "endless_data") }
    }

    @Test func anImageForAnotherModelIsRefused() async throws {
        let rig = try UpdateRig()
        defer { rig.cleanUp() }
        let lock = try rig.repo.addImage(model: "smartlock-l1", version: "2.0.0")
        try rig.repo.publish()
        try await rig.expectRefused(lock, attack: "wrong_model")
    }

    @Test func tooFewSignaturesAreRefused() async throws {
        let rig = try UpdateRig { repo in
            repo.keys[.targets] = [Curve25519.Signing.PrivateKey(), Curve25519.Signing.PrivateKey()]
            repo.thresholds[.targets] = 2
        }
        defer { rig.cleanUp() }
        let newer = try rig.repo.addImage(model: "thermostat-t1", version: "1.2.0", minFrom: "1.0.0")
        try rig.repo.publish(targetsSigners: [rig.repo.keys[.targets]![0]])
        try await rig.expectRefused(newer, attack: "too_few_signatures")
    }

    @Test func aTargetsKeyRevokedByRootRotationIsRefused() async throws {
        let rig = try UpdateRig()
        defer { rig.cleanUp() }
        // Root v2 replaces the targets key (signed by the unchanged root key).
        let revoked = rig.repo.keys[.targets]!
        rig.repo.keys[.targets] = [Curve25519.Signing.PrivateKey()]
        rig.repo.rootVersion = 2
        rig.repo.put("metadata/2.root.json", try rig.repo.rootDocument(version: 2))
        let newer = try rig.repo.addImage(model: "thermostat-t1", version: "1.2.0", minFrom: "1.0.0")
        try rig.repo.publish(targetsSigners: revoked)
        try await rig.expectRefused(newer, attack: "too_few_signatures")
        // Signed by the new key, it installs; and the old slot still boots under the new root
        // (its manifest was re-signed by the new targets metadata during the refresh).
        try rig.repo.publish()
        let updater = rig.updater()
        _ = try await updater.boot()
        _ = try await updater.install(newer) { _ in }
        let onTrial = rig.updater()
        #expect(try await onTrial.boot() == .trial(.b, try rig.firmware(newer)))
        try await onTrial.commit()
        try rig.tamper(.b)
        guard case .fellBack(.a, let f, _) = try await rig.updater().boot() else {
            Issue.record("slot A did not boot under root v2")
            return
        }
        #expect(f.version == (try FirmwareVersion("1.0.0")))
    }

    // MARK: Verified boot

    @Test func aTamperedActiveSlotFallsBackAndBothTamperedIsAnIntegrityFailure() async throws {
        let rig = try UpdateRig()
        defer { rig.cleanUp() }
        let updater = rig.updater()
        _ = try await updater.boot()
        _ = try await updater.install(rig.next) { _ in }
        let onTrial = rig.updater()
        _ = try await onTrial.boot()
        try await onTrial.commit()
        #expect(try await rig.updater().boot() == .booted(.b, try rig.firmware(rig.next)))
        try rig.tamper(.b)
        guard case .fellBack(.a, let f, let why) = try await rig.updater().boot() else {
            Issue.record("no fallback")
            return
        }
        #expect(f.version == (try FirmwareVersion("1.0.0")) && why.contains("slot b"))
        try rig.tamper(.a, file: "manifest.json")
        guard case .integrityFailure(let reason) = try await rig.updater().boot() else {
            Issue.record("booted a tampered slot")
            return
        }
        #expect(reason.contains("slot a") && reason.contains("slot b"))
    }

    @Test func aRefusalIsReportedWithTheAttackItStopped() async throws {
        let rig = try UpdateRig()
        defer { rig.cleanUp() }
        let lock = try rig.repo.addImage(model: "smartlock-l1", version: "2.0.0")
        try rig.repo.publish()
        let updater = rig.updater()
        let controller = UpdateController(updater: updater) { Issue.record("restarted after a refused update") }
        await controller.started(try await updater.boot())
        await controller.install(lock)
        let last = try #require(await controller.reports.last)
        #expect(last.phase == .failed && last.target == lock && last.version == "1.0.0")
        #expect(last.reason?.hasPrefix("wrong_model:") == true, "\(last.reason ?? "")")
        #expect(await controller.reports.first?.phase == .idle)
    }
}

/// How often an update controller restarted the device.
final class Restarts: Sendable {
    let count = Mutex(0)
}

import Foundation
import HearthCore
import HearthUpdate

/// Runs a device's updates beside its normal work (Code of Practice guideline 3): answers the
/// server's offers by installing through ``FirmwareUpdater``, reports every phase, restarts into
/// the new slot, commits it once the device is healthy again (a reading delivered) or rolls back
/// by itself when the deadline passes. The device's control loop never waits for any of it.
public actor UpdateController {
    public let updater: FirmwareUpdater
    let reboot: @Sendable () async -> Void
    let healthDeadline: Duration
    let log: @Sendable (String) -> Void
    var agent: DeviceAgent?
    var busy = false
    var trialTarget: String?
    public private(set) var supportEnds: CalendarDate?
    public private(set) var supportEnded = false
    /// The last refusal or failure, for the device's log and tests.
    public private(set) var lastFailure: String?
    /// The latest reports made (at most 32), for the device's log and tests.
    public private(set) var reports: [UpdateReport] = []

    /// - Parameters:
    ///   - reboot: restarts the device into the slot `boot.json` names (the process execs itself).
    ///   - healthDeadline: how long a new version has to deliver a reading before it is rolled back.
    public init(
        updater: FirmwareUpdater, healthDeadline: Duration = .seconds(120),
        log: @escaping @Sendable (String) -> Void = { _ in }, reboot: @escaping @Sendable () async -> Void
    ) {
        self.updater = updater
        self.healthDeadline = healthDeadline
        self.log = log
        self.reboot = reboot
    }

    public func attach(_ agent: DeviceAgent) { self.agent = agent }

    /// After verified boot: tell the server where the device stands, and start the health
    /// deadline of a version on trial.
    public func started(_ outcome: BootOutcome) async {
        let version = outcome.firmware?.version.description ?? "0.0.0"
        switch outcome {
        case .booted(_, let f):
            await report(UpdateReport(phase: .idle, version: version, target: f.name))
        case .trial(_, let f):
            trialTarget = f.name
            await report(UpdateReport(phase: .rebooting, version: version, target: f.name))
            let deadline = healthDeadline
            Task {
                try? await Task.sleep(for: deadline)
                await self.deadlinePassed()
            }
        case .rolledBack(_, let f, let reason):
            await report(UpdateReport(phase: .rolledBack, version: version, target: nil, reason: reason))
            log("rolled back to \(f.version): \(reason)")
        case .fellBack(_, _, let reason):
            await report(UpdateReport(phase: .fellBack, version: version, reason: reason))
            log("SECURITY: the active slot failed verification; started the other one (\(reason))")
        case .integrityFailure(let reason):
            log("SECURITY: no slot verifies (\(reason))")
        }
    }

    /// The device works again on the new version (its first reading was delivered): commit.
    public func healthy() async {
        guard let target = trialTarget else { return }
        trialTarget = nil
        do {
            try await updater.commit()
            let version = await updater.running?.version.description ?? "0.0.0"
            await report(UpdateReport(phase: .succeeded, version: version, target: target))
            log("update to \(version) committed")
        } catch {
            log("could not commit the update: \(error)")
        }
    }

    func deadlinePassed() async {
        guard let target = trialTarget else { return }
        trialTarget = nil
        lastFailure = "no reading delivered within \(healthDeadline) of starting the new version"
        do { try await updater.rollback() } catch { log("could not roll back: \(error)") }
        await report(
            UpdateReport(
                phase: .rolledBack, version: await updater.running?.version.description ?? "0.0.0", target: target,
                reason: lastFailure))
        log("health check failed; rolling back")
        await reboot()
    }

    /// The server's answer to a report: remember the support period; install an offered target.
    public func offered(_ offer: UpdateOffer) async {
        supportEnds = offer.supportEnds
        if offer.supportEnded, !supportEnded {
            log("security updates for this product ended on \(offer.supportEnds.plainEnglish)")
        }
        supportEnded = offer.supportEnded
        guard let name = offer.target, !busy, trialTarget == nil else { return }
        busy = true
        Task { await self.install(name) }
    }

    /// Installs `name` now (what an offer starts); returns when it restarted or failed.
    public func install(_ name: String) async {
        let running = await updater.running?.version.description ?? "0.0.0"
        do {
            let target = try await updater.install(name) { phase in
                await self.report(UpdateReport(phase: phase, version: running, target: name))
            }
            log("installed \(target.version) in the inactive slot; restarting into it")
            await reboot()
        } catch {
            let reason = (error as? UpdateRefusal).map { "\($0.attack): \($0)" } ?? "\(error)"
            lastFailure = reason
            log("update \(name) refused: \(reason)")
            await report(UpdateReport(phase: .failed, version: running, target: name, reason: reason))
        }
        busy = false
    }

    func report(_ report: UpdateReport) async {
        reports.append(report)
        if reports.count > 32 { reports.removeFirst() }
        await agent?.reportUpdate(report)
    }
}

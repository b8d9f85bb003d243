import Foundation
import HearthCore
import HearthUpdate
import Testing

@Suite("Firmware versions, release notes and rollout policy")
struct FirmwareTests {
    @Test func versionsParseStrictlyAndOrderNumerically() throws {
        #expect(try FirmwareVersion("1.10.0") > FirmwareVersion("1.9.9"))
        #expect(try FirmwareVersion("2.0.0") > FirmwareVersion("1.99.99"))
        #expect(try FirmwareVersion("0.0.0").description == "0.0.0")
        for bad in [
            "", "1", "1.2", "1.2.3.4", "1.02.3", "-1.0.0", "1.a.0", "1..0", " 1.0.0", "1.0.0 ", "1234567.0.0",
            "1.0.0\n", "١.٠.٠",
        ] {
            #expect(throws: HearthError.self, "\(bad)") { try FirmwareVersion(bad) }
        }
    }

    @Test func releaseNotesRoundTripAndBadOnesAreRefused() throws {
        let model = try ProductModelID("thermostat-t1")
        let target = try FirmwareTarget(
            name: "thermostat-t1-1.1.0.img", length: 10, sha256: String(repeating: "a", count: 64), model: model,
            version: try FirmwareVersion("1.1.0"),
            minimumFrom: try FirmwareVersion("1.0.0"), fixes: "Fixes the schedule crash.", severity: .critical,
            keepsWorking: false, downtimeSeconds: 30, supportEnds: CalendarDate("2031-12-31")!
        )
        #expect(
            try FirmwareTarget(name: target.name, length: 10, sha256: target.sha256, custom: target.custom) == target)
        #expect(target.custom["support_ends_text"] == "Security updates until 31 December 2031")
        #expect(throws: HearthError.self) {
            try FirmwareTarget(
                name: "x", length: 1, sha256: "", model: model, version: try FirmwareVersion("1.0.0"),
                minimumFrom: try FirmwareVersion("1.0.0"), fixes: "Fixes the schedule crash.", severity: .low,
                keepsWorking: true, downtimeSeconds: 1, supportEnds: CalendarDate("2031-12-31")!)
        }
        for fixes in ["short", String(repeating: "x", count: 2001), "bell \u{7} in notes"] {
            #expect(throws: HearthError.self) {
                try FirmwareTarget(
                    name: "x", length: 1, sha256: "", model: model, version: try FirmwareVersion("1.1.0"),
                    minimumFrom: try FirmwareVersion("1.0.0"), fixes: fixes, severity: .low, keepsWorking: true,
                    downtimeSeconds: 1, supportEnds: CalendarDate("2031-12-31")!)
            }
        }
        var broken = target.custom
        broken["release_notes"] = "none"
        #expect(throws: UpdateRefusal.self) {
            try FirmwareTarget(name: target.name, length: 10, sha256: target.sha256, custom: broken)
        }
        #expect(throws: UpdateRefusal.wrongModel(target.name, for: "thermostat-t1", device: "smartlock-l1")) {
            try target.check(for: try ProductModelID("smartlock-l1"), running: try FirmwareVersion("1.0.0"))
        }
        #expect(throws: UpdateRefusal.downgrade(offered: "1.1.0", running: "1.1.0")) {
            try target.check(for: model, running: try FirmwareVersion("1.1.0"))
        }
        #expect(throws: UpdateRefusal.unsupportedPath(from: "0.9.0", minimum: "1.0.0")) {
            try target.check(for: model, running: try FirmwareVersion("0.9.0"))
        }
        try target.check(for: model, running: try FirmwareVersion("1.0.5"))
    }

    @Test func devicesReportsAndOffersAreCheckedForShapeSizeAndRange() throws {
        let good = UpdateReport(phase: .failed, version: "1.0.0", target: "t.img", reason: "arbitrary_software: hash")
        #expect(try UpdateReport(payload: good.payload) == good)
        let bad = [
            "", "null", "[]", #"{"phase":"idle"}"#, #"{"phase":"exploded","version":"1.0.0"}"#,
            #"{"phase":"idle","version":"1.0"}"#,
            #"{"phase":"idle","version":1}"#, #"{"phase":"idle","version":"1.0.0","extra":true}"#,
            #"{"phase":"idle","version":"1.0.0","reason":"\#(String(repeating: "x", count: 301))"}"#,
            #"{"phase":"idle","version":"1.0.0","target":"\#(String(repeating: "x", count: 129))"}"#,
            "{\"phase\":\"idle\",\"version\":\"1.0.0\"" + String(repeating: " ", count: 1100) + "}",
        ]
        for text in bad {
            #expect(throws: (any Error).self, "\(text.prefix(60))") { try UpdateReport(payload: Array(text.utf8)) }
        }
        let offer = UpdateOffer(supportEnds: CalendarDate("2031-12-31")!, supportEnded: false, target: "t.img")
        #expect(try UpdateOffer(payload: offer.payload) == offer)
        #expect(throws: HearthError.self) {
            try UpdateOffer(payload: Array(#"{"support_ends":"2031-13-01","support_ended":false}"#.utf8))
        }
    }

    @Test func plansAreValidatedAndDevicesSpreadEvenlyOverStages() throws {
        for (stages, threshold) in [
            ([Int](), 0.2), ([10, 50], 0.2), ([50, 10, 100], 0.2), ([0, 100], 0.2), ([100], 0.0), ([100], 1.0),
            ([1, 1, 100], 0.2),
        ] {
            #expect(throws: HearthError.self, "\(stages) \(threshold)") {
                try RolloutPlan(stages: stages, failureThreshold: threshold, minimumSample: 1)
            }
        }
        let plan = RolloutPlan.standard
        #expect(
            try RolloutPlan(
                stages: plan.stages, failureThreshold: plan.failureThreshold, minimumSample: plan.minimumSample)
                == plan, "the standard plan passes its own checks")
        let serials = try (0..<20_000).map {
            try DeviceSerial(
                String(format: "AB%010d", $0).replacingOccurrences(of: "0", with: "C").replacingOccurrences(
                    of: "1", with: "D"))
        }
        let first = serials.filter { plan.includes(serial: $0, rollout: "RO-1", stage: 0) }.count
        let second = serials.filter { plan.includes(serial: $0, rollout: "RO-1", stage: 1) }.count
        #expect((120...280).contains(first), "about 1%: \(first)")
        #expect((1700...2300).contains(second), "about 10%: \(second)")
        // A device in an early stage stays in every later one; another rollout picks others first.
        #expect(
            serials.allSatisfy {
                !plan.includes(serial: $0, rollout: "RO-1", stage: 0)
                    || plan.includes(serial: $0, rollout: "RO-1", stage: 2)
            })
        let other = serials.filter { plan.includes(serial: $0, rollout: "RO-2", stage: 0) }
        #expect(Set(other) != Set(serials.filter { plan.includes(serial: $0, rollout: "RO-1", stage: 0) }))
    }

    @Test func theRolloutPolicyPausesAdvancesAndCompletes() throws {
        let plan = try RolloutPlan(stages: [10, 100], failureThreshold: 0.2, minimumSample: 5)
        func decide(state: RolloutState = .active, stage: Int = 0, _ members: Int, _ ok: Int, _ failed: Int)
            -> RolloutDecision
        {
            RolloutDecision.decide(
                plan: plan, state: state, stage: stage,
                tally: RolloutTally(members: members, succeeded: ok, failed: failed))
        }
        #expect(decide(10, 0, 4) == .none, "under the minimum sample")
        #expect(decide(10, 3, 2) == .pause("2 of 5 devices failed to update (over 20%); paused automatically"))
        #expect(decide(10, 4, 1) == .none, "exactly at the threshold does not pause")
        #expect(decide(10, 9, 1) == .advance(to: 1))
        #expect(decide(stage: 1, 50, 50, 0) == .complete)
        #expect(decide(state: .paused, 10, 0, 10) == .none)
        #expect(decide(0, 0, 0) == .advance(to: 1), "an empty stage (1% of a small fleet) has nothing to wait for")
        #expect(decide(10, 5, 0) == .none, "members still updating")
    }
}

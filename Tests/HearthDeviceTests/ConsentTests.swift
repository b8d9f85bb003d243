import Foundation
import HearthCore
import HearthDevice
import HearthFixtures
import HearthGateway
import HearthReferenceDevices
import HearthStorage
import HearthTestSupport
import Synchronization
import Testing

/// EN 303 645 6-3: what the owner refuses does not leave the home. The reference thermostat measures
/// humidity for the optional purpose "comfort"; the gateway tells it the owner's choice.
@Suite("Consent at both ends")
struct ConsentTests {
    @Test func theThermostatSendsHumidityOnlyWhileTheOwnerAllowsIt() async throws {
        let fixture = try await DeviceFixture(devices: 1)
        let serial = fixture.thermostats[0].serial
        func stored() async throws -> [TelemetryRecord] {
            try await fixture.telemetry.readings(
                serial, from: .distantPast, to: .distantFuture, after: nil, limit: 1000)
        }
        try await fixture.withGateway { gateway, port, _ in
            let thermostat = try makeDevice(fixture, fixture.thermostats[0], port: port, reportEvery: 0.5)
            let tasks = running(thermostat)
            defer { for task in tasks { task.cancel() } }

            // Nothing agreed yet (an unclaimed device): humidity is never sent.
            try await eventually("three readings stored") { try await stored().count >= 3 }
            #expect(try await stored().allSatisfy { $0.reading.values["humidity"] == nil })
            #expect(await thermostat.agent.policy.withheld == ["humidity": "comfort"])

            // The owner agrees: readings queued from the next interval on carry it.
            await gateway.policyChanged(serial, DevicePolicy(withheld: [:]))
            try await eventually("the device follows the new policy") { await thermostat.agent.policy.withheld.isEmpty }
            let agreedAt = try await stored().last?.reading.sequence ?? 0
            try await eventually("humidity arrives") {
                try await stored().contains { $0.reading.sequence > agreedAt && $0.reading.values["humidity"] != nil }
            }

            // Withdrawn: within one reading interval it stops.
            await gateway.policyChanged(serial, DevicePolicy(withheld: ["humidity": "comfort"]))
            try await eventually("the device follows the withdrawal") {
                await thermostat.agent.policy.withheld == ["humidity": "comfort"]
            }
            let withdrawnAt = try await stored().last?.reading.sequence ?? 0
            try await eventually("three more readings") {
                try await stored().filter { $0.reading.sequence > withdrawnAt + 1 }.count >= 3
            }
            let after = try await stored().filter { $0.reading.sequence > withdrawnAt + 1 }
            #expect(after.allSatisfy { $0.reading.values["humidity"] == nil }, "\(after.map(\.reading.values))")
            // Between the owner's withdrawal and the device's receipt of its policy a reading may
            // still carry humidity: the gateway refuses it (stores nothing). Nothing else is refused.
            let refusals = try await fixture.telemetry.refusals(serial)
            #expect(refusals.allSatisfy { $0.kind == .declined }, "\(refusals)")
        }
    }
}

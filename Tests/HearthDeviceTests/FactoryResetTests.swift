import Foundation
import HearthCore
import HearthCrypto
import HearthDevice
import HearthFixtures
import HearthGateway
import HearthReferenceDevices
import HearthServer
import HearthStorage
import HearthTestSupport
import Synchronization
import Testing

/// EN 303 645 5.11-1: a running reference thermostat reset to factory state loses its owner's
/// setpoint and queued readings, keeps its identity, tells the server (which ends the claim) once
/// it is back online, and can be claimed again; the reset sent again changes nothing.
@Suite("Factory reset")
struct FactoryResetTests {
    @Test func aResetThermostatForgetsItsOwnerAndTheServerReleasesIt() async throws {
        let fixture = try await DeviceFixture(devices: 1)
        let unit = fixture.thermostats[0]
        let serial = unit.serial
        let ann = AccountRecord(
            id: AccountID(), role: .owner, emailIndex: "ann", emailSealed: Data([1]), passwordHash: "x",
            createdAt: Date())
        try await fixture.store.createAccount(ann, audit: AuditEntry(.accountCreated, at: Date()))
        #expect(
            try await fixture.store.claimDevice(
                serial, owner: ann.id, emailIndex: "ann", at: Date().addingTimeInterval(-1),
                audit: AuditEntry(.deviceClaimed, at: Date())))
        let folder = try fixture.bundle(for: unit)
        let acknowledged = Mutex<[String]>([])
        try await fixture.withGateway { gateway, port, _ in
            let hearth = try Hearth(
                store: fixture.store, kek: KeyEncryptionKey.generate().kek, settings: HearthSettings(),
                telemetry: fixture.telemetry, commands: gateway)
            gateway.attach(resets: hearth)

            // Running: the owner sets 25 °C.
            let first = try makeDevice(fixture, unit, port: port, reportEvery: 0.2, folder: folder)
            let agent = Task { try await first.agent.run() }
            let ticks = Task {
                while !Task.isCancelled {
                    try await first.tick()
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            try await eventually("connected") { await first.agent.acceptsCommands }
            let outcome = await gateway.send(
                command: "setTarget", parameters: ["target": 25], to: serial, timeout: .seconds(10))
            guard case .answered(status: "ok", _) = outcome else {
                Issue.record("setTarget: \(outcome)")
                return
            }
            #expect(await first.thermostatState.target == 25)
            #expect(FileManager.default.fileExists(atPath: first.settingsURL.path))
            try await eventually("readings stored") {
                try await fixture.telemetry.readings(
                    serial, from: .distantPast, to: .distantFuture, after: nil, limit: 10
                )
                .count >= 2
            }

            // Offline: readings queue up; the reset happens without the network.
            agent.cancel()
            ticks.cancel()
            try await eventually("offline") { await !first.agent.isConnected }
            // What reached the server before it went offline (a reading in flight at the cut is
            // committed within moments): anything numbered after this must come after the reset.
            try await Task.sleep(for: .milliseconds(500))
            let lastStored = try await fixture.telemetry.latest(serial)?.reading.sequence ?? 0
            for _ in 0..<3 {
                try await first.tick()
                try await Task.sleep(for: .milliseconds(250))
            }
            #expect(await !first.agent.queued.isEmpty, "readings wait in the queue")
            let resetID = try await first.factoryReset()
            #expect(await first.agent.queued.isEmpty, "the queue is erased")
            #expect(await first.thermostatState.target == 21, "the setpoint is the factory's")
            #expect(!FileManager.default.fileExists(atPath: first.settingsURL.path), "the saved settings are gone")
            #expect(try await fixture.store.device(serial)?.owner == ann.id, "the server does not know yet")

            // Power on again (a new process, the same folder): it reconnects and tells the server.
            let second = try makeDevice(fixture, unit, port: port, reportEvery: 0.2, folder: folder) { event in
                if case .resetAcknowledged(let id) = event { acknowledged.withLock { $0.append(id) } }
            }
            #expect(await second.thermostatState.target == 21, "the reset survives a restart")
            let tasks = running(second)
            defer { for task in tasks { task.cancel() } }
            try await eventually("the server ends the claim") { try await fixture.store.device(serial)?.owner == nil }
            try await eventually("the device hears it") { acknowledged.withLock { $0 } == [resetID] }
            let past = try await fixture.store.ownerships(of: ann.id)
            #expect(past.map(\.reason) == [.factoryReset] && past.first?.historyKept == true, "\(past)")
            try await eventually("new readings are stored, numbered after the old ones") {
                (try await fixture.telemetry.latest(serial)?.reading.sequence ?? 0) > lastStored + 3
            }
            #expect(
                try await fixture.telemetry.readings(
                    serial, from: .distantPast, to: .distantFuture, after: nil, limit: 1000
                )
                .filter { $0.reading.sequence > lastStored }.allSatisfy { $0.reading.values["target"] == 21 },
                "none of the erased queue reached the server")

            // Claimable again; the same reset sent again (a lost acknowledgement) does not end it.
            let bob = AccountRecord(
                id: AccountID(), role: .owner, emailIndex: "bob", emailSealed: Data([2]), passwordHash: "x",
                createdAt: Date())
            try await fixture.store.createAccount(bob, audit: AuditEntry(.accountCreated, at: Date()))
            #expect(
                try await fixture.store.claimDevice(
                    serial, owner: bob.id, emailIndex: "bob", at: Date(), audit: AuditEntry(.deviceClaimed, at: Date()))
            )
            try await hearth.deviceReset(Array(#"{"reset":"\#(resetID)"}"#.utf8), from: serial)
            #expect(try await fixture.store.device(serial)?.owner == bob.id, "a replayed reset changes nothing")
        }
    }
}

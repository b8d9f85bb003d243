import ArgumentParser
import Foundation
import HearthCore
import HearthCrypto
import HearthGateway
import HearthMQTT
import HearthMonitor
import HearthSQLite
import HearthServer
import HearthStorage
import NIOCore
import NIOPosix
import NIOSSL

/// `hearth bench`: an MQTT load generator for Hearth or any broker configured comparably.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drive simulated devices against an MQTT endpoint over mutual TLS and measure it.",
        discussion: """
            First `hearth bench prepare` makes a benchmark deployment: a data folder with N provisioned \
            devices (bundles) plus a Mosquitto configuration using the same certificates (mutual TLS, \
            use_identity_as_username, a per-device ACL), so both servers face the same clients. Then \
            `hearth bench run` against either endpoint. bench/gateway.sh runs the whole comparison.
            """,
        subcommands: [
            Prepare.self, Run.self, Pages.self, DataRights.self, Ingest.self, Detectors.self, StorageBench.self,
            AssessFleet.self,
        ]
    )

    /// A bench fleet in `store`: the demo thermostat model and `devices` devices held by `owners`
    /// owners (placeholders, no certificates), so readings are sealed under owners' keys.
    static func fleet(_ store: any HearthStore, devices: Int, owners: Int, at now: Date) async throws -> [DeviceSerial]
    {
        let model = ProductModel.demoModels()[0]
        try await store.createModel(
            model, at: now, audit: AuditEntry(.modelCreated, actor: "bench", subject: model.id.rawValue, at: now))
        var rng = SystemRandomNumberGenerator()
        let serials = (0..<devices).map { _ in DeviceSerial.random(using: &rng) }
        try await store.addDevices(
            serials.map {
                DeviceRecord(
                    serial: $0, model: model.id, certificatePEM: "bench placeholder",
                    setupCodeHash: "bench placeholder", provisionedAt: now)
            }, audit: AuditEntry(.devicesProvisioned, actor: "bench", at: now))
        let accounts = (0..<owners).map { _ in AccountID() }
        for (i, id) in accounts.enumerated() {
            try await store.createAccount(
                AccountRecord(
                    id: id, role: .owner, emailIndex: "bench-\(i)", emailSealed: Data(),
                    passwordHash: "bench placeholder", createdAt: now),
                audit: AuditEntry(.accountCreated, actor: "bench", at: now))
        }
        for (i, serial) in serials.enumerated() {
            _ = try await store.claimDevice(
                serial, owner: accounts[i % owners], emailIndex: "bench-\(i % owners)", at: now,
                audit: AuditEntry(.deviceClaimed, actor: "bench", at: now))
        }
        return serials
    }

    /// `hearth bench storage`: stored readings per second on SQLite and on PostgreSQL, side by
    /// side in one run (issue 17's measure).
    struct StorageBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "storage",
            abstract: "Time appending sealed readings on SQLite and on PostgreSQL, side by side.",
            discussion: """
                For benchmarks only. Makes a fresh data folder (SQLite) and fills an empty PostgreSQL \
                database (--database) with the same fleet: D devices held by O owners. Then W writers each \
                append R readings per round in transactions of B, as W nodes' group commits do (a node \
                has one), sealed under the owners' data keys as the server does. Rounds alternate between \
                the two databases; the medians, their ratio and the p99 commit time are printed.
                """)
        @OptionGroup var options: DataOptions
        @Option(help: "Devices.") var devices: Int = 1_000
        @Option(help: "Owners the devices are spread over.") var owners: Int = 100
        @Option(help: "Readings per round, over all writers.") var readings: Int = 100_000
        @Option(help: "Readings per transaction.") var batch: Int = 256
        @Option(help: "Concurrent writers (nodes).") var writers: Int = 1
        @Option(help: "Rounds of each.") var rounds: Int = 5

        func run() async throws {
            guard options.database != nil else {
                throw ValidationError("--database: the PostgreSQL database to compare with (empty)")
            }
            guard (1...100_000).contains(devices), (1...devices).contains(owners),
                (1_000...10_000_000).contains(readings), (1...10_000).contains(batch), (1...16).contains(writers),
                (1...50).contains(rounds)
            else {
                throw ValidationError(
                    "1 to 100,000 devices, 1 owner to one per device, 1,000 to 10,000,000 readings, batches of 1 to 10,000, 1 to 16 writers, 1 to 50 rounds"
                )
            }
            guard !FileManager.default.fileExists(atPath: options.data) else {
                throw ValidationError("--data: \(options.data) exists; give a folder to create")
            }
            var sqliteOptions = options
            sqliteOptions.database = nil
            sqliteOptions.databasePasswordFile = nil
            let (folder, sqlite) = try sqliteOptions.openSQLite()
            let now = Date()
            let serials = try await Bench.fleet(sqlite.store, devices: devices, owners: owners, at: now)
            try await Storage.with(
                folder: folder,
                database: try DatabaseChoice(address: options.database, passwordFile: options.databasePasswordFile)
            ) { postgres in
                guard try await postgres.store.deviceCount() == 0 else {
                    throw ValidationError("--database: give an empty database")
                }
                // The same devices and owners in both.
                _ = try await postgres.store.createModel(
                    ProductModel.demoModels()[0], at: now, audit: AuditEntry(.modelCreated, actor: "bench", at: now))
                let devicesOf = try await sqlite.store.fleet(after: nil, filter: FleetFilter(), limit: devices)
                for owner in Set(devicesOf.compactMap(\.owner)) {
                    if let account = try await sqlite.store.account(id: owner) {
                        try await postgres.store.createAccount(
                            account, audit: AuditEntry(.accountCreated, actor: "bench", at: now))
                    }
                }
                try await postgres.store.addDevices(
                    devicesOf, audit: AuditEntry(.devicesProvisioned, actor: "bench", at: now))
                var next = 0
                @Sendable func reading(_ i: Int) -> TelemetryReading {
                    TelemetryReading(
                        serial: serials[i % serials.count], sequence: Int64(i / serials.count + 1), deviceTime: now,
                        receivedAt: now.addingTimeInterval(Double(i) / 1_000),
                        values: [
                            "temperature": .number(19 + 3 * sin(Double(i) / 500)), "heating": .bool(i % 7 == 0),
                            "target": .number(21),
                        ])
                }
                let writers = writers
                let batch = batch
                /// One round: returns readings/s and every commit's seconds.
                func round(_ telemetry: any TelemetryStore) async throws -> (Double, [Double]) {
                    let first = next
                    next += readings
                    let total = readings
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    let commits = try await withThrowingTaskGroup(of: [Double].self) { group in
                        for w in 0..<writers {
                            group.addTask {
                                var times: [Double] = []
                                // Writer w takes every w-th batch: its own devices' readings in order.
                                for start in stride(from: first + w * batch, to: first + total, by: batch * writers) {
                                    let part = (start..<min(first + total, start + batch)).map(reading)
                                    let c0 = DispatchTime.now().uptimeNanoseconds
                                    try await telemetry.append(part, refusals: [])
                                    times.append(Double(DispatchTime.now().uptimeNanoseconds - c0) / 1e9)
                                }
                                return times
                            }
                        }
                        return try await group.reduce(into: []) { $0 += $1 }
                    }
                    return (Double(total) / (Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9), commits)
                }
                var rates: (sqlite: [Double], postgres: [Double]) = ([], [])
                var commits: (sqlite: [Double], postgres: [Double]) = ([], [])
                for r in 1...rounds {
                    let s = try await round(sqlite.telemetry)
                    let p = try await round(postgres.telemetry)
                    rates.sqlite.append(s.0)
                    rates.postgres.append(p.0)
                    commits.sqlite += s.1
                    commits.postgres += p.1
                    print(
                        String(
                            format: "round %d/%d: SQLite %.0f readings/s, PostgreSQL %.0f readings/s", r, rounds, s.0,
                            p.0))
                    fflush(nil)
                }
                func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
                func p99(_ v: [Double]) -> Double { v.sorted()[min(v.count - 1, Int(Double(v.count) * 0.99))] * 1000 }
                print(
                    String(
                        format:
                            "median (%d writer%@, batches of %d): SQLite %.0f readings/s (commit p99 %.1f ms), PostgreSQL %.0f readings/s (commit p99 %.1f ms), PostgreSQL/SQLite %.2f",
                        writers, writers == 1 ? "" : "s", batch, median(rates.sqlite), p99(commits.sqlite),
                        median(rates.postgres), p99(commits.postgres), median(rates.postgres) / median(rates.sqlite)))
            }
        }
    }

    /// `hearth bench detectors`: the memory the security detectors keep per device (issue 16).
    struct Detectors: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "detectors",
            abstract: "Measure the security detectors' memory per device at N devices.",
            discussion: """
                For benchmarks only. Keeps one detector state per device exactly as the gateway does (its \
                sharded boxes), after each device connected and published a reading, and prints the \
                process's resident memory growth divided by the devices.
                """)
        @Option(help: "Devices.") var devices: Int = 100_000

        func run() async throws {
            guard (1...10_000_000).contains(devices) else { throw ValidationError("--devices: 1 to 10,000,000") }
            var rng = SystemRandomNumberGenerator()
            let serials = (0..<devices).map { _ in DeviceSerial.random(using: &rng) }
            let before = rss(getpid()) ?? 0
            let watchers = MQTTGateway.detectorsForBenchmark(serials)
            let after = rss(getpid()) ?? 0
            let perDevice = (after - before) * 1024 * 1024 / Double(devices)
            print(
                "detectors: \(serials.count) devices, RSS +\(String(format: "%.1f", after - before)) MB, \(Int(perDevice.rounded())) bytes per device (the state itself: \(MemoryLayout<DeviceWatch>.size) bytes inline)"
            )
            withExtendedLifetime(watchers) {}
        }
    }

    /// `hearth bench ingest`: the readings store's append throughput with readings sealed under
    /// per-owner keys beside the same appends in clear, alternating, in one run (issue 15's measure).
    struct Ingest: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ingest",
            abstract: "Time appending readings with per-owner encryption on and off, side by side.",
            discussion: """
                For benchmarks only. Makes a fresh data folder with D devices held by O owners, then appends \
                R readings per round in batches of B (as the gateway's group commit does: one transaction \
                per batch) to two readings databases: one sealing each reading under its owner's data key, \
                as the server does, and one keeping them in clear. Rounds alternate between the two so both \
                see the same machine state; the medians and their ratio are printed.
                """)
        @Option(help: "The data folder to create (must not exist).") var data: String
        @Option(help: "Devices.") var devices: Int = 1_000
        @Option(help: "Owners the devices are spread over.") var owners: Int = 100
        @Option(help: "Readings per round.") var readings: Int = 200_000
        @Option(help: "Readings per transaction.") var batch: Int = 256
        @Option(help: "Rounds of each.") var rounds: Int = 5

        func run() async throws {
            try await reportingErrors {
                guard (1...100_000).contains(devices), (1...devices).contains(owners),
                    (1_000...10_000_000).contains(readings), (1...10_000).contains(batch), (1...50).contains(rounds)
                else {
                    throw HearthError.invalid(
                        "devices",
                        "1 to 100,000 devices, 1 owner to one per device, 1,000 to 10,000,000 readings per "
                            + "round, batches of 1 to 10,000, 1 to 50 rounds")
                }
                guard !FileManager.default.fileExists(atPath: data) else {
                    throw HearthError.invalid("data", "\(data) exists; give a folder to create")
                }
                var options = try DataOptions.parse([])
                options.data = data
                let (folder, storage) = try options.openSQLite()
                let store = storage.store
                let now = Date()
                let serials = try await Bench.fleet(store, devices: devices, owners: owners, at: now)
                let sealed = storage.telemetry
                let clear = try SQLiteTelemetryStore(path: folder.url.appendingPathComponent("clear.sqlite").path)
                var next = 0
                @Sendable func reading(_ i: Int) -> TelemetryReading {
                    let temperature: Double = 19 + 3 * sin(Double(i) / 500)
                    let values: [String: JSONValue] = [
                        "temperature": .number(temperature), "heating": .bool(i % 7 == 0), "target": .number(21),
                    ]
                    return TelemetryReading(
                        serial: serials[i % devices], sequence: Int64(i / devices + 1), deviceTime: now,
                        receivedAt: now.addingTimeInterval(Double(i) / 1_000), values: values)
                }
                func round(_ telemetry: any TelemetryStore) async throws -> Double {
                    let first = next
                    next += readings
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    for start in stride(from: first, to: first + readings, by: batch) {
                        let readings = (start..<min(first + readings, start + batch)).map(reading)
                        try await telemetry.append(readings, refusals: [])
                    }
                    return Double(readings) / (Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
                }
                var rates: (sealed: [Double], clear: [Double]) = ([], [])
                for r in 1...rounds {
                    rates.clear.append(try await round(clear))
                    rates.sealed.append(try await round(sealed))
                    print(
                        String(
                            format: "round %d/%d: in clear %.0f readings/s, sealed %.0f readings/s", r, rounds,
                            rates.clear.last ?? 0, rates.sealed.last ?? 0))
                    fflush(nil)
                }
                let clearRate = rates.clear.sorted()[rounds / 2]
                let sealedRate = rates.sealed.sorted()[rounds / 2]
                print(
                    String(
                        format: "median: in clear %.0f readings/s, sealed %.0f readings/s, ratio %.2f",
                        clearRate, sealedRate, sealedRate / clearRate))
                print(
                    #"{"bench":"ingest","devices":\#(devices),"owners":\#(owners),"batch":\#(batch),"clearPerSecond":\#(clearRate.rounded()),"sealedPerSecond":\#(sealedRate.rounded()),"ratio":\#(sealedRate / clearRate)}"#
                )
            }
        }
    }

    /// `hearth bench data-rights`: an owner with D devices and R readings exports everything, then
    /// deletes the account; both timed (issue 15's measures).
    struct DataRights: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "data-rights",
            abstract: "Time an owner's data export and account deletion: D devices holding R readings in all.",
            discussion: """
                For benchmarks only. Makes a fresh data folder, provisions and claims D thermostats for one owner, \
                writes R readings spread over them and 150 days, then times the export (the ZIP streamed and \
                counted, as the server sends it) and the deletion of the account after its grace period (devices \
                released, readings deleted, the write-ahead log truncated, the receipt signed).
                """)
        @Option(help: "The data folder to create (must not exist).") var data: String
        @Option(help: "Devices of the owner.") var devices: Int = 10
        @Option(help: "Readings in all, spread over the devices.") var readings: Int = 1_000_000

        func run() async throws {
            try await reportingErrors {
                guard (1...1_000).contains(devices), (1...20_000_000).contains(readings) else {
                    throw HearthError.invalid("devices", "1 to 1,000 devices and 1 to 20,000,000 readings")
                }
                guard !FileManager.default.fileExists(atPath: data) else {
                    throw HearthError.invalid("data", "\(data) exists; give a folder to create")
                }
                var options = try DataOptions.parse([])
                options.data = data
                let (folder, storage) = try options.openSQLite()
                let store = storage.store
                let (telemetry, readingKeys) = (storage.telemetry, storage.readingKeys)
                let model = ProductModel.demoModels()[0]
                let started = Date()
                let time = ManualTimeSource(started.addingTimeInterval(-150 * 86_400))
                try await store.createModel(
                    model, at: time.now(),
                    audit: AuditEntry(.modelCreated, actor: "bench", subject: model.id.rawValue, at: time.now()))
                var settings = HearthSettings()
                settings.hashCost = .testing
                let hearth = try Hearth(
                    store: store, kek: folder.kek, settings: settings, time: time, telemetry: telemetry,
                    readingKeys: readingKeys)
                let units = try await Provisioner(
                    store: store, deviceCA: folder.deviceCA, rootCA: folder.rootCA, hashCost: .testing,
                    publicURL: "https://127.0.0.1:8443", time: time
                ).provision(modelID: model.id, count: devices, outDirectory: nil)
                let password = "bench owner passphrase, long enough"
                _ = try await hearth.register(email: "owner@bench.example", password: password, source: "bench")
                let identity = try await hearth.signIn(
                    email: "owner@bench.example", password: password, source: "bench"
                )
                .identity
                for unit in units {
                    _ = try await hearth.claim(
                        serial: unit.serial.rawValue, setupCode: unit.setupCode.digits, by: identity, source: "bench")
                }
                time.advance(by: 1)
                let step = 149 * 86_400 / Double(readings)
                let written = Progress(total: readings, noun: "readings")
                var count = 0
                for start in stride(from: 0, to: readings, by: 10_000) {
                    let batch = (start..<min(readings, start + 10_000)).map { i in
                        TelemetryReading(
                            serial: units[i % units.count].serial, sequence: Int64(i / units.count + 1),
                            deviceTime: nil, receivedAt: time.now().addingTimeInterval(Double(i) * step),
                            values: [
                                "temperature": .number(19 + 3 * sin(Double(i) / 500)), "heating": .bool(i % 7 == 0),
                                "target": .number(21),
                            ])
                    }
                    count += try await telemetry.append(batch, refusals: [])
                    written.update(count)
                }
                written.finish()
                time.advance(by: started.timeIntervalSince(time.now()))

                var t0 = DispatchTime.now().uptimeNanoseconds
                let bytes = try await DataExport(hearth: hearth, identity: identity).countedBytes()
                let exportSeconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                print(
                    String(
                        format: "export: %d readings of %d devices in %.1f s (%.0f readings/s), %.1f MB",
                        count, devices, exportSeconds, Double(count) / exportSeconds, Double(bytes) / 1e6))

                _ = try await hearth.requestDeletion(password: password, by: identity, source: "bench")
                time.advance(by: 7 * 86_400 + 1)
                t0 = DispatchTime.now().uptimeNanoseconds
                let deleted = try await hearth.carryOutDeletions()
                let deleteSeconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                let left = try await telemetry.readingCount()
                print(
                    String(
                        format: "account deletion: %d account, %d devices, %d readings in %.1f s; %d readings left",
                        deleted, devices, count, deleteSeconds, left))
                print(
                    #"{"bench":"data-rights","devices":\#(devices),"readings":\#(count),"exportSeconds":\#(exportSeconds),"exportBytes":\#(bytes),"deleteSeconds":\#(deleteSeconds),"readingsLeft":\#(left)}"#
                )
            }
        }
    }

    /// `hearth bench pages`: a data folder shaped like a large deployment, for the page benchmarks
    /// (bench/pages.sh): one real thermostat with a week of readings at one per 10 s, many more
    /// devices with readings of their own, and the chart query timed on its own.
    struct Pages: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Fill a data folder for the page benchmarks: N devices, M readings, one claimable thermostat with 7 days of readings.",
            discussion: """
                For benchmarks only. One thermostat is provisioned for real (its bundle in OUT, its setup code \
                printed); the other devices are written straight to the store with placeholder certificates \
                that no gateway would accept. The real thermostat gets a reading every 10 s for 7 days; the \
                rest of the readings are spread over 1,000 other devices. Then the 7-day chart query is timed.
                """
        )
        @Option(help: "The data folder to create.") var data: String
        @Option(help: "Where the real thermostat's bundle goes.") var out: String
        @Option(help: "Devices in the fleet.") var devices: Int = 100_000
        @Option(help: "Readings in the store.") var readings: Int = 1_000_000

        func run() async throws {
            try await reportingErrors {
                guard (1_000...1_000_000).contains(devices), (60_480...10_000_000).contains(readings) else {
                    throw HearthError.invalid("devices", "1,000 to 1,000,000 devices and 60,480 to 10,000,000 readings")
                }
                var options = try DataOptions.parse([])
                options.data = data
                let (folder, storage) = try options.openSQLite()
                let store = storage.store
                let telemetry = storage.telemetry
                let model = ProductModel.demoModels()[0]
                if try await store.model(model.id) == nil {
                    try await store.createModel(
                        model, at: Date(),
                        audit: AuditEntry(.modelCreated, actor: "bench", subject: model.id.rawValue, at: Date()))
                }
                let provisioner = Provisioner(
                    store: store, deviceCA: folder.deviceCA, rootCA: folder.rootCA, hashCost: .testing,
                    publicURL: "https://127.0.0.1:8443")
                let unit = try await provisioner.provision(
                    modelID: model.id, count: 1, outDirectory: URL(fileURLWithPath: out))[0]
                print("Real thermostat: serial \(unit.serial) setup code \(unit.setupCode.digits)")
                var rng = SystemRandomNumberGenerator()
                let now = Date()
                let progress = Progress(total: devices - 1, noun: "placeholder devices")
                var others: [DeviceSerial] = []
                for start in stride(from: 0, to: devices - 1, by: 10_000) {
                    let batch = (start..<min(devices - 1, start + 10_000)).map { _ in
                        DeviceRecord(
                            serial: DeviceSerial.random(using: &rng), model: model.id,
                            certificatePEM: "bench placeholder", setupCodeHash: "bench placeholder", provisionedAt: now)
                    }
                    try await store.addDevices(
                        batch,
                        audit: AuditEntry(
                            .devicesProvisioned, actor: "bench", detail: "\(batch.count) placeholders", at: now))
                    if others.count < 1_000 { others += batch.prefix(1_000 - others.count).map(\.serial) }
                    progress.update(start + batch.count)
                }
                progress.finish()
                let week = 7 * 86_400 / 10
                let spread = readings - week
                let written = Progress(total: readings, noun: "readings")
                var count = 0
                func values(_ i: Int) -> [String: JSONValue] {
                    [
                        "temperature": .number(19 + 3 * sin(Double(i) / 500)), "humidity": .number(45),
                        "heating": .bool(i % 7 == 0), "target": .number(21),
                    ]
                }
                for start in stride(from: 0, to: week, by: 10_000) {
                    let batch = (start..<min(week, start + 10_000)).map { i in
                        TelemetryReading(
                            serial: unit.serial, sequence: Int64(i + 1), deviceTime: nil,
                            receivedAt: now.addingTimeInterval(Double(i - week) * 10), values: values(i))
                    }
                    count += try await telemetry.append(batch, refusals: [])
                    written.update(count)
                }
                for start in stride(from: 0, to: spread, by: 10_000) {
                    let batch = (start..<min(spread, start + 10_000)).map { i in
                        TelemetryReading(
                            serial: others[i % others.count], sequence: Int64(i / others.count + 1), deviceTime: nil,
                            receivedAt: now.addingTimeInterval(-Double(spread - i)), values: values(i))
                    }
                    count += try await telemetry.append(batch, refusals: [])
                    written.update(count)
                }
                written.finish()
                // The charts' query on its own: 7 days of the thermostat's three numeric fields in
                // hour slices, first from the readings alone, then with the settled slices kept.
                let fields = ["temperature", "humidity", "target"]
                func query() async throws -> Double {
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    _ = try await telemetry.series(
                        unit.serial, fields: fields, from: now.addingTimeInterval(-7 * 86_400), to: now, slice: 3600,
                        settledBefore: now.addingTimeInterval(-60))
                    return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
                }
                let cold = try await query()
                var times: [Double] = []
                for _ in 0..<50 { times.append(try await query()) }
                times.sort()
                print(
                    String(
                        format:
                            "chart query, 3 fields over 7 days at one reading per 10 s (%d readings) in hour slices: first %.1f ms (every reading read); then p50 %.1f ms, p99 %.1f ms (50 runs, settled slices kept)",
                        week, cold, times[25], times[49]))
                print(
                    "Bench data ready: \(try await store.deviceCount()) devices, \(try await telemetry.readingCount()) readings in \(folder.url.path)"
                )
            }
        }
    }

    /// `hearth bench assess-fleet`: a deployment as large as issue 19's measure (100,000 devices over
    /// 10 models), for timing `hearth assess` against it (bench/assess.sh).
    struct AssessFleet: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "assess-fleet",
            abstract: "Fill a data folder with M models and N devices that report firmware, to time `hearth assess`.",
            discussion: """
                For benchmarks only. Devices are written straight to the store with placeholder certificates; \
                each reports a firmware version (half 1.0.0, half 1.1.0); each model has two placeholder \
                releases (1.1.0 a security fix) and an active rollout of 1.1.0. Then serve the folder and run \
                `hearth assess` against it.
                """)
        @Option(help: "The data folder to create.") var data: String
        @Option(help: "Devices in all.") var devices: Int = 100_000
        @Option(help: "Product models (devices are spread evenly).") var models: Int = 10

        func run() async throws {
            try await reportingErrors {
                guard (1_000...1_000_000).contains(devices), (1...100).contains(models) else {
                    throw HearthError.invalid("devices", "1,000 to 1,000,000 devices over 1 to 100 models")
                }
                var options = try DataOptions.parse([])
                options.data = data
                let (_, storage) = try options.openSQLite()
                let store = storage.store
                let now = Date()
                let progress = Progress(total: devices, noun: "devices")
                var rng = SystemRandomNumberGenerator()
                var made = 0
                for k in 0..<models {
                    guard case .object(var json) = ProductModel.demoModels()[0].json else { continue }
                    json["id"] = .string("bench-model-\(k)")
                    json["name"] = .string("Bench Thermostat \(k)")
                    let model = try await Fleet(store: store).createModel(.object(json), actor: "bench")
                    func release(_ version: String, _ severity: String) -> ReleaseRecord {
                        ReleaseRecord(
                            target: "\(model.id)-\(version).img", model: model.id, version: version, length: 1,
                            sha256: String(repeating: "0", count: 64),
                            custom: #"{"release_notes":{"severity":"\#(severity)"}}"#, publishedAt: now)
                    }
                    try await store.publish(
                        [], releases: [release("1.0.0", "none"), release("1.1.0", "high")], audit: [])
                    try await store.createRollout(
                        RolloutRecord(
                            id: "RO-BENCH-\(k)", target: "\(model.id)-1.1.0.img", model: model.id, stages: [100],
                            failureThreshold: 0.1, minimumSample: 1, state: "active", stage: 0, note: nil,
                            createdAt: now,
                            updatedAt: now),
                        audit: AuditEntry(.rolloutCreated, actor: "bench", at: now))
                    let count = devices / models + (k < devices % models ? 1 : 0)
                    for start in stride(from: 0, to: count, by: 10_000) {
                        let batch = (start..<min(count, start + 10_000)).map { _ in
                            DeviceRecord(
                                serial: DeviceSerial.random(using: &rng), model: model.id,
                                certificatePEM: "bench placeholder", setupCodeHash: "bench placeholder",
                                provisionedAt: now)
                        }
                        try await store.addDevices(
                            batch, audit: AuditEntry(.devicesProvisioned, actor: "bench", at: now))
                        for (i, device) in batch.enumerated() {
                            _ = try await store.appendUpdateEvent(
                                UpdateEventRecord(
                                    serial: device.serial, at: now, phase: "idle",
                                    version: (start + i) % 2 == 0 ? "1.0.0" : "1.1.0", target: nil, reason: nil))
                        }
                        made += batch.count
                        progress.update(made)
                    }
                }
                progress.finish()
                print(
                    "Assessment fleet ready: \(try await store.deviceCount()) devices over \(models) models in \(data)")
            }
        }
    }

    struct Prepare: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a benchmark deployment: data folder, N device bundles and a Mosquitto config.",
            discussion:
                "For benchmarks only: the server key is also written unsealed (0600) to OUT/mosquitto/ for Mosquitto, and setup codes are hashed at test cost."
        )
        @Option(help: "The data folder to create.") var data: String
        @Option(help: "Where bundles and the Mosquitto config go.") var out: String
        @Option(help: "Devices to provision.") var devices: Int = 100
        @Option(name: .customLong("mosquitto-port"), help: "The port Mosquitto's config listens on.") var mosquittoPort:
            Int = 18883
        @Option(help: "PostgreSQL instead of SQLite (as for `hearth serve`).") var database: String?
        @Option(name: .customLong("database-password-file"), help: "The database password file (0600).")
        var databasePasswordFile: String?

        func run() async throws {
            guard (1...50_000).contains(devices) else {
                throw ValidationError("--devices: between 1 and 50000")
            }
            var options = try DataOptions.parse([])
            options.data = data
            options.database = database
            options.databasePasswordFile = databasePasswordFile
            try await options.deployment { folder, storage in
                let store = storage.store
                let model = ProductModel.demoModels()[0]
                if try await store.model(model.id) == nil {
                    try await store.createModel(
                        model, at: Date(),
                        audit: AuditEntry(.modelCreated, actor: "bench", subject: model.id.rawValue, at: Date()))
                }
                let outURL = URL(fileURLWithPath: out)
                let bundles = outURL.appendingPathComponent("bundles")
                let progress = Progress(total: devices, noun: "devices")
                let provisioner = Provisioner(
                    store: store, deviceCA: folder.deviceCA, rootCA: folder.rootCA, hashCost: .testing,
                    publicURL: "https://127.0.0.1:8443")
                _ = try await provisioner.provision(modelID: model.id, count: devices, outDirectory: bundles) {
                    progress.update($0)
                }
                progress.finish()
                let mq = outURL.appendingPathComponent("mosquitto")
                try FileManager.default.createDirectory(
                    at: mq, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
                try Data(try folder.serverCertificate.pem().utf8).write(to: mq.appendingPathComponent("server.pem"))
                try DataFolder.writePrivate(
                    Data(folder.serverKey.pemRepresentation.utf8), to: mq.appendingPathComponent("server.key"))
                try Data(try folder.deviceCA.certificate.pem().utf8).write(
                    to: mq.appendingPathComponent("device-ca.pem"))
                try Data("pattern readwrite devices/%u/#\n".utf8).write(to: mq.appendingPathComponent("acl"))
                let conf = """
                    # Mosquitto configured like Hearth's device listener, for side-by-side benchmarks.
                    per_listener_settings false
                    allow_anonymous false
                    persistence false
                    # The files here are 0600: when started as root, stay root rather than switch to
                    # a user that cannot read them (a benchmark on loopback; never do this in production).
                    \(getuid() == 0 ? "user root" : "")
                    log_dest stderr
                    log_type error
                    max_inflight_messages 100
                    max_connections -1
                    # Its best configuration: without it acknowledgements wait on delayed ACKs (~40 ms).
                    set_tcp_nodelay true
                    listener \(mosquittoPort) 127.0.0.1
                    cafile \(mq.path)/device-ca.pem
                    certfile \(mq.path)/server.pem
                    keyfile \(mq.path)/server.key
                    require_certificate true
                    use_identity_as_username true
                    acl_file \(mq.path)/acl

                    """
                try Data(conf.utf8).write(to: mq.appendingPathComponent("mosquitto.conf"))
                print(
                    "Bench deployment ready: data \(folder.url.path), \(devices) bundles in \(bundles.path), Mosquitto config \(mq.path)/mosquitto.conf"
                )
            }
        }
    }

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run one load against an MQTT endpoint and print the figures (and a JSON line).",
            discussion: """
                Modes: fanin — every device publishes --messages QoS 1 messages with --window in flight, \
                measuring publish→PUBACK latency; connect — --devices full mutual-TLS connects \
                (handshake, CONNECT, CONNACK, DISCONNECT), --concurrency at a time; idle — hold --devices \
                connections and report the server's RSS per connection (needs --server-pid).
                """
        )
        enum Mode: String, ExpressibleByArgument { case fanin, connect, idle }

        @Option(help: "fanin, connect or idle.") var mode: Mode = .fanin
        @Option(help: "Endpoint host.") var host = "127.0.0.1"
        @Option(help: "Endpoint port.") var port: Int
        @Option(help: "Folder of device bundles (from `hearth bench prepare` or `hearth factory provision`).")
        var bundles: String
        @Option(help: "Devices to simulate (at most the bundles there are).") var devices: Int = 100
        @Option(help: "Messages per device (fanin).") var messages: Int = 1000
        @Option(help: "QoS 1 messages in flight per device (fanin).") var window: Int = 10
        @Option(
            help: "Topic under devices/SERIAL/: telemetry (validated and stored by Hearth) or events (routed only).")
        var topic = "telemetry"
        @Option(help: "Connections opened at a time.") var concurrency: Int = 50
        @Option(name: .customLong("server-pid"), help: "The server's process id, to read its RSS.") var serverPID:
            Int32?
        @Option(help: "Label for the JSON line (e.g. hearth, mosquitto).") var label = "endpoint"

        func run() async throws {
            try await reportingErrors {
                let all = try BenchDevice.load(URL(fileURLWithPath: bundles))
                guard devices >= 1, devices <= all.count else {
                    throw HearthError.invalid("devices", "between 1 and the \(all.count) bundles in \(bundles)")
                }
                guard ["telemetry", "events"].contains(topic) else {
                    throw HearthError.invalid("topic", "telemetry or events")
                }
                let chosen = Array(all.prefix(devices))
                let tls = try BenchDevice.tlsContexts(chosen)
                let load = Load(host: host, port: port, topic: topic, group: MultiThreadedEventLoopGroup.singleton)
                switch mode {
                case .fanin: try await fanIn(load, chosen, tls)
                case .connect: try await connects(load, chosen, tls)
                case .idle: try await idle(load, chosen, tls)
                }
            }
        }

        func fanIn(_ load: Load, _ chosen: [BenchDevice], _ tls: [NIOSSLContext]) async throws {
            let rssBefore = serverPID.flatMap(rss)
            let start = Date()
            let results = try await withThrowingTaskGroup(of: Load.PublishResult.self) { group in
                for (i, device) in chosen.enumerated() {
                    group.addTask { try await load.publish(device, tls[i], messages: messages, window: window) }
                }
                var all: [Load.PublishResult] = []
                for try await r in group { all.append(r) }
                return all
            }
            let seconds = Date().timeIntervalSince(start)
            let latencies = results.flatMap(\.latencies).sorted()
            let acked = results.reduce(0) { $0 + $1.acknowledged }
            let refused = results.reduce(0) { $0 + $1.refused }
            let sent = chosen.count * messages
            report([
                "mode": "fanin", "topic": .string(topic), "devices": .number(Double(chosen.count)),
                "messages": .number(Double(sent)),
                "acknowledged": .number(Double(acked)), "refused": .number(Double(refused)),
                "lost": .number(Double(sent - acked - refused)),
                "seconds": .number(seconds.rounded(toPlaces: 2)),
                "messagesPerSecond": .number((Double(acked) / seconds).rounded()),
                "p50ms": .number(percentile(latencies, 0.5)), "p99ms": .number(percentile(latencies, 0.99)),
                "serverRSSMB": serverPID.flatMap(rss).map { .number($0.rounded(toPlaces: 1)) } ?? .null,
                "serverRSSBeforeMB": rssBefore.map { .number($0.rounded(toPlaces: 1)) } ?? .null,
            ])
        }

        /// Worker `w` of `workers` takes devices w, w + workers, … so that `workers` connections
        /// are in progress at a time.
        func spread<T: Sendable>(_ chosen: [BenchDevice], _ body: @escaping @Sendable (Int) async -> T?) async -> [T] {
            let workers = max(1, min(concurrency, chosen.count))
            return await withTaskGroup(of: [T].self) { group in
                for w in 0..<workers {
                    group.addTask {
                        var mine: [T] = []
                        for i in stride(from: w, to: chosen.count, by: workers) {
                            if let r = await body(i) { mine.append(r) }
                        }
                        return mine
                    }
                }
                var all: [T] = []
                for await part in group { all += part }
                return all
            }
        }

        func connects(_ load: Load, _ chosen: [BenchDevice], _ tls: [NIOSSLContext]) async throws {
            let start = Date()
            let ok = await spread(chosen) { i in await load.connectOnce(chosen[i], tls[i]) ? true : nil }.count
            let seconds = Date().timeIntervalSince(start)
            report([
                "mode": "connect", "connects": .number(Double(ok)), "failed": .number(Double(chosen.count - ok)),
                "seconds": .number(seconds.rounded(toPlaces: 2)),
                "connectsPerSecond": .number((Double(ok) / seconds).rounded()),
            ])
        }

        func idle(_ load: Load, _ chosen: [BenchDevice], _ tls: [NIOSSLContext]) async throws {
            guard let serverPID, let before = rss(serverPID) else {
                throw HearthError.invalid("server-pid", "idle mode needs the server's pid (its /proc/PID/status)")
            }
            let open = await spread(chosen) { i in await load.connectAndHold(chosen[i], tls[i]) }
            try await Task.sleep(for: .seconds(5))
            let after = rss(serverPID) ?? before
            report([
                "mode": "idle", "connections": .number(Double(open.count)),
                "failed": .number(Double(chosen.count - open.count)),
                "serverRSSBeforeMB": .number(before.rounded(toPlaces: 1)),
                "serverRSSAfterMB": .number(after.rounded(toPlaces: 1)),
                "kBPerConnection": .number(
                    open.isEmpty ? 0 : ((after - before) * 1024 / Double(open.count)).rounded(toPlaces: 1)),
            ])
            for channel in open { channel.close(promise: nil) }
        }

        func report(_ figures: [String: JSONValue]) {
            var figures = figures
            figures["label"] = .string(label)
            for (key, value) in figures.sorted(by: { $0.key < $1.key }) { print("\(key)\t\(value.text)") }
            print("JSON " + JSONValue.object(figures).text)
        }
    }
}

/// A device identity from a bundle folder.
struct BenchDevice: Sendable {
    let serial: String
    let certificatePEM: String
    let keyPEM: String
    let rootPEM: String

    static func load(_ folder: URL) throws -> [BenchDevice] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()) ?? []
        let devices = names.compactMap { name -> BenchDevice? in
            let dir = folder.appendingPathComponent(name)
            guard let cert = try? String(contentsOf: dir.appendingPathComponent("device.pem"), encoding: .utf8),
                let key = try? String(contentsOf: dir.appendingPathComponent("device.key.pem"), encoding: .utf8),
                let root = try? String(contentsOf: dir.appendingPathComponent("server-root-ca.pem"), encoding: .utf8)
            else { return nil }
            return BenchDevice(serial: name, certificatePEM: cert, keyPEM: key, rootPEM: root)
        }
        guard !devices.isEmpty else { throw HearthError.invalid("bundles", "no device bundles in \(folder.path)") }
        return devices
    }

    static func tlsContexts(_ devices: [BenchDevice]) throws -> [NIOSSLContext] {
        try devices.map { d in
            try NIOSSLContext(
                configuration: TLSPolicy.client(
                    trustRoots: try NIOSSLCertificate.fromPEMBytes(Array(d.rootPEM.utf8)),
                    certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(d.certificatePEM.utf8)),
                    privateKey: try NIOSSLPrivateKey(bytes: Array(d.keyPEM.utf8), format: .pem)))
        }
    }
}

/// One simulated device's connection: MQTT 5.0 over TLS with Hearth's codec.
struct Load: Sendable {
    let host: String
    let port: Int
    let topic: String
    let group: any EventLoopGroup

    struct PublishResult: Sendable {
        var acknowledged = 0
        var refused = 0
        var latencies: [Double] = []
    }

    /// Connects `device` and runs `BenchHandler` on it until it is done.
    func run(_ device: BenchDevice, _ tls: NIOSSLContext, messages: Int, window: Int, hold: Bool = false) async throws
        -> (any Channel, Load.PublishResult)
    {
        let loop = group.next()
        let handler = BenchHandler(
            device: device, topic: topic, messages: messages, window: window, hold: hold, done: loop.makePromise())
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: loop)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(.seconds(30))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: tls, serverHostname: nil))
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            handler.done.fail(error)
            throw error
        }
        do {
            return (channel, try await handler.done.futureResult.get())
        } catch {
            try? await channel.close()
            throw error
        }
    }

    func publish(_ device: BenchDevice, _ tls: NIOSSLContext, messages: Int, window: Int) async throws -> PublishResult
    {
        let (channel, result) = try await run(device, tls, messages: messages, window: window)
        try? await channel.close()
        return result
    }

    func connectOnce(_ device: BenchDevice, _ tls: NIOSSLContext) async -> Bool {
        guard let (channel, _) = try? await run(device, tls, messages: 0, window: 1) else { return false }
        try? await channel.close()
        return true
    }

    func connectAndHold(_ device: BenchDevice, _ tls: NIOSSLContext) async -> (any Channel)? {
        try? await run(device, tls, messages: 0, window: 1, hold: true).0
    }
}

/// Sends CONNECT, then (for fan-in) keeps `window` QoS 1 publishes in flight until `messages` are
/// acknowledged, timing each; then DISCONNECT unless told to hold the connection.
final class BenchHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let device: BenchDevice
    let topic: String
    let messages: Int
    let window: Int
    let hold: Bool
    let done: EventLoopPromise<Load.PublishResult>
    var framer = MQTTFramer(MQTTParser(version: .v5))
    var sent = 0
    var result = Load.PublishResult()
    var sentAt: [UInt16: UInt64] = [:]
    var nextID: UInt16 = 1
    var finished = false

    init(
        device: BenchDevice, topic: String, messages: Int, window: Int, hold: Bool,
        done: EventLoopPromise<Load.PublishResult>
    ) {
        self.done = done
        self.device = device
        self.topic = "devices/\(device.serial)/\(topic)"
        self.messages = messages
        self.window = window
        self.hold = hold
    }

    func channelActive(context: ChannelHandlerContext) {
        let connect = Connect(version: .v5, clientID: device.serial, cleanStart: true, keepAlive: 300)
        write(.connect(connect), context: context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        do {
            try framer.decode(&bytes) { packet in
                handle(packet, context: context)
                return !finished
            }
        } catch {
            fail(context, "\(error)")
        }
    }

    func handle(_ packet: MQTTPacket, context: ChannelHandlerContext) {
        switch packet {
        case .connack(let ack):
            guard ack.reason == .success else { return fail(context, "CONNACK \(ack.reason)") }
            if messages == 0 {
                if !hold { write(.disconnect(ReasonPacket(reason: .success)), context: context) }
                return succeed(context)
            }
            for _ in 0..<min(window, messages) { publishNext(context) }
            context.flush()
        case .puback(let ack):
            if let at = sentAt.removeValue(forKey: ack.packetID) {
                result.latencies.append(Double(DispatchTime.now().uptimeNanoseconds - at) / 1_000_000)
            }
            // 0x10 (no matching subscribers) is a success too; 0x80 and above are refusals.
            if ack.reason.isError { result.refused += 1 } else { result.acknowledged += 1 }
            if result.acknowledged + result.refused == messages {
                write(.disconnect(ReasonPacket(reason: .success)), context: context)
                return succeed(context)
            }
            if sent < messages {
                publishNext(context)
                context.flush()
            }
        case .disconnect(let d):
            return fail(context, "DISCONNECT \(d.reason)")
        default:
            break
        }
    }

    func publishNext(_ context: ChannelHandlerContext) {
        sent += 1
        let id = nextID
        nextID = nextID == .max ? 1 : nextID + 1
        let payload = #"{"seq":\#(sent),"values":{"temperature":21.5,"heating":false,"target":21}}"#
        sentAt[id] = DispatchTime.now().uptimeNanoseconds
        var packet = ByteBuffer()
        MQTTPacket.publish(Publish(topic: topic, payload: Array(payload.utf8), qos: .atLeastOnce, packetID: id)).write(
            version: .v5, to: &packet)
        context.write(wrapOutboundOut(packet), promise: nil)
    }

    func write(_ packet: MQTTPacket, context: ChannelHandlerContext) {
        var out = ByteBuffer()
        packet.write(version: .v5, to: &out)
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }

    func succeed(_ context: ChannelHandlerContext) {
        finished = true
        done.succeed(result)
    }

    func fail(_ context: ChannelHandlerContext, _ why: String) {
        finished = true
        done.fail(HearthError(.internal, why))
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !finished { fail(context, "connection closed") }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !finished { fail(context, "\(error)") }
        context.close(promise: nil)
    }
}

/// A process's resident set size in MB, from /proc.
func rss(_ pid: Int32) -> Double? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
        let kb = Double(line.split(separator: " ").dropFirst().first ?? "")
    else { return nil }
    return kb / 1024
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))].rounded(toPlaces: 2)
}

extension Double {
    func rounded(toPlaces places: Int) -> Double {
        let f = pow(10, Double(places))
        return (self * f).rounded() / f
    }
}

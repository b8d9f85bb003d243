import ArgumentParser
import Crypto
import Foundation
import HearthCore
import HearthCrypto
import HearthServer
import HearthUpdate

/// `hearth release`: the maker's side of updates, run on the maker's machine. It keeps a workspace
/// with the offline root and targets keys and signs the metadata the server then imports. Nothing
/// here talks to the network.
///
/// ```
/// WORKSPACE/                       0700
///   keys/root-1.key, targets-1.key 0600  Ed25519 private keys (hex); keep them offline
///   keys/retired/                        keys rotated out of root.json
///   publish/metadata/N.root.json         every root version, each signed by the one before too
///   publish/metadata/targets.json        the newest signed targets
///   publish/targets/NAME                 the images
/// ```
/// Copy `publish/` (never `keys/`) to the server and run `hearth updates import --from publish`.
struct ReleaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "release",
        abstract: "Sign firmware releases on the maker's machine (offline root and targets keys).",
        discussion: """
            1. On the server: `hearth updates online-keys --data DATA > online-keys.json` (public keys only).
            2. Here: `hearth release init --workspace WS --online-keys online-keys.json` makes the root and targets keys \
            and signs root.json and an empty targets.json.
            3. `hearth release publish --workspace WS --image fw.bin --model M --version 1.1.0 --min-from 1.0.0 --fixes "…" \
            --severity high --support-ends 2031-12-31` signs a release with plain-language notes.
            4. Copy WS/publish to the server and run `hearth updates import --data DATA --from publish`.
            Rotate the root keys (e.g. one was exposed) with `hearth release rotate-root`.
            """,
        subcommands: [Init.self, Publish.self, RotateRoot.self]
    )

    struct WorkspaceOptions: ParsableArguments {
        @Option(help: "The maker's release workspace (keys and signed metadata).") var workspace: String

        var url: URL { URL(fileURLWithPath: workspace) }
        var keys: URL { url.appendingPathComponent("keys") }
        var metadata: URL { url.appendingPathComponent("publish/metadata") }
        var targets: URL { url.appendingPathComponent("publish/targets") }
    }

    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make the root and targets keys and sign root.json (version 1) and an empty targets.json.")
        @OptionGroup var options: WorkspaceOptions
        @Option(name: .customLong("online-keys"), help: "The server's online-keys.json (`hearth updates online-keys`).")
        var onlineKeys: String
        @Option(name: .customLong("root-keys"), help: "Root keys to make.") var rootKeys = 1
        @Option(name: .customLong("root-threshold"), help: "Root signatures required.") var rootThreshold = 1
        @Option(name: .customLong("targets-keys"), help: "Targets keys to make.") var targetsKeys = 1
        @Option(name: .customLong("targets-threshold"), help: "Targets signatures required.") var targetsThreshold = 1

        func run() async throws {
            try await reportingErrors {
                let ws = Workspace(options)
                guard !FileManager.default.fileExists(atPath: ws.options.keys.path) else {
                    throw HearthError(.conflict, field: "workspace", "\(options.workspace) already has keys")
                }
                guard (1...9).contains(rootKeys), (1...rootKeys).contains(rootThreshold), (1...9).contains(targetsKeys),
                    (1...targetsKeys).contains(targetsThreshold)
                else {
                    throw HearthError.invalid(
                        "root-keys", "1 to 9 keys per role, a threshold between 1 and the number of keys")
                }
                try ws.initialize(
                    online: try ws.readOnlineKeys(onlineKeys), rootKeys: rootKeys, rootThreshold: rootThreshold,
                    targetsKeys: targetsKeys, targetsThreshold: targetsThreshold)
                print(
                    "Made \(rootKeys) root and \(targetsKeys) targets keys in \(ws.options.keys.path) (keep them offline) and signed root.json v1 and targets.json v1."
                )
                print(
                    "Copy \(ws.options.url.appendingPathComponent("publish").path) to the server and run: hearth updates import --data DATA --from publish"
                )
            }
        }
    }

    struct Publish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Sign a firmware image as a release, with plain-language release notes (Code of Practice guideline 3).",
            discussion:
                "Adds the image to targets.json with its model, version, the oldest version it updates from, what it fixes, how serious, whether the device keeps working while it installs, and the support period, then signs a new targets.json version."
        )
        @OptionGroup var options: WorkspaceOptions
        @Option(help: "The firmware image file.") var image: String
        @Option(help: "The product model id it is for.") var model: String
        @Option(help: "Its version, MAJOR.MINOR.PATCH.") var version: String
        @Option(name: .customLong("min-from"), help: "The oldest version it can update from.") var minFrom: String
        @Option(help: "What it fixes, in plain language (10–2000 characters).") var fixes: String
        @Option(help: "How serious: \(UpdateSeverity.allCases.map(\.rawValue).joined(separator: ", ")).") var severity:
            String
        @Flag(
            name: .customLong("stops-working"),
            help: "The device stops doing its job while it installs (default: it keeps working).") var stopsWorking =
            false
        @Option(help: "The most the switch-over (restart) takes, in seconds.") var downtime = 5
        @Option(
            name: .customLong("support-ends"),
            help: "The model's security support end date, YYYY-MM-DD (never earlier than the published one).")
        var supportEnds: String

        func run() async throws {
            try await reportingErrors {
                let ws = Workspace(options)
                guard let severity = UpdateSeverity(rawValue: severity) else {
                    throw HearthError.invalid(
                        "severity", UpdateSeverity.allCases.map(\.rawValue).joined(separator: ", "))
                }
                guard let ends = CalendarDate(supportEnds) else {
                    throw HearthError.invalid("support-ends", "a date, YYYY-MM-DD")
                }
                let bytes = try Data(contentsOf: URL(fileURLWithPath: image))
                let (target, version) = try ws.publish(
                    image: bytes, model: try ProductModelID(model), version: try FirmwareVersion(version),
                    minimumFrom: try FirmwareVersion(minFrom),
                    fixes: fixes, severity: severity, keepsWorking: !stopsWorking, downtime: downtime, supportEnds: ends
                )
                let name = target.name
                print("Signed \(name) (\(bytes.count) bytes) into targets.json v\(version): \(severity.plainEnglish)")
                print(
                    "Copy \(ws.options.url.appendingPathComponent("publish").path) to the server and run: hearth updates import --data DATA --from publish"
                )
            }
        }
    }

    struct RotateRoot: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-root",
            abstract:
                "Replace the root keys (and with --targets the targets keys): signs root.json N+1 with the old and the new root keys.",
            discussion:
                "Devices accept the new root because the old keys signed it, and from then on refuse anything signed only by the retired keys. Retired keys move to keys/retired/."
        )
        @OptionGroup var options: WorkspaceOptions
        @Flag(help: "Also replace the targets keys (re-signs targets.json with the new ones).") var targets = false
        @Option(name: .customLong("online-keys"), help: "The server's online-keys.json, if its online keys changed.")
        var onlineKeys: String?

        func run() async throws {
            try await reportingErrors {
                let ws = Workspace(options)
                let (oldRoot, version) = try ws.latestRoot()
                let oldRootKeys = try ws.keys("root")
                var delegations: [TUFRole: (keys: [TUFKey], threshold: Int)] = [:]
                for role in TUFRole.allCases {
                    let d = try RootMetadata.delegation(role, in: oldRoot.signed)
                    delegations[role] = (Array(d.keys.values), d.threshold)
                }
                let newRootKeys = try oldRootKeys.indices.map { try ws.newKey("root-\(version + 1)-\($0 + 1)") }
                delegations[.root]!.keys = newRootKeys.map { TUFKey($0.publicKey) }
                var newTargetsKeys: [Curve25519.Signing.PrivateKey] = []
                if targets {
                    newTargetsKeys = try (try ws.keys("targets")).indices.map {
                        try ws.newKey("targets-\(version + 1)-\($0 + 1)")
                    }
                    delegations[.targets]!.keys = newTargetsKeys.map { TUFKey($0.publicKey) }
                }
                if let onlineKeys {
                    let online = try ws.readOnlineKeys(onlineKeys)
                    delegations[.snapshot]!.keys = [online.snapshot]
                    delegations[.timestamp]!.keys = [online.timestamp]
                }
                var root = SignedMetadata(
                    signed: try RootMetadata.make(
                        version: version + 1, expires: Date().addingTimeInterval(Workspace.offlineLifetime),
                        keys: delegations.mapValues(\.keys), thresholds: delegations.mapValues(\.threshold)
                    ))
                for key in oldRootKeys + newRootKeys { try root.sign(with: key) }
                try ws.write(root, "\(version + 1).root.json")
                try ws.retire(prefix: "root", keeping: newRootKeys)
                if targets {
                    var current = try ws.current("targets.json")
                    guard case .object(var signed) = current.signed, case .number(let v)? = signed["version"] else {
                        throw HearthError(.integrity, "targets.json is malformed")
                    }
                    signed["version"] = .number(v + 1)
                    signed["expires"] = .string(
                        RootMetadata.timestamp(Date().addingTimeInterval(Workspace.offlineLifetime)))
                    current.signed = .object(signed)
                    try ws.signTargets(current.signed, keys: newTargetsKeys)
                    try ws.retire(prefix: "targets", keeping: newTargetsKeys)
                }
                print(
                    "Signed root.json v\(version + 1) with the old and new root keys\(targets ? "; re-signed targets.json with new targets keys" : ""). Retired keys are in keys/retired/."
                )
            }
        }
    }
}

/// The maker's workspace on disk.
struct Workspace {
    let options: ReleaseCommand.WorkspaceOptions
    static let offlineLifetime: TimeInterval = 365 * 86_400

    init(_ options: ReleaseCommand.WorkspaceOptions) { self.options = options }

    func create() throws {
        umask(0o077)
        for dir in [
            options.url, options.keys, options.keys.appendingPathComponent("retired"), options.metadata,
            options.targets,
        ] {
            try FileManager.default.createDirectory(
                at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
    }

    /// Makes the root and targets keys and signs root.json v1 (snapshot and timestamp delegated to
    /// the server's `online` keys) and an empty targets.json v1.
    func initialize(
        online: (snapshot: TUFKey, timestamp: TUFKey), rootKeys: Int = 1, rootThreshold: Int = 1, targetsKeys: Int = 1,
        targetsThreshold: Int = 1
    ) throws {
        try create()
        let roots = try (1...rootKeys).map { try newKey("root-\($0)") }
        let targets = try (1...targetsKeys).map { try newKey("targets-\($0)") }
        let now = Date()
        var root = SignedMetadata(
            signed: try RootMetadata.make(
                version: 1, expires: now.addingTimeInterval(Self.offlineLifetime),
                keys: [
                    .root: roots.map { TUFKey($0.publicKey) }, .targets: targets.map { TUFKey($0.publicKey) },
                    .snapshot: [online.snapshot], .timestamp: [online.timestamp],
                ],
                thresholds: [.root: rootThreshold, .targets: targetsThreshold]
            ))
        for key in roots { try root.sign(with: key) }
        try write(root, "1.root.json")
        try signTargets(
            RoleMetadata.targets(version: 1, expires: now.addingTimeInterval(Self.offlineLifetime), images: [:]),
            keys: targets)
    }

    /// Adds an image to targets.json with its custom metadata and signs the next version; returns
    /// the target and that version.
    func publish(
        image bytes: Data, model: ProductModelID, version v: FirmwareVersion, minimumFrom: FirmwareVersion,
        fixes: String, severity: UpdateSeverity,
        keepsWorking: Bool, downtime: Int, supportEnds: CalendarDate
    ) throws -> (FirmwareTarget, Int) {
        guard !bytes.isEmpty, bytes.count <= UpdateRepository.maximumImageBytes else {
            throw HearthError(
                .payloadTooLarge, field: "image", "an image is 1 byte to \(UpdateRepository.maximumImageBytes) bytes")
        }
        let name = FirmwareTarget.name(model: model, version: v)
        let target = try FirmwareTarget(
            name: name, length: bytes.count, sha256: Data(SHA256.hash(data: bytes)).hex, model: model, version: v,
            minimumFrom: minimumFrom,
            fixes: fixes, severity: severity, keepsWorking: keepsWorking, downtimeSeconds: downtime,
            supportEnds: supportEnds
        )
        var current = try current("targets.json")
        guard case .object(var signed) = current.signed, case .object(var entries)? = signed["targets"],
            case .number(let oldVersion)? = signed["version"]
        else {
            throw HearthError(.integrity, "targets.json in the workspace is malformed")
        }
        guard entries[name] == nil else {
            throw HearthError(
                .conflict, field: "version",
                "\(name) is already released; a release is never replaced, publish a new version")
        }
        entries[name] = [
            "length": .number(Double(bytes.count)), "hashes": ["sha256": .string(target.sha256)],
            "custom": .object(target.custom),
        ]
        signed["targets"] = .object(entries)
        signed["version"] = .number(oldVersion + 1)
        signed["expires"] = .string(RootMetadata.timestamp(Date().addingTimeInterval(Self.offlineLifetime)))
        try FileManager.default.createDirectory(at: options.targets, withIntermediateDirectories: true)
        try bytes.write(to: options.targets.appendingPathComponent(name), options: .atomic)
        current.signed = .object(signed)
        try signTargets(current.signed, keys: try keys("targets"))
        return (target, Int(oldVersion) + 1)
    }

    func newKey(_ name: String) throws -> Curve25519.Signing.PrivateKey {
        let key = Curve25519.Signing.PrivateKey()
        try DataFolder.writePrivate(
            Data(Data(key.rawRepresentation).hex.utf8), to: options.keys.appendingPathComponent("\(name).key"))
        return key
    }

    /// The role's current keys (files `ROLE-….key` in keys/), each checked to be private.
    func keys(_ role: String) throws -> [Curve25519.Signing.PrivateKey] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: options.keys.path)) ?? []
        let keys = try files.filter { $0.hasPrefix("\(role)-") && $0.hasSuffix(".key") }.sorted().map {
            file -> Curve25519.Signing.PrivateKey in
            let path = options.keys.appendingPathComponent(file).path
            try DataFolder.requirePrivate(path, maxMode: 0o600, what: "the \(role) key")
            guard let text = try? String(contentsOfFile: path, encoding: .utf8),
                let raw = Data(hexString: text.trimmingCharacters(in: .whitespacesAndNewlines)),
                let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw)
            else { throw HearthError(.integrity, field: file, "\(path) is not an Ed25519 key") }
            return key
        }
        guard !keys.isEmpty else {
            throw HearthError(
                .notFound, field: "workspace",
                "no \(role) keys in \(options.keys.path); run `hearth release init` first")
        }
        return keys
    }

    /// Moves the role's key files that are not in `keeping` to keys/retired/.
    func retire(prefix: String, keeping: [Curve25519.Signing.PrivateKey]) throws {
        let keep = Set(keeping.map { Data($0.rawRepresentation).hex })
        for file in (try? FileManager.default.contentsOfDirectory(atPath: options.keys.path)) ?? []
        where file.hasPrefix("\(prefix)-") && file.hasSuffix(".key") {
            let url = options.keys.appendingPathComponent(file)
            guard let hex = try? String(contentsOf: url, encoding: .utf8),
                !keep.contains(hex.trimmingCharacters(in: .whitespacesAndNewlines))
            else { continue }
            try FileManager.default.moveItem(
                at: url, to: options.keys.appendingPathComponent("retired").appendingPathComponent(file))
        }
    }

    func readOnlineKeys(_ path: String) throws -> (snapshot: TUFKey, timestamp: TUFKey) {
        guard let data = FileManager.default.contents(atPath: path), data.count <= 64 * 1024,
            case .object(let o)? = try? JSONValue.parse(Array(data)),
            let snapshot = o["snapshot"], let timestamp = o["timestamp"]
        else { throw HearthError.invalid("online-keys", "\(path) is not the server's online-keys.json") }
        return (try TUFKey(json: snapshot), try TUFKey(json: timestamp))
    }

    func write(_ md: SignedMetadata, _ name: String) throws {
        try Data(md.json.text.utf8).write(to: options.metadata.appendingPathComponent(name), options: .atomic)
    }

    func current(_ name: String) throws -> SignedMetadata {
        guard let data = FileManager.default.contents(atPath: options.metadata.appendingPathComponent(name).path) else {
            throw HearthError(
                .notFound, field: "workspace", "no \(name) in \(options.metadata.path); run `hearth release init` first"
            )
        }
        return try SignedMetadata(json: try JSONValue.parse(Array(data)))
    }

    func latestRoot() throws -> (SignedMetadata, Int) {
        var version = 1
        while FileManager.default.fileExists(
            atPath: options.metadata.appendingPathComponent("\(version + 1).root.json").path)
        { version += 1 }
        return (try current("\(version).root.json"), version)
    }

    func signTargets(_ signed: JSONValue, keys: [Curve25519.Signing.PrivateKey]) throws {
        var md = SignedMetadata(signed: signed)
        for key in keys { try md.sign(with: key) }
        try write(md, "targets.json")
    }
}

/// `hearth updates`: the server's side — import what the maker signed, rollouts, online keys.
struct UpdatesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "updates",
        abstract: "The update repository on the server: online keys, importing signed releases, staged rollouts.",
        subcommands: [OnlineKeys.self, Import.self, Rollout.self, Renew.self]
    )

    /// Runs `body` with the update service on the deployment.
    static func withUpdates<T>(_ options: DataOptions, _ body: (Updates) async throws -> T) async throws -> T {
        try await options.deployment { folder, storage in
            try await body(
                Updates(
                    repository: try UpdateRepository(
                        store: storage.store, kek: folder.kek, targetsDirectory: folder.targetsDirectory)))
        }
    }

    struct OnlineKeys: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "online-keys",
            abstract: "Print the online snapshot and timestamp public keys (JSON) for `hearth release init`.")
        @OptionGroup var options: DataOptions
        func run() async throws {
            try await reportingErrors {
                print(try await UpdatesCommand.withUpdates(options) { try await $0.repository.onlinePublicKeys().text })
            }
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Import the publish folder `hearth release` wrote: checks every signature, version and image, then signs new snapshot and timestamp metadata.",
            discussion:
                "Nothing is stored unless everything checks out. A running server serves the new metadata at once."
        )
        @OptionGroup var options: DataOptions
        @Option(help: "The publish folder (metadata/ and targets/).") var from: String
        func run() async throws {
            try await reportingErrors {
                let imported = try await UpdatesCommand.withUpdates(options) {
                    try await $0.repository.importPublication(from: URL(fileURLWithPath: from))
                }
                if !imported.roots.isEmpty {
                    print("Imported root.json v\(imported.roots.map(String.init).joined(separator: ", v")).")
                }
                if let v = imported.targetsVersion { print("Imported targets.json v\(v).") }
                for r in imported.releases {
                    print(
                        "Released \(r.name): \(r.model) \(r.version) (from \(r.minimumFrom)), \(r.severity.rawValue): \(r.fixes)"
                    )
                }
                if imported.roots.isEmpty && imported.targetsVersion == nil { print("Nothing new to import.") }
            }
        }
    }

    struct Renew: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Renew the timestamp and snapshot metadata if they are due (the server does this by itself while it runs)."
        )
        @OptionGroup var options: DataOptions
        func run() async throws {
            try await reportingErrors {
                let renewed = try await UpdatesCommand.withUpdates(options) { try await $0.repository.renewIfDue() }
                print(
                    renewed.isEmpty ? "Nothing due." : "Renewed \(renewed.map(\.rawValue).joined(separator: " and ")).")
            }
        }
    }

    struct Rollout: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start, list, pause, resume, advance or abort staged rollouts.",
            discussion:
                "`start TARGET` rolls a release out in stages (default 1, 10, 50, 100 percent), pausing by itself when more than the failure threshold of attempts fail. Other actions take the rollout id (RO-…)."
        )
        @OptionGroup var options: DataOptions
        @Argument(help: "start, list, show, pause, resume, advance or abort.") var action: String
        @Argument(help: "The target (for start) or the rollout id.") var subject: String?
        @Option(help: "Stages in percent, comma-separated.") var stages = "1,10,50,100"
        @Option(name: .customLong("failure-threshold"), help: "Share of failed attempts that pauses the rollout.")
        var failureThreshold = 0.2
        @Option(name: .customLong("minimum-sample"), help: "Attempts before the threshold applies.") var minimumSample =
            3

        func run() async throws {
            try await UpdatesCommand.withUpdates(options) { updates in
                switch action {
                case "list":
                    for v in try await updates.rollouts() { print(Self.line(v)) }
                case "start":
                    guard let subject else {
                        throw HearthError.invalid("target", "name the release to roll out, MODEL-VERSION.img")
                    }
                    let plan = try RolloutPlan(
                        stages: stages.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) ?? -1 },
                        failureThreshold: failureThreshold, minimumSample: minimumSample)
                    print(Self.line(try await updates.startRollout(target: subject, plan: plan, actor: "cli")))
                case "show":
                    print(Self.line(try await updates.view(subject ?? "")))
                default:
                    guard let control = Updates.Control(rawValue: action) else {
                        throw HearthError.invalid("action", "start, list, show, pause, resume, advance or abort")
                    }
                    print(Self.line(try await updates.control(subject ?? "", control, actor: "cli")))
                }
            }
        }

        static func line(_ v: Updates.RolloutView) -> String {
            let r = v.rollout
            return
                "\(r.id)\t\(r.target)\t\(r.state)\tstage \(r.stage + 1)/\(r.stages.count) (\(r.stages[min(r.stage, r.stages.count - 1)])%)\t\(v.tally.succeeded) succeeded, \(v.tally.failed) failed of \(v.tally.members)\t\(r.note ?? "")"
        }
    }
}

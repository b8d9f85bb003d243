import ArgumentParser
import Foundation
import HearthCore
import HearthCrypto
import HearthGateway
import HearthMQTT
import HearthMetrics
import HearthSQLite
import HearthServer
import HearthStorage
import HearthUpdate
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

@main
struct HearthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hearth",
        abstract: "Hearth: a secure-by-design platform for consumer IoT products.",
        discussion: """
            Start with `hearth demo`: it runs the server on a fresh data folder with demo products and \
            devices. Run a real deployment with `hearth serve --data DIR`; on its first start it prints a \
            one-time link that creates the first operator account (there is no default password).
            """,
        subcommands: [
            Serve.self, Demo.self, ModelCommand.self, Factory.self, DeviceCommand.self, DisclosureCommand.self,
            ReleaseCommand.self, UpdatesCommand.self, Audit.self, Assess.self, Bench.self,
        ]
    )
}

/// Options every command that opens a deployment shares.
struct DataOptions: ParsableArguments {
    @Option(name: .long, help: "The data folder (created with mode 0700 on first use).")
    var data: String = "hearth-data"

    @Option(
        name: .customLong("kek-file"),
        help:
            "Read the key-encryption key from this file (32 bytes, mode 0600) instead of DATA/kek.key. Keep it off the data folder's disk so a copy of the folder reveals nothing."
    )
    var kekFile: String?

    @Option(
        name: .customLong("hostname"),
        help:
            "A DNS name or IP clients reach the server by; repeat for several. The HTTPS certificate covers them, and requests naming any other Host are refused (421). Default: localhost, 127.0.0.1, ::1."
    )
    var hostnames: [String] = []

    @Option(
        name: .customLong("database"),
        help: ArgumentHelp(
            "Keep the deployment's state in PostgreSQL instead of the SQLite files in the data folder: postgres://USER@HOST[:PORT]/DATABASE. TLS with the server's certificate and name verified by default (add sslrootcert=FILE for a private CA); sslmode=disable only to a loopback address. Several `hearth serve` nodes may share one database.",
            valueName: "url"))
    var database: String?

    @Option(
        name: .customLong("database-password-file"),
        help: "The database role's password, in a file of mode 0600 (never in the address or on the command line).")
    var databasePasswordFile: String?

    /// The data folder (keys, certificates, targets) without its database.
    func folder() throws -> DataFolder {
        try DataFolder.open(
            path: data, kekFile: kekFile, hostnames: hostnames.isEmpty ? DataFolder.defaultHostnames : hostnames)
    }

    /// Runs `body` on the deployment (its folder and storage, on SQLite or PostgreSQL), turning
    /// Hearth's errors into a clear message and exit code 1: every command that opens one.
    func deployment<T>(_ body: (DataFolder, Storage) async throws -> T) async throws -> T {
        try await reportingErrors {
            let folder = try folder()
            return try await Storage.with(
                folder: folder, database: try DatabaseChoice(address: database, passwordFile: databasePasswordFile)
            ) { try await body(folder, $0) }
        }
    }

    /// The SQLite storage of a new data folder, for the demo and the benchmarks that make one.
    func openSQLite() throws -> (DataFolder, Storage) {
        guard database == nil else {
            throw HearthError.invalid("database", "this command makes its own data folder on SQLite")
        }
        let folder = try folder()
        return (folder, try Storage.sqlite(folder))
    }
}

typealias ListenAddress = HostPort

extension HostPort: ExpressibleByArgument {
    public init?(argument: String) { self.init(parsing: argument) }
}

func printErr(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// Runs a command body, turning Hearth's errors into a clear message and exit code 1.
func reportingErrors<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as HearthError {
        printErr("hearth: \(error.message)\(error.field.map { " [\($0)]" } ?? "")")
        throw ExitCode.failure
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the Hearth server (HTTPS API and pages).",
        discussion: """
            HTTPS only (TLS 1.2 minimum, 1.3 preferred). Binds to 127.0.0.1:8443 unless --listen says \
            otherwise. Stops gracefully on SIGINT or SIGTERM. While no operator account exists, each start \
            prints a fresh one-time set-up link, valid for an hour.
            """
    )

    @OptionGroup var options: DataOptions

    @Option(help: "Address to listen on, HOST:PORT (port 0 picks a free port).")
    var listen: ListenAddress = ListenAddress(argument: "127.0.0.1:8443")!

    @OptionGroup var gateway: GatewayOptions

    @OptionGroup var disclosure: DisclosureOptions

    @OptionGroup var operations: OperationsOptions

    @OptionGroup var testOnly: TestOnlyOptions

    func run() async throws {
        operations.bootstrapLogging()
        try await options.deployment { folder, storage in
            try await runServer(
                folder: folder, storage: storage, listen: listen, gateway: gateway, operations: operations,
                settings: try disclosure.settings(), weakenings: testOnly.weakenings, banner: { _ in })
        }
    }
}

/// The MQTT gateway's listeners and limits.
struct GatewayOptions: ParsableArguments {
    @Option(
        name: .customLong("mqtt-listen"),
        help:
            "Address of the MQTT device listener (mutual TLS; devices present a certificate from the deployment's device CA), HOST:PORT. Use 0.0.0.0:8883 to serve devices on the network."
    )
    var mqttListen: ListenAddress = ListenAddress(argument: "127.0.0.1:8883")!

    @Option(
        name: .customLong("dev-listener"),
        help:
            "Also run the plaintext MQTT development listener at HOST:PORT, for anonymous local clients on topics outside devices/. Off by default; loopback addresses only."
    )
    var devListener: ListenAddress?

    @Option(
        name: .customLong("dev-deny"),
        help:
            "A topic filter development clients may neither publish to, subscribe to nor receive from (repeatable), e.g. --dev-deny test/nosubscribe. Subscribing gets 0x87 (0x80 in 3.1.1)."
    )
    var devDeny: [String] = []

    @Option(
        name: .customLong("max-connections"),
        help: "MQTT connections open at once; more get CONNACK 0x89 (server busy).")
    var maxConnections = 50_000

    @Option(
        name: .customLong("max-connects-per-second"),
        help: "New MQTT connections per second (burst: twice this); more get CONNACK 0x9F (connection rate exceeded).")
    var maxConnectsPerSecond = 500.0

    @Option(
        name: .customLong("max-publishes-per-second"),
        help: "Publishes per second per connection; more get PUBACK 0x97 (quota exceeded).")
    var maxPublishesPerSecond = 100.0

    @Option(
        name: .customLong("max-bytes-per-second"),
        help: "Payload bytes per second per connection; more get PUBACK 0x97.")
    var maxBytesPerSecond = 512.0 * 1024

    @Flag(
        name: .customLong("benchmark-monitoring-off"),
        help: ArgumentHelp(
            "Run without security monitoring and gateway metrics, only to measure what they cost. Never in production.",
            visibility: .hidden))
    var monitoringOff = false

    func configuration() throws -> GatewayConfiguration {
        guard maxConnections > 0, maxConnectsPerSecond > 0, maxPublishesPerSecond > 0, maxBytesPerSecond > 0 else {
            throw HearthError.invalid("max-…", "limits must be positive")
        }
        var c = GatewayConfiguration(
            deviceListener: (mqttListen.host, mqttListen.port),
            developmentListener: devListener.map { ($0.host, $0.port) })
        c.maximumConnections = maxConnections
        for filter in devDeny where !Topic.isValidFilter(filter) {
            throw HearthError.invalid("dev-deny", "'\(filter)' is not an MQTT topic filter")
        }
        c.developmentDenied = devDeny
        c.connectsPerSecond = maxConnectsPerSecond
        c.connectBurst = maxConnectsPerSecond * 2
        c.limits.publishesPerSecond = maxPublishesPerSecond
        c.limits.bytesPerSecond = maxBytesPerSecond
        c.monitoring = !monitoringOff
        return c
    }
}

/// Metrics, logs and alert delivery: the operating side of a server.
struct OperationsOptions: ParsableArguments {
    @Option(
        name: .customLong("metrics-listen"),
        help:
            "Address of the Prometheus metrics listener (GET /metrics), HOST:PORT; apart from the public listener. Plain HTTP on loopback; on any other address HTTPS with the server certificate. Scrape it from the same host, or open it deliberately."
    )
    var metricsListen: ListenAddress = ListenAddress(argument: "127.0.0.1:9464")!

    @Option(
        name: .customLong("log-format"),
        help:
            "text (for a terminal) or json (one object a line: time, level, component, message, connection or request id) for a log collector. Logs go to standard error and never hold a password, token, setup code or key."
    )
    var logFormat: LogFormat = .text

    @Option(
        name: .customLong("alert-webhook"),
        help:
            "POST each security alert as JSON to this https:// URL (http:// on loopback only), signed with HMAC-SHA-256 (header X-Hearth-Signature: t=UNIX,v1=HEX over \"UNIX.BODY\"); retried with backoff until it answers 2xx. Needs --alert-webhook-secret-file."
    )
    var alertWebhook: String?

    @Option(
        name: .customLong("alert-webhook-secret-file"),
        help:
            "The webhook's HMAC secret: a file of at least 16 bytes, mode 0600 or stricter (e.g. `openssl rand -hex 32 > FILE; chmod 600 FILE`)."
    )
    var alertWebhookSecretFile: String?

    @Option(
        name: .customLong("alert-webhook-ca"),
        help: "Trust only this CA (PEM) for the webhook's certificate, instead of the system's trust store.")
    var alertWebhookCA: String?

    /// The webhook service, when one is configured; a clear error for a half-configured one.
    func webhook(store: any HearthStore) throws -> AlertWebhook? {
        guard let alertWebhook else {
            if alertWebhookSecretFile != nil { throw HearthError.invalid("alert-webhook", "give the URL too") }
            return nil
        }
        guard let file = alertWebhookSecretFile else {
            throw HearthError.invalid("alert-webhook-secret-file", "a webhook needs a secret to sign with")
        }
        guard let secret = FileManager.default.contents(atPath: file) else {
            throw HearthError.invalid("alert-webhook-secret-file", "cannot read \(file)")
        }
        try DataFolder.requirePrivate(file, maxMode: 0o600, what: "the alert webhook secret")
        let trimmed = Array(
            String(decoding: secret, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines).utf8)
        let roots = try alertWebhookCA.map { try NIOSSLCertificate.fromPEMFile($0) }
        return try AlertWebhook(
            target: try WebhookTarget(parsing: alertWebhook), secret: trimmed, store: store, trustRoots: roots)
    }

    /// Sends every logger of the process to the chosen format (once per process).
    func bootstrapLogging() {
        let format = logFormat
        LoggingSystem.bootstrap { label in format.handler(label: label) }
    }
}

extension LogFormat: ExpressibleByArgument {}

/// Flags that weaken a server on purpose, so the tests of `hearth assess` can show each live check
/// failing. Hidden from `--help`; a server started with one records it in `DATA/serving.json`, and
/// the assessment reports it.
struct TestOnlyOptions: ParsableArguments {
    @Flag(
        name: .customLong("test-only-weak-suite"),
        help: ArgumentHelp(
            "Also offer ECDHE-ECDSA-AES128-SHA (CBC) on the HTTPS listener. Never in production.", visibility: .hidden))
    var weakSuite = false

    @Flag(
        name: .customLong("test-only-extra-listener"),
        help: ArgumentHelp(
            "Also listen on an undeclared TCP port on loopback. Never in production.", visibility: .hidden))
    var extraListener = false

    @Flag(
        name: .customLong("test-only-expired-security-txt"),
        help: ArgumentHelp("Serve security.txt with an Expires in the past. Never in production.", visibility: .hidden))
    var expiredSecurityTxt = false

    var weakenings: Weakenings {
        Weakenings(weakSuite: weakSuite, extraListener: extraListener, expiredSecurityTxt: expiredSecurityTxt)
    }
}

/// What ``TestOnlyOptions`` asked for (none by default).
struct Weakenings: Sendable {
    var weakSuite = false
    var extraListener = false
    var expiredSecurityTxt = false

    var names: [String] {
        [
            weakSuite ? "test-only-weak-suite" : nil, extraListener ? "test-only-extra-listener" : nil,
            expiredSecurityTxt ? "test-only-expired-security-txt" : nil,
        ].compactMap { $0 }
    }
}

/// A TCP listener nobody declared (``TestOnlyOptions/extraListener``): accepts and closes.
struct UndeclaredListener: Service {
    func run() async throws {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { $0.close() }
            .bind(host: "127.0.0.1", port: 0).get()
        print("Undeclared listener (test only): 127.0.0.1:\(channel.localAddress?.port ?? 0)")
        fflush(nil)
        try? await gracefulShutdown()
        try await channel.close()
    }
}

/// The listeners as they come up, for ``ServingRecord``; `complete` runs once all are up.
final class DeclaredListeners: Sendable {
    private let listeners = Mutex<[ServingRecord.Listener]>([])
    private let onComplete = Mutex<(@Sendable ([ServingRecord.Listener]) -> Void)?>(nil)

    func add(_ name: String, host: String, port: Int, security: ServingRecord.Listener.Security) {
        listeners.withLock { $0.append(.init(name: name, host: host, port: port, security: security)) }
    }

    func whenComplete(_ body: @escaping @Sendable ([ServingRecord.Listener]) -> Void) {
        onComplete.withLock { $0 = body }
    }

    func complete() {
        let all = listeners.withLock { $0 }
        onComplete.withLock { $0 }?(all)
    }
}

/// Starts the HTTPS server and the MQTT gateway on `folder` and runs until SIGINT/SIGTERM.
/// `ready` learns the bound addresses; `companions` run beside the server and stop first.
func runServer(
    folder: DataFolder, storage: Storage, listen: ListenAddress, gateway options: GatewayOptions,
    operations: OperationsOptions, settings: HearthSettings = HearthSettings(), weakenings: Weakenings = Weakenings(),
    ready: ServerReady? = nil, companions: [any Service] = [],
    banner: @escaping @Sendable (String) async -> Void
) async throws {
    var logger = Logger(label: "hearth")
    logger.logLevel = .info
    var gatewayLogger = Logger(label: "hearth.gateway")
    gatewayLogger.logLevel = .info
    let metrics = HearthMetrics()
    // /readyz answers 200 once every listener is up (and the database takes a write); then the
    // server declares its listeners in DATA/serving.json for `hearth assess`.
    let declared = DeclaredListeners()
    let readiness = Readiness(
        expecting: Set(["https", "mqtt", "metrics"]).union(options.devListener == nil ? [] : ["mqtt-development"])
    ) {
        Systemd.notify("READY=1")
        declared.complete()
    }
    let store = storage.store
    let (telemetry, readingKeys, brokerState) = (storage.telemetry, storage.readingKeys, storage.brokerState)
    let gateway: MQTTGateway
    do {
        let credentials = DeviceTLSCredentials(
            serverCertificatePEM: try folder.serverCertificate.pem(), serverKeyPEM: folder.serverKey.pemRepresentation,
            deviceCAPEM: try folder.deviceCA.certificate.pem()
        )
        gateway = try MQTTGateway(
            configuration: try options.configuration(), credentials: credentials, store: store, telemetry: telemetry,
            brokerState: brokerState, logger: gatewayLogger, metrics: options.monitoringOff ? nil : metrics
        ) { kind, address in
            switch kind {
            case .devices:
                declared.add(
                    "mqtt-devices", host: options.mqttListen.host, port: address?.port ?? options.mqttListen.port,
                    security: .mutualTLS)
                readiness.up("mqtt")
                ready?.mqtt(address?.port ?? options.mqttListen.port)
                print(
                    "MQTT device listener (mutual TLS, device CA \(folder.deviceCAPath)): mqtts://\(options.mqttListen.host):\(address?.port ?? options.mqttListen.port)"
                )
            case .development:
                declared.add(
                    "mqtt-development", host: options.devListener?.host ?? "127.0.0.1", port: address?.port ?? 0,
                    security: .plaintext)
                readiness.up("mqtt-development")
                print(
                    "MQTT development listener (plaintext, anonymous, loopback only): mqtt://\(options.devListener?.host ?? "127.0.0.1"):\(address?.port ?? 0)"
                )
            }
            fflush(nil)
        }
    } catch let error as GatewayError {
        throw HearthError(.invalidInput, field: "dev-listener", error.description)
    }
    let repository = try UpdateRepository(store: store, kek: folder.kek, targetsDirectory: folder.targetsDirectory)
    let updates = Updates(repository: repository)
    gateway.attach(updates: updates)
    updates.attach { [gateway] serial, observation in gateway.observe(serial, observation) }
    var settings = settings
    if weakenings.expiredSecurityTxt { settings.disclosure.expiresAfter = -86_400 }
    // Requests must name a host the server certificate covers (`--hostname`); others get 421.
    settings.hostnames = folder.serverCertificate.subjectAlternativeHostnames
    // Nodes sharing a database: which node holds which device, commands for devices on others.
    let link = storage.cluster.map { cluster in
        ClusterLink(store: cluster, local: gateway, takenOver: { [gateway] in gateway.takenOver($0) })
    }
    if let link {
        gateway.attach(recorder: link)
        gateway.attach(handoff: link)
    }
    let hearth = try Hearth(
        store: store, kek: folder.kek, settings: settings, telemetry: telemetry, readingKeys: readingKeys,
        commands: link ?? gateway, updates: updates, metrics: metrics, readiness: readiness)
    gateway.attach(resets: hearth)
    let assessments = try AssessmentService(folder: folder, store: store, storage: storage.description)
    hearth.attach(assessments: assessments)
    let hashCost = settings.hashCost
    declared.whenComplete { [settings] listeners in
        let record = ServingRecord(
            pid: getpid(), startedAt: Date(), listeners: listeners, hostnames: settings.hostnames,
            storage: storage.description, sessionLifetimeSeconds: Int(settings.sessionLifetime),
            passwordHash: "scrypt N=2^\(hashCost.logN), r=\(hashCost.r), p=\(hashCost.p)",
            securityContacts: settings.disclosure.contacts, securityLanguages: settings.disclosure.languages,
            maxConnections: options.maxConnections, connectsPerSecond: options.maxConnectsPerSecond,
            publishesPerSecond: options.maxPublishesPerSecond, bytesPerSecond: options.maxBytesPerSecond,
            monitoring: !options.monitoringOff, readingsSealed: true, kekOutsideDataFolder: folder.kekOutside,
            testOnly: weakenings.names)
        do {
            try assessments.serving(record)
        } catch {
            printErr("hearth: could not write \(folder.url.path)/serving.json: \(error)")
        }
    }
    gateway.attach(certificates: DeviceCertificates(store: store, deviceCA: folder.deviceCA))
    let webhook = try operations.webhook(store: store)
    gateway.attach(
        alerts: SecurityAlerts(
            store: store, quarantine: gateway, metrics: metrics, webhook: webhook,
            logger: Logger(label: "hearth.alerts")))
    metrics.collect {
        let rollouts = (try? await repository.store.rollouts(model: nil)) ?? []
        for state in RolloutState.allCases {
            metrics.gauge(
                "hearth_update_rollouts", help: "Update rollouts, by state.", label: "state", value: state.rawValue
            ).set(Double(rollouts.filter { $0.state == state.rawValue }.count))
        }
    }
    let metricsListen = operations.metricsListen
    let metricsApp = try HTTPSServer.metricsApplication(
        metrics: metrics, host: metricsListen.host, port: metricsListen.port,
        tls: MQTTGateway.isLoopback(metricsListen.host) ? nil : try HTTPSServer.tlsConfiguration(folder: folder),
        logger: logger
    ) { address in
        let scheme = MQTTGateway.isLoopback(metricsListen.host) ? "http" : "https"
        let host = metricsListen.host.contains(":") ? "[\(metricsListen.host)]" : metricsListen.host
        print("Metrics (Prometheus): \(scheme)://\(host):\(address?.port ?? metricsListen.port)/metrics")
        fflush(nil)
        declared.add(
            "metrics", host: metricsListen.host, port: address?.port ?? metricsListen.port,
            security: scheme == "http" ? .plaintext : .tls)
        readiness.up("metrics")
    }
    if folder.created {
        print("Created data folder \(folder.url.path) with a new root CA, device CA and server certificate.")
    }
    print("State: \(storage.description)")
    try await store.appendAudit(
        AuditEntry(.serverStarted, detail: "listening on \(listen), MQTT on \(options.mqttListen)", at: Date()))
    let app = try HTTPSServer.application(
        hearth: hearth, folder: folder, host: listen.host, port: listen.port, logger: logger,
        extraCipherSuites: weakenings.weakSuite ? "ECDHE-ECDSA-AES128-SHA" : nil
    ) { address in
        let port = address?.port ?? listen.port
        let host = listen.host.contains(":") ? "[\(listen.host)]" : listen.host
        let base = "https://\(host):\(port)"
        print("Hearth is serving \(base)  (health: \(base)/healthz)")
        print("Clients verify it with the deployment root CA: \(folder.rootCAPath)")
        do {
            if let link = try await hearth.issueSetupLinkIfNeeded(baseURL: base) {
                print("No operator account exists yet. Open this one-time link within an hour to create it:")
                print("  \(link)")
            }
        } catch {
            printErr("hearth: could not issue the set-up link: \(error)")
        }
        await banner(base)
        fflush(nil)
        declared.add("https", host: listen.host, port: port, security: .tls)
        readiness.up("https")
        ready?.https(port)
    }
    let sweeper = Periodic.sessionSweeper(store: store, logger: logger)
    let renewer = Periodic.repositoryRenewer(repository: repository, logger: logger)
    let retention = Periodic.retention(hearth: hearth, logger: logger)
    let group = ServiceGroup(
        services: [
            app, metricsApp, sweeper, gateway, renewer, retention,
            StopNotice(readiness: readiness, stopping: { assessments.stopped() }),
        ] + (webhook.map { [$0] } ?? []) + (link.map { [$0] } ?? [])
            + (weakenings.extraListener ? [UndeclaredListener()] : []) + companions,
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger)
    do {
        try await group.run()
    } catch let error as IOError
        where error.errnoCode == EADDRINUSE || error.errnoCode == EACCES || error.errnoCode == EADDRNOTAVAIL
    {
        throw HearthError(
            .invalidInput, field: "listen",
            "cannot listen on \(listen) or \(options.mqttListen): \(String(cString: strerror(error.errnoCode)))")
    }
    assessments.stopped()
    print("Hearth stopped.")
}

/// At the start of a graceful stop: `/readyz` answers 503 (a load balancer stops sending new
/// clients while the listeners drain) and systemd hears `STOPPING=1`.
struct StopNotice: Service {
    let readiness: Readiness
    /// Runs as the stop begins (the server's `serving.json` is removed).
    var stopping: @Sendable () -> Void = {}

    func run() async throws {
        try? await gracefulShutdown()
        readiness.down("stopping")
        stopping()
        Systemd.notify("STOPPING=1")
    }
}

/// security.txt's contacts and languages.
struct DisclosureOptions: ParsableArguments {
    @Option(
        name: .customLong("security-contact"),
        help:
            "A Contact for /.well-known/security.txt (mailto:, https:// or tel: URI); repeat for several, most preferred first. The server's own report form is always listed."
    )
    var contacts: [String] = []

    @Option(
        name: .customLong("security-language"),
        help: "A language the security team reads (en, de, pt-BR…); repeat for several. Default: en.")
    var languages: [String] = []

    func settings() throws -> HearthSettings {
        var settings = HearthSettings()
        settings.disclosure.contacts = try contacts.map(DisclosureSettings.validContact)
        if !languages.isEmpty { settings.disclosure.languages = try languages.map(DisclosureSettings.validLanguage) }
        return settings
    }
}

struct DisclosureCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disclosure",
        abstract: "Handle vulnerability reports: list, show, move along the workflow, manage the security team.",
        discussion: """
            The workflow: received → acknowledged → valid | duplicate | not_a_vulnerability → fix_in_progress → fixed →             disclosed. Each move takes a note, which the reporter sees on their status page. Reports are due for             acknowledgement within 5 days and for a fix and disclosure within 90; overdue ones are flagged.
            """,
        subcommands: [List.self, Show.self, Move.self, Team.self]
    )

    /// Runs `body` with the application service on the deployment: the CLI acts through the same
    /// calls, checks and audit entries as the API.
    static func withHearth<T>(_ options: DataOptions, _ body: (Hearth) async throws -> T) async throws -> T {
        try await options.deployment { folder, storage in
            try await body(
                try Hearth(
                    store: storage.store, kek: folder.kek, settings: HearthSettings(), telemetry: storage.telemetry,
                    readingKeys: storage.readingKeys))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List reports, newest first, with what is overdue.")
        @OptionGroup var options: DataOptions
        func run() async throws {
            try await reportingErrors {
                for r in try await DisclosureCommand.withHearth(options, { try await $0.allReports() }) {
                    let flags = r.overdue.map(\.rawValue).joined(separator: ",")
                    print(
                        "\(r.id)\t\(r.state.rawValue)\t\(ISO8601DateFormatter().string(from: r.receivedAt))\t\(flags.isEmpty ? "-" : "OVERDUE:" + flags)\t\(r.text("title") ?? "")"
                    )
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one report: its text, deadlines and history.")
        @OptionGroup var options: DataOptions
        @Argument(help: "The report id (VR-…).") var id: String
        func run() async throws {
            try await reportingErrors {
                let r = try await DisclosureCommand.withHearth(options) { try await $0.report(id) }
                print(
                    "id\t\(r.id)\nstate\t\(r.state.rawValue)\nacknowledge by\t\(r.acknowledgeBy)\ndisclose by\t\(r.discloseBy)\noverdue\t\(r.overdue.map(\.rawValue).joined(separator: ", "))"
                )
                for key in ["title", "product", "contact", "credit", "description"] {
                    if let v = r.text(key) { print("\(key)\t\(v)") }
                }
                for step in r.history { print("history\t\(step.at)\t\(step.state.rawValue)\t\(step.note ?? "")") }
            }
        }
    }

    struct Move: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move a report to its next state, with a note the reporter sees.")
        @OptionGroup var options: DataOptions
        @Argument(help: "The report id (VR-…).") var id: String
        @Argument(help: "The new state: \(ReportState.allCases.map(\.rawValue).joined(separator: ", ")).") var state:
            String
        @Option(help: "A note for the reporter (shown on their status page).") var note: String?
        func run() async throws {
            try await reportingErrors {
                guard let to = ReportState(rawValue: state) else {
                    throw HearthError.invalid(
                        "state", "one of \(ReportState.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                if let note {
                    _ = try ObjectSchema([FieldSchema("note", .string(maxLength: 2_000, multiline: true))]).validate([
                        "note": .string(note)
                    ])
                }
                let r = try await DisclosureCommand.withHearth(options) {
                    try await $0.moveReport(id, to: to, note: note, actor: "cli")
                }
                print("\(r.id) is now \(r.state.rawValue): \(r.state.plainEnglish)")
            }
        }
    }

    struct Team: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add an operator to the security team (who may read reports through the API), or remove them.")
        @OptionGroup var options: DataOptions
        @Argument(help: "The operator's e-mail address.") var email: String
        @Flag(help: "Remove instead of add.") var remove = false
        func run() async throws {
            try await reportingErrors {
                try await DisclosureCommand.withHearth(options) {
                    try await $0.setSecurityTeam(email: email, member: !remove)
                }
                print(remove ? "Removed \(email) from the security team." : "Added \(email) to the security team.")
            }
        }
    }
}

struct ModelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model", abstract: "Manage product models.", subcommands: [Add.self, List.self, Support.self])

    struct Support: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Extend a model's support period (the last day of security updates).",
            discussion:
                "A support period can be extended, never shortened: an earlier date is refused and the attempt is audited."
        )
        @OptionGroup var options: DataOptions
        @Argument(help: "The product model id.") var model: String
        @Argument(help: "The new last day of security updates, YYYY-MM-DD.") var date: String
        func run() async throws {
            try await reportingErrors {
                let updated = try await UpdatesCommand.withUpdates(options) {
                    try await $0.extendSupport(model, to: date, actor: "cli")
                }
                print("\(updated.id) gets security updates until \(updated.supportEnds.plainEnglish).")
            }
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Define a product model from a JSON file (see docs in ARCHITECTURE.md).")
        @OptionGroup var options: DataOptions
        @Option(help: "The model's JSON file.") var file: String

        func run() async throws {
            try await options.deployment { _, storage in
                let bytes = try Data(contentsOf: URL(fileURLWithPath: file))
                guard bytes.count <= 64 * 1024 else {
                    throw HearthError(.payloadTooLarge, "a model file is at most 64 KiB")
                }
                let model = try await Fleet(store: storage.store).createModel(
                    try JSONValue.parse(Array(bytes)), actor: "cli")
                print(
                    "Created product model \(model.id) (\(model.name)); security updates until \(model.supportEnds.plainEnglish)."
                )
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List product models.")
        @OptionGroup var options: DataOptions
        func run() async throws {
            try await options.deployment { _, storage in
                let store = storage.store
                for model in try await store.models() {
                    print("\(model.id)\t\(model.name)\tsupport until \(model.supportEnds)")
                }
            }
        }
    }
}

struct Factory: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Factory provisioning of device identities.", subcommands: [Provision.self, SignCSR.self])

    /// What both factory commands take.
    struct FactoryOptions: ParsableArguments {
        @OptionGroup var data: DataOptions
        @Option(help: "Product model id.") var model: String
        @Option(help: "Output folder for the bundles (mode 0700; device keys 0600).") var out: String
        @Option(name: .customLong("public-url"), help: "The server's HTTPS URL, printed on labels.") var publicURL =
            "https://localhost:8443"

        /// Runs `body` with the provisioner (the model's newest firmware and the update trust
        /// anchor if released), the model and the output folder.
        func withProvisioner<T>(_ body: (Provisioner, ProductModelID, URL) async throws -> T) async throws -> T {
            try await data.deployment { folder, storage in
                let model = try ProductModelID(model)
                var provisioner = Provisioner(
                    store: storage.store, deviceCA: folder.deviceCA, rootCA: folder.rootCA, publicURL: publicURL)
                provisioner.firmware = try await UpdateRepository(
                    store: storage.store, kek: folder.kek, targetsDirectory: folder.targetsDirectory
                ).factoryFirmware(model)
                return try await body(provisioner, model, URL(fileURLWithPath: out))
            }
        }
    }

    struct Provision: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Provision N units: serial, key pair, device certificate, setup code and label for each.",
            discussion:
                "Writes one bundle folder per unit under --out and registers the units with the server's database."
        )
        @OptionGroup var options: FactoryOptions
        @Option(help: "How many units.") var count: Int

        func run() async throws {
            try await options.withProvisioner { provisioner, model, out in
                let start = Date()
                let progress = Progress(total: count, noun: "units")
                _ = try await provisioner.provision(modelID: model, count: count, outDirectory: out) {
                    progress.update($0)
                }
                progress.finish()
                let seconds = Date().timeIntervalSince(start)
                print(
                    "Provisioned \(count) units of \(model) in \(String(format: "%.1f", seconds)) s (\(String(format: "%.1f", Double(count) / seconds)) units/s). Bundles: \(out.path)"
                )
            }
        }
    }

    struct SignCSR: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "sign-csr",
            abstract: "Issue a device certificate for a CSR made on the device (its private key never leaves it)."
        )
        @OptionGroup var options: FactoryOptions
        @Option(help: "The device's PEM certificate signing request.") var csr: String

        func run() async throws {
            try await reportingErrors {
                let pem = try String(contentsOfFile: csr, encoding: .utf8)
                guard pem.utf8.count <= 16 * 1024 else {
                    throw HearthError(.payloadTooLarge, "a CSR is at most 16 KiB")
                }
                try await options.withProvisioner { provisioner, model, out in
                    let unit = try await provisioner.signCSR(pem: pem, modelID: model, outDirectory: out)
                    print("Issued a certificate for serial \(unit.serial); bundle in \(out.path)/\(unit.serial)")
                }
            }
        }
    }
}

struct DeviceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "device", abstract: "Manage provisioned devices.", subcommands: [Revoke.self, Show.self])

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a device's certificate (lost, stolen, cloned): the gateway refuses it from then on.",
            discussion:
                "A running server checks revocation at every connect; use the API's POST /api/v1/devices/{serial}/revoke to also end a live connection at once."
        )
        @OptionGroup var options: DataOptions
        @Argument(help: "The device serial.") var serial: String

        func run() async throws {
            try await options.deployment { _, storage in
                let serial = try DeviceSerial(serial)
                let changed = try await Fleet(store: storage.store).revoke(serial, actor: "cli")
                print(changed ? "Revoked \(serial)." : "\(serial) was already revoked.")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Show a device: model, owner, revocation, the invalid telemetry it sent (counted per kind), its firmware, update progress and security alerts."
        )
        @OptionGroup var options: DataOptions
        @Argument(help: "The device serial.") var serial: String

        func run() async throws {
            try await options.deployment { folder, storage in
                let store = storage.store
                let serial = try DeviceSerial(serial)
                guard let device = try await store.device(serial) else {
                    throw HearthError(.notFound, "no device \(serial)")
                }
                print(
                    "serial\t\(device.serial)\nmodel\t\(device.model)\nclaimed\t\(device.claimedAt.map { "\($0)" } ?? "no")\nrevoked\t\(device.revokedAt.map { "\($0)" } ?? "no")"
                )
                let telemetry = storage.telemetry
                if let latest = try await telemetry.latest(serial) {
                    print("latest\t\(JSONValue.object(latest.reading.values).text) at \(latest.reading.receivedAt)")
                }
                for refusal in try await telemetry.refusals(serial) {
                    print("refused\t\(refusal.kind.rawValue)\t\(refusal.count)\tlast \(refusal.lastAt)")
                }
                print(
                    "dropped\t\(try await telemetry.droppedTotal(serial)) readings dropped by the device while offline (its queue was full)"
                )
                let update = try await Updates(
                    repository: try UpdateRepository(
                        store: store, kek: folder.kek, targetsDirectory: folder.targetsDirectory)
                ).deviceView(device)
                print("firmware\t\(update.running ?? "not reported")")
                if let latest = update.latest {
                    print("update\t\(latest.phase)\t\(latest.target ?? "-")\t\(latest.reason ?? "")")
                }
                for alert in update.alerts { print("alert\t\(alert.phase)\t\(alert.at)\t\(alert.reason ?? "")") }
                print("support\t\(update.supportEnded ? "ended" : "until") \(update.supportEnds.plainEnglish)")
            }
        }
    }
}

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The hash-chained audit log.", subcommands: [Verify.self, Show.self])

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check that no audit record was edited, removed or reordered. Exits 1 if one was.")
        @OptionGroup var options: DataOptions
        func run() async throws {
            try await options.deployment { folder, storage in
                let store = storage.store
                let records = try await store.auditRecords()
                if let problem = KEKAuditSealer(kek: folder.kek).verify(records, head: try await store.auditHead()) {
                    print("Audit log TAMPERED: \(problem)")
                    throw ExitCode.failure
                }
                print("Audit log intact: \(records.count) records.")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the audit log.")
        @OptionGroup var options: DataOptions
        func run() async throws {
            try await options.deployment { _, storage in
                let store = storage.store
                let formatter = ISO8601DateFormatter()
                for r in try await store.auditRecords() {
                    print(
                        "\(r.sequence)\t\(formatter.string(from: r.date))\t\(r.kind)\t\(r.actor ?? "-")\t\(r.subject ?? "-")\t\(r.detail)"
                    )
                }
            }
        }
    }
}

/// Progress on a terminal: a redrawn line on a TTY, a line per 10% otherwise.
final class Progress: @unchecked Sendable {
    let total: Int
    let noun: String
    let start = Date()
    let tty = isatty(STDERR_FILENO) == 1
    var lastDecile = -1
    let lock = NSLock()

    init(total: Int, noun: String) {
        self.total = total
        self.noun = noun
    }

    func update(_ done: Int) {
        lock.lock()
        defer { lock.unlock() }
        let rate = Double(done) / max(0.001, Date().timeIntervalSince(start))
        let line = "\(done)/\(total) \(noun) (\(Int(rate))/s)"
        if tty {
            let width = 30
            let filled = total > 0 ? width * done / total : width
            FileHandle.standardError.write(
                Data(
                    "\r[\(String(repeating: "#", count: filled))\(String(repeating: " ", count: width - filled))] \(line)"
                        .utf8))
        } else if total > 0, done * 10 / total > lastDecile {
            lastDecile = done * 10 / total
            printErr(line)
        }
    }

    func finish() {
        if tty { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

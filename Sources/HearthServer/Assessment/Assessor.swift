import Crypto
import Foundation
import HearthCore
import HearthCrypto
import HearthStorage
import HearthUpdate
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import X509

/// Runs an assessment of a deployment: reads its models, statements and reports, runs the live
/// checks against the server that serves the data folder (``ServingRecord``), and makes the
/// ``Assessment``. Used by `hearth assess` (a separate process with the data folder) and by the
/// server's own `GET /api/v1/assessment`.
public struct Assessor: Sendable {
    let folder: DataFolder
    let store: any HearthStore & UpdateStore
    /// The policy every password goes through (a test may weaken it to show the check failing).
    var passwords: PasswordPolicy
    let time: any TimeSource

    public init(
        folder: DataFolder, store: any HearthStore & UpdateStore, time: any TimeSource = SystemTimeSource()
    ) {
        self.folder = folder
        self.store = store
        passwords = PasswordPolicy(blocklist: CommonPasswords.list, dictionary: CommonPasswords.dictionary)
        self.time = time
    }

    /// The assessment of the whole deployment, or of one model.
    public func assess(
        serving: ServingRecord?, storage: String, model: ProductModelID? = nil, statements: MakerStatements
    ) async throws -> Assessment {
        let now = time.now()
        var models = try await store.models()
        if let model {
            models = models.filter { $0.id == model }
            guard !models.isEmpty else { throw HearthError(.notFound, field: "model", "no product model '\(model)'") }
        }
        var facts: [ModelFacts] = []
        for m in models {
            let serials = try await store.devices(model: m.id)
            facts.append(
                ModelFacts(
                    model: m, devices: serials.count, firstSerial: serials.first?.rawValue,
                    lastSerial: serials.last?.rawValue))
        }
        let reports = try await store.reports()
        let policy = DisclosurePolicy()
        let overdue = reports.filter { !policy.overdue(state: $0.state, received: $0.receivedAt, now: now).isEmpty }
        var checks = [commonPasswords()]
        checks.append(await listenersTLS(serving, now: now))
        checks.append(declaredPorts(serving))
        checks.append(await securityTxt(serving, now: now))
        checks.append(await updateRepository(serving, now: now))
        checks.append(try await auditChain())
        checks.append(supportPeriods(models, now: now))
        checks.append(try await firmwareCurrent(models))
        return Assessment(
            AssessmentInput(
                at: now, serving: serving, storage: storage, models: facts, statements: statements,
                reports: reports.count, overdueReports: overdue.count, checks: checks))
    }

    // MARK: Live checks

    /// A check that needs the running server, when none is.
    static func noServer(_ id: LiveCheckID, did: String) -> LiveCheckResult {
        LiveCheckResult(
            id, did: did, saw: ["no server is running on this data folder"], passed: false,
            fix: ProvisionRule.noServer.fix)
    }

    /// Every listed common password is refused by the policy in force (each one tried).
    func commonPasswords() -> LiveCheckResult {
        let list = passwords.blocklist
        let accepted = list.filter { (try? passwords.check($0)) != nil }
        return LiveCheckResult(
            .commonPasswords,
            did:
                "Tried each of the \(list.count) listed common and breached passwords against the password policy every account goes through (sign-up, change, recovery, set-up).",
            saw: [
                list.count < 10_000
                    ? "the list holds only \(list.count) passwords: it is missing from the build"
                    : "\(list.count - accepted.count) of \(list.count) refused"
            ] + accepted.prefix(3).map { "accepted: \($0.prefix(2))… (\($0.count) characters)" },
            passed: list.count >= 10_000 && accepted.isEmpty,
            fix: "Rebuild Hearth with its Resources/common-passwords.txt; never weaken PasswordPolicy.")
    }

    /// The address to probe a listener at: its own, or loopback for a wildcard.
    static func probeHost(_ host: String) -> String {
        switch host {
        case "0.0.0.0", "": "127.0.0.1"
        case "::": "::1"
        default: host
        }
    }

    static func isLoopback(_ host: String) -> Bool { HostPort.isLoopback(host) }

    /// Connects to every TLS listener with policy and off-policy clients and reads how each
    /// handshake ends: the policy client completes (the version is read), each policy suite is
    /// tried alone over TLS 1.2, weak CBC suites and TLS 1.1 must be refused. A plaintext listener
    /// passes only for metrics on loopback; the anonymous development listener never does.
    func listenersTLS(_ serving: ServingRecord?, now: Date) async -> LiveCheckResult {
        let did =
            "Connected to each declared listener: a TLS 1.2–1.3 client with the policy's suites (must complete), each policy suite alone over TLS 1.2, the weak suites \(Self.weakSuites.joined(separator: ", ")) alone over TLS 1.2 and a TLS 1.0–1.1 client (all must be refused). A device certificate made for the probe alone (10 minutes, a serial no device has) answers the mutual-TLS listener."
        guard let serving else { return Self.noServer(.listenersTLS, did: did) }
        var saw: [String] = []
        var fixes: [String] = []
        for listener in serving.listeners {
            let name = "\(listener.name) \(listener.host):\(listener.port)"
            switch listener.security {
            case .plaintext where listener.name == "metrics" && Self.isLoopback(listener.host):
                saw.append("\(name): plain HTTP on loopback only (Prometheus scrapes from this host)")
            case .plaintext:
                saw.append("\(name): PLAINTEXT\(listener.name == "mqtt-development" ? ", anonymous MQTT" : "")")
                fixes.append(
                    listener.name == "mqtt-development"
                        ? "Restart `hearth serve` without --dev-listener (the development listener is for local development only)."
                        : "Serve \(listener.name) over TLS.")
            case .tls, .mutualTLS:
                let (line, ok) = await probe(listener, now: now)
                saw.append("\(name): \(line)")
                if !ok {
                    fixes.append(
                        "Serve \(listener.name) with Hearth's TLS policy only (TLSPolicy; restart without any --test-only-… flag)."
                    )
                }
            }
        }
        return LiveCheckResult(
            .listenersTLS, did: did, saw: saw, passed: fixes.isEmpty, fix: fixes.joined(separator: " "))
    }

    static let weakSuites = ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA"]

    func probe(_ listener: ServingRecord.Listener, now: Date) async -> (String, Bool) {
        do {
            var client = try probeClient(mutual: listener.security == .mutualTLS, now: now)
            let host = Self.probeHost(listener.host)
            let full = await TLSHandshake.attempt(host: host, port: listener.port, client)
            guard case .success(let version) = full else {
                return ("the policy client's handshake failed: \(Self.describe(full))", false)
            }
            var accepted: [String] = []
            for suite in TLSPolicy.cipherSuites.split(separator: ":").map(String.init) {
                client.cipherSuites = suite
                client.maximumTLSVersion = .tlsv12
                if case .success = await TLSHandshake.attempt(host: host, port: listener.port, client) {
                    accepted.append(suite)
                }
            }
            var weak: [String] = []
            for suite in Self.weakSuites {
                client.cipherSuites = suite
                client.maximumTLSVersion = .tlsv12
                if case .success = await TLSHandshake.attempt(host: host, port: listener.port, client) {
                    weak.append(suite)
                }
            }
            client.cipherSuites = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:" + TLSPolicy.cipherSuites
            client.minimumTLSVersion = .tlsv1
            client.maximumTLSVersion = .tlsv11
            let old = await TLSHandshake.attempt(host: host, port: listener.port, client)
            var line =
                "\(version.map(Self.name) ?? "TLS") negotiated; TLS 1.2 suites accepted: \(accepted.isEmpty ? "none" : accepted.joined(separator: ", "))"
            line += weak.isEmpty ? "; weak suites refused" : "; WEAK SUITES ACCEPTED: \(weak.joined(separator: ", "))"
            if case .success(let v) = old {
                line += "; \(v.map(Self.name) ?? "an old TLS version") ACCEPTED"
            } else {
                line += "; TLS 1.0–1.1 refused"
            }
            let oldRefused = if case .failure = old { true } else { false }
            return (line, weak.isEmpty && oldRefused && !accepted.isEmpty)
        } catch {
            return ("could not probe: \(error)", false)
        }
    }

    static func describe(_ result: Result<TLSVersion?, any Error>) -> String {
        if case .failure(let error) = result { "\(error)" } else { "completed" }
    }

    static func name(_ version: TLSVersion) -> String {
        switch version {
        case .tlsv13: "TLS 1.3"
        case .tlsv12: "TLS 1.2"
        case .tlsv11: "TLS 1.1"
        case .tlsv1: "TLS 1.0"
        }
    }

    /// A client holding the deployment's root CA, and for the device listener a certificate of
    /// the device CA made for this probe: ten minutes, a random serial no device has (the
    /// gateway would refuse its CONNECT; the probe never sends one).
    func probeClient(mutual: Bool, now: Date) throws -> TLSConfiguration {
        let root = try NIOSSLCertificate(bytes: Array(try folder.rootCA.certificate.pem().utf8), format: .pem)
        guard mutual else { return TLSPolicy.client(trustRoots: [root]) }
        let key = P256.Signing.PrivateKey()
        var rng = SystemRandomNumberGenerator()
        let certificate = try folder.deviceCA.issueProbeCertificate(
            publicKey: Certificate.PublicKey(key.publicKey), serial: DeviceSerial.random(using: &rng), now: now)
        return TLSPolicy.client(
            trustRoots: [root],
            certificateChain: [try NIOSSLCertificate(bytes: Array(try certificate.pem().utf8), format: .pem)],
            privateKey: try NIOSSLPrivateKey(bytes: Array(key.pemRepresentation.utf8), format: .pem))
    }

    /// The TCP ports the server's process listens on (`/proc/PID/fd` and `/proc/net/tcp{,6}`)
    /// against the ports it declared.
    func declaredPorts(_ serving: ServingRecord?) -> LiveCheckResult {
        let did =
            "Listed the TCP sockets in LISTEN state that the server's process holds (/proc/PID/fd against /proc/net/tcp and tcp6) and compared their ports with the declared listeners."
        guard let serving else { return Self.noServer(.declaredPorts, did: did) }
        guard let listening = Self.listeningPorts(pid: serving.pid) else {
            return LiveCheckResult(
                .declaredPorts, did: did, saw: ["cannot read /proc/\(serving.pid)/fd"], passed: false,
                fix: "Run `hearth assess` as the user the server runs as.")
        }
        let declared = Set(serving.listeners.map(\.port))
        let extra = listening.subtracting(declared).sorted()
        let missing = declared.subtracting(listening).sorted()
        var saw = ["declared: \(declared.sorted().map(String.init).joined(separator: ", "))"]
        saw.append("listening: \(listening.sorted().map(String.init).joined(separator: ", "))")
        if !extra.isEmpty { saw.append("UNDECLARED: \(extra.map(String.init).joined(separator: ", "))") }
        if !missing.isEmpty {
            saw.append("declared but not listening: \(missing.map(String.init).joined(separator: ", "))")
        }
        return LiveCheckResult(
            .declaredPorts, did: did, saw: saw, passed: extra.isEmpty && missing.isEmpty,
            fix:
                "Close what listens on port \(extra.map(String.init).joined(separator: ", ")) in process \(serving.pid) (restart without any --test-only-… flag), or declare it."
        )
    }

    /// The TCP ports `pid` has sockets listening on, or nil when its descriptors cannot be read.
    static func listeningPorts(pid: Int32) -> Set<Int>? {
        guard let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { return nil }
        var inodes = Set<Substring>()
        for fd in fds {
            if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)"),
                target.hasPrefix("socket:[")
            {
                inodes.insert(Substring(target.dropFirst(8).dropLast()))
            }
        }
        var ports = Set<Int>()
        for table in ["/proc/\(pid)/net/tcp", "/proc/\(pid)/net/tcp6"] {
            guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let f = line.split(separator: " ", omittingEmptySubsequences: true)
                guard f.count > 9, f[3] == "0A", inodes.contains(f[9]),
                    let port = f[1].split(separator: ":").last.flatMap({ Int($0, radix: 16) })
                else { continue }
                ports.insert(port)
            }
        }
        return ports
    }

    /// Fetches a path from the deployment's HTTPS listener, trusting its root CA only.
    func fetch(_ serving: ServingRecord, _ path: String) async throws -> HTTP1Client.Reply {
        guard let https = serving.listener("https") else {
            throw HearthError(.unavailable, "the server declares no HTTPS listener")
        }
        let root = try NIOSSLCertificate(bytes: Array(try folder.rootCA.certificate.pem().utf8), format: .pem)
        let client = try HTTP1Client(
            host: Self.probeHost(https.host), port: https.port, tls: TLSPolicy.client(trustRoots: [root]),
            serverHostname: nil)
        return try await client.send(
            .GET, path, hostHeader: serving.hostnames.first, timeout: .seconds(10), maximumReply: 1 << 20)
    }

    /// `/.well-known/security.txt` as served: RFC 9116's required Contact and Expires, the expiry in
    /// the future and less than a year ahead.
    func securityTxt(_ serving: ServingRecord?, now: Date) async -> LiveCheckResult {
        let did = "Fetched /.well-known/security.txt from the HTTPS listener and checked it against RFC 9116."
        let fix =
            "Serve security.txt with a future Expires less than a year ahead (Hearth sets it 180 days ahead of the server's clock: check the clock; restart without any --test-only-… flag) and at least one Contact (--security-contact)."
        guard let serving else { return Self.noServer(.securityTxt, did: did) }
        do {
            let reply = try await fetch(serving, "/.well-known/security.txt")
            guard reply.status == 200 else {
                return LiveCheckResult(.securityTxt, did: did, saw: ["HTTP \(reply.status)"], passed: false, fix: fix)
            }
            let (saw, ok) = Self.checkSecurityTxt(String(decoding: reply.body, as: UTF8.self), now: now)
            return LiveCheckResult(.securityTxt, did: did, saw: saw, passed: ok, fix: fix)
        } catch {
            return LiveCheckResult(
                .securityTxt, did: did, saw: ["could not fetch it: \(error)"], passed: false, fix: fix)
        }
    }

    /// RFC 9116 § 2.5: Contact (one or more) and Expires (exactly one, in the future; § 2.5.5
    /// advises less than a year ahead).
    static func checkSecurityTxt(_ text: String, now: Date) -> (saw: [String], ok: Bool) {
        var fields: [String: [String]] = [:]
        for line in text.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon].lowercased(), default: []].append(
                line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        let contacts = fields["contact"] ?? []
        var saw = ["Contact: \(contacts.count)"]
        var ok = !contacts.isEmpty
        if let expires = fields["expires"], expires.count == 1,
            let date = try? Date(expires[0], strategy: Date.ISO8601FormatStyle())
        {
            let days = Int(date.timeIntervalSince(now) / 86_400)
            if date <= now {
                saw.append("EXPIRED at \(expires[0])")
                ok = false
            } else if date.timeIntervalSince(now) > 366 * 86_400 {
                saw.append("Expires \(expires[0]) is more than a year ahead")
                ok = false
            } else {
                saw.append("Expires \(expires[0]) (in \(days) days)")
            }
        } else {
            saw.append("no single valid Expires field")
            ok = false
        }
        return (saw, ok)
    }

    /// The repository's root and timestamp as served: the root signed by its own threshold, the
    /// timestamp by the root's timestamp keys, neither expired, the root at least 30 days from its
    /// expiry and the timestamp at least an hour from its.
    func updateRepository(_ serving: ServingRecord?, now: Date) async -> LiveCheckResult {
        let did =
            "Fetched /tuf/metadata/root.json and timestamp.json from the HTTPS listener and verified them as a TUF client does (signature thresholds, expiry), and how far each is from expiring."
        guard let serving else { return Self.noServer(.updateRepository, did: did) }
        do {
            let rootReply = try await fetch(serving, "/tuf/metadata/root.json")
            guard rootReply.status == 200 else {
                return LiveCheckResult(
                    .updateRepository, did: did, saw: ["no root.json (HTTP \(rootReply.status))"], passed: false,
                    fix: "Publish the model's first release with `hearth release` (it signs the root).")
            }
            let root = try UpdateRepository.parse(rootReply.body, "root.json")
            var trusted = try TrustedMetadata(root: root)
            let rootLeft = Self.remaining(root.signed, now: now)
            var saw = [
                "root version \(UpdateRepository.version(root)), signatures verify, expires in \(Self.days(rootLeft))"
            ]
            var ok = rootLeft > 30 * 86_400
            if !ok { saw.append("the root expires within 30 days") }
            let timestampReply = try await fetch(serving, "/tuf/metadata/timestamp.json")
            let timestamp = try UpdateRepository.parse(timestampReply.body, "timestamp.json")
            try trusted.updateTimestamp(timestamp, now: now)
            let left = Self.remaining(timestamp.signed, now: now)
            saw.append(
                "timestamp version \(UpdateRepository.version(timestamp)), signatures verify, expires in \(Self.days(left))"
            )
            if left < 3600 {
                saw.append("the timestamp expires within the hour: the server is not renewing it")
                ok = false
            }
            return LiveCheckResult(
                .updateRepository, did: did, saw: saw, passed: ok,
                fix:
                    "Sign a new root with `hearth release` before the old one expires; keep the server running so it renews the timestamp."
            )
        } catch {
            return LiveCheckResult(
                .updateRepository, did: did, saw: ["refused: \(error)"], passed: false,
                fix:
                    "Re-publish the repository's metadata with `hearth release`; keep the server running so it renews the online roles."
            )
        }
    }

    static func remaining(_ signed: JSONValue, now: Date) -> TimeInterval {
        guard case .object(let o) = signed, case .string(let text)? = o["expires"],
            let expires = try? Date(text, strategy: Date.ISO8601FormatStyle())
        else { return 0 }
        return expires.timeIntervalSince(now)
    }

    static func days(_ seconds: TimeInterval) -> String {
        seconds >= 2 * 86_400 ? "\(Int(seconds / 86_400)) days" : "\(Int(seconds / 3600)) hours"
    }

    /// The hash chain of the audit log, with its MACs and head.
    func auditChain() async throws -> LiveCheckResult {
        let records = try await store.auditRecords()
        let problem = KEKAuditSealer(kek: folder.kek).verify(records, head: try await store.auditHead())
        return LiveCheckResult(
            .auditChain,
            did: "Recomputed the hash chain and MAC of every audit record and compared the last with the stored head.",
            saw: [problem.map { "TAMPERED: \($0)" } ?? "\(records.count) records, intact"], passed: problem == nil,
            fix:
                "Find what changed the database (`hearth audit show --data DIR`), restore it from a backup, and report the incident."
        )
    }

    /// Every assessed model's support end is today or later.
    func supportPeriods(_ models: [ProductModel], now: Date) -> LiveCheckResult {
        let ended = models.filter { Updates.ended($0.supportEnds, now: now) }
        return LiveCheckResult(
            .supportPeriods,
            did: "Compared each model's published support end with today's date.",
            saw: models.map {
                "\($0.id): until \($0.supportEnds)\(ended.contains($0) ? " — ENDED" : "")"
            },
            passed: ended.isEmpty,
            fix: ended.map {
                "Extend \($0.id)'s support (`hearth model support \($0.id) --until YYYY-MM-DD --data DIR`) or stop selling it and tell its owners."
            }.joined(separator: " "))
    }

    /// For each model: the versions its devices last reported, against its security releases
    /// (severity critical, high or medium): a device below the newest such release must have a
    /// rollout (active or completed) offering it or a later version.
    func firmwareCurrent(_ models: [ProductModel]) async throws -> LiveCheckResult {
        var saw: [String] = []
        var fixes: [String] = []
        for model in models {
            let releases = try await store.releases(model: model.id)
            let security = releases.filter {
                ["critical", "high", "medium"].contains(Self.severity($0))
            }.compactMap { r in (try? FirmwareVersion(r.version)).map { (r, $0) } }
            guard let newest = security.max(by: { $0.1 < $1.1 }) else {
                saw.append("\(model.id): no security release")
                continue
            }
            let offered = try await store.rollouts(model: model.id).filter {
                $0.state == RolloutState.active.rawValue || $0.state == RolloutState.completed.rawValue
            }.compactMap { rollout in
                releases.first { $0.target == rollout.target }.flatMap { try? FirmwareVersion($0.version) }
            }.max()
            let running = try await store.runningVersions(model: model.id)
            let behind = running.filter { (try? FirmwareVersion($0.key)).map { $0 < newest.1 } ?? true }
            let count = behind.values.reduce(0, +)
            if count == 0 {
                saw.append("\(model.id): no device below \(newest.1)")
            } else if let offered, offered >= newest.1 {
                saw.append("\(model.id): \(count) devices below \(newest.1), offered \(offered) by a rollout")
            } else {
                saw.append("\(model.id): \(count) DEVICES BELOW \(newest.1) WITHOUT AN OFFERED UPDATE")
                fixes.append(
                    "Start a rollout of \(newest.0.target): `hearth rollout start \(newest.0.target) --data DIR`.")
            }
        }
        return LiveCheckResult(
            .firmwareCurrent,
            did:
                "Compared the firmware version each device last reported with the model's newest release that fixes a security problem (severity critical, high or medium), and looked for a rollout offering it.",
            saw: saw, passed: fixes.isEmpty, fix: fixes.joined(separator: " "))
    }

    static func severity(_ release: ReleaseRecord) -> String {
        guard let custom = try? JSONValue.parse(Array(release.custom.utf8)), case .object(let o) = custom,
            case .object(let notes)? = o["release_notes"], case .string(let severity)? = notes["severity"]
        else { return "" }
        return severity
    }
}

import Foundation
import HTTPTypes
import HearthCore
import HearthStorage
import Hummingbird
import NIOCore
import Synchronization

/// The owner's data export (guideline 8; UK GDPR art. 15 and 20): everything Hearth holds about
/// them and their devices, as one ZIP of JSON files and a README, streamed (a device with a million
/// readings is never held in memory). One export an account at a time.
public struct DataExport {
    let hearth: Hearth
    let identity: Identity

    public init(hearth: Hearth, identity: Identity) {
        self.hearth = hearth
        self.identity = identity
    }

    static let running = Mutex<Set<AccountID>>([])

    /// One stretch of time the owner held a device: now (`releasedAt` nil) or before.
    struct Hold {
        let serial: DeviceSerial
        let model: ProductModelID
        let claimedAt: Date
        let releasedAt: Date?
        let reason: ReleaseReason?
        let historyKept: Bool
        let name: String?

        func covers(_ date: Date) -> Bool { date >= claimedAt && date <= (releasedAt ?? .distantFuture) }
        var end: Date { releasedAt?.addingTimeInterval(0.001) ?? .distantFuture }
    }

    static let readme = """
        Your data from Hearth
        =====================

        This archive holds everything this Hearth server keeps about you and your devices, as JSON
        files (UTF-8; times are ISO 8601 in UTC). It was made when you asked for it.

        account.json     your account: e-mail address, role, when it was made, whether a recovery
                         code is set, your sessions (never a password, code or token: only their
                         hashes are stored, and those are not included)
        activity.json    what you did: sign-ins, claims, names, choices, commands (the audit log's
                         entries with you as the actor)
        devices.json     the devices you have now, and those you had before (when, and whether you
                         kept their readings)
        consents.json    every privacy choice you made, per device, with the notice version
        commands.json    the commands you sent, per device
        updates.json     each device's software update reports while it was yours
        notices/         the privacy notice of each product you have or had
        readings/        one file per device: every reading it sent while it was yours and that is
                         still kept (readings are deleted when their declared time is up, or when
                         you deleted a device's history)

        Another owner's time with a device is never included, nor are yours in theirs.
        """

    func holds() async throws -> [Hold] {
        let account = identity.account.id
        let now = try await hearth.store.devices(ownedBy: account).map {
            Hold(
                serial: $0.serial, model: $0.model, claimedAt: $0.claimedAt ?? $0.provisionedAt, releasedAt: nil,
                reason: nil, historyKept: true, name: hearth.name(of: $0))
        }
        var before: [Hold] = []
        for o in try await hearth.store.ownerships(of: account) {
            guard let device = try await hearth.store.device(o.serial) else { continue }
            before.append(
                Hold(
                    serial: o.serial, model: device.model, claimedAt: o.claimedAt, releasedAt: o.releasedAt,
                    reason: o.reason, historyKept: o.historyKept, name: nil))
        }
        return now + before
    }

    /// The archive, as a streamed response body.
    public func response() async throws -> Response {
        let account = identity.account.id
        let admitted = Self.running.withLock { $0.insert(account).inserted }
        guard admitted else {
            throw HearthError(
                .throttled, "an export of your data is already running; try again when it ends", retryAfter: 30)
        }
        let holds: [Hold]
        let files: [(String, JSONValue)]
        do {
            holds = try await self.holds()
            files = try await smallFiles(holds)
            try await hearth.store.appendAudit(
                AuditEntry(
                    .dataExported, actor: account.description, subject: account.description,
                    detail: "\(holds.count) devices", at: hearth.time.now()))
        } catch {
            Self.running.withLock { _ = $0.remove(account) }
            throw error
        }
        let now = hearth.time.now()
        let parts = Calendar(identifier: .gregorian).dateComponents(in: .gmt, from: now)
        let telemetry = hearth.telemetry
        let body = ResponseBody { writer in
            defer { Self.running.withLock { _ = $0.remove(account) } }
            var zip = ZipWriter(
                year: parts.year ?? 1980, month: parts.month ?? 1, day: parts.day ?? 1, hour: parts.hour ?? 0,
                minute: parts.minute ?? 0, second: parts.second ?? 0)
            try await writer.write(ByteBuffer(bytes: try zip.entry("README.txt", Array(Self.readme.utf8))))
            for (name, json) in files {
                try await writer.write(ByteBuffer(bytes: try zip.entry(name, Array((json.text + "\n").utf8))))
            }
            if let telemetry {
                for hold in holds where hold.historyKept {
                    try await writer.write(ByteBuffer(bytes: try zip.begin("readings/\(hold.serial.rawValue).json")))
                    var after: Int64?
                    var first = true
                    var chunk: [UInt8] = Array("[".utf8)
                    while true {
                        let page = try await telemetry.readings(
                            hold.serial, from: hold.claimedAt, to: hold.end, after: after, limit: 1000)
                        for record in page {
                            if !first { chunk.append(UInt8(ascii: ",")) }
                            first = false
                            chunk.append(UInt8(ascii: "\n"))
                            chunk += Array(API.readingJSON(record).text.utf8)
                        }
                        if page.count < 1000 { chunk += Array("\n]\n".utf8) }
                        try zip.add(chunk)
                        try await writer.write(ByteBuffer(bytes: chunk))
                        chunk = []
                        guard page.count == 1000, let last = page.last else { break }
                        after = last.position
                    }
                    try await writer.write(ByteBuffer(bytes: try zip.end()))
                }
            }
            try await writer.write(ByteBuffer(bytes: try zip.finish()))
            try await writer.finish(nil)
        }
        let day = now.formatted(Date.ISO8601FormatStyle().year().month().day())
        return Response(
            status: .ok,
            headers: [
                .contentType: "application/zip", .cacheControl: "no-store",
                .contentDisposition: #"attachment; filename="hearth-data-\#(day).zip""#,
            ], body: body)
    }

    /// Streams the archive into nothing, counting its bytes (the export benchmark).
    public func countedBytes() async throws -> Int {
        let total = Counter.Total()
        try await response().body.write(Counter(total: total))
        return total.bytes
    }

    struct Counter: ResponseBodyWriter {
        final class Total: @unchecked Sendable { var bytes = 0 }
        let total: Total
        mutating func write(_ buffer: ByteBuffer) async throws { total.bytes += buffer.readableBytes }
        consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
    }

    func smallFiles(_ holds: [Hold]) async throws -> [(String, JSONValue)] {
        let store = hearth.store
        let account = identity.account
        let t = API.timestamp
        func time(_ d: Date?) -> JSONValue { d.map { .string($0.formatted(t)) } ?? .null }
        let sessions = try await store.sessions(of: account.id).map {
            ["createdAt": time($0.createdAt), "expiresAt": time($0.expiresAt)] as JSONValue
        }
        let accountJSON: JSONValue = [
            "id": .string(account.id.description), "email": .string(identity.email.rawValue),
            "role": .string(account.role.rawValue), "createdAt": time(account.createdAt),
            "recoveryCodeSet": .bool(account.recoveryHash != nil), "sessions": .array(sessions),
        ]
        let activity = try await store.auditRecords(actor: account.id.description, limit: 100_000).map {
            [
                "at": time(Date(timeIntervalSince1970: Double($0.atMillis) / 1000)), "kind": .string($0.kind),
                "subject": $0.subject.map(JSONValue.string) ?? .null, "detail": .string($0.detail),
            ] as JSONValue
        }
        var devices: [JSONValue] = []
        var consents: [JSONValue] = []
        var commands: [JSONValue] = []
        var updates: [JSONValue] = []
        var models: Set<ProductModelID> = []
        for hold in holds {
            models.insert(hold.model)
            devices.append([
                "serial": .string(hold.serial.rawValue), "model": .string(hold.model.rawValue),
                "name": hold.name.map(JSONValue.string) ?? .null, "yoursSince": time(hold.claimedAt),
                "yoursUntil": time(hold.releasedAt), "howItEnded": hold.reason.map { .string($0.rawValue) } ?? .null,
                "readings": .string(
                    hold.historyKept ? "readings/\(hold.serial.rawValue).json" : "deleted at your request"),
            ])
            let choices = try await store.consents(hold.serial, owner: account.id).filter { hold.covers($0.at) }
            consents.append([
                "serial": .string(hold.serial.rawValue),
                "choices": .array(
                    choices.map {
                        [
                            "purpose": .string($0.purpose), "granted": .bool($0.granted),
                            "noticeVersion": .string($0.noticeVersion), "at": time($0.at),
                        ]
                    }),
            ])
            let sent = try await store.auditRecords(subject: hold.serial.rawValue, limit: 100_000).filter {
                $0.kind == AuditKind.commandSent.rawValue && $0.actor == account.id.description
                    && hold.covers(Date(timeIntervalSince1970: Double($0.atMillis) / 1000))
            }
            commands.append([
                "serial": .string(hold.serial.rawValue),
                "commands": .array(
                    sent.reversed().map {
                        [
                            "at": time(Date(timeIntervalSince1970: Double($0.atMillis) / 1000)),
                            "command": .string($0.detail),
                        ]
                    }),
            ])
            let reports = try await hearth.updates?.store.updateEvents(hold.serial, limit: 100_000) ?? []
            updates.append([
                "serial": .string(hold.serial.rawValue),
                "reports": .array(
                    reports.filter { hold.covers($0.at) }.reversed().map {
                        [
                            "at": time($0.at), "phase": .string($0.phase), "version": .string($0.version),
                            "target": $0.target.map(JSONValue.string) ?? .null,
                            "reason": $0.reason.map(JSONValue.string) ?? .null,
                        ]
                    }),
            ])
        }
        var files: [(String, JSONValue)] = [
            ("account.json", accountJSON), ("activity.json", .array(activity)), ("devices.json", .array(devices)),
            ("consents.json", .array(consents)), ("commands.json", .array(commands)),
            ("updates.json", .array(updates)),
        ]
        for id in models.sorted(by: { $0.rawValue < $1.rawValue }) {
            if let model = try await store.model(id) {
                files.append(("notices/\(id.rawValue).json", API.noticeJSON(PrivacyNotice(model))))
            }
        }
        return files
    }
}

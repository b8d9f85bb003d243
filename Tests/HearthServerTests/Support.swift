import Foundation
import GRDB
import HTTPTypes
import HearthCore
import HearthCrypto
import HearthSQLite
import HearthStorage
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore

@testable import HearthServer

/// A complete in-process deployment on a temporary data folder, with a hand-moved clock and a cheap
/// scrypt cost (the cost is stored per hash, so nothing else differs from production).
struct TestDeployment {
    let dir: URL
    let folder: DataFolder
    let store: SQLiteStore
    let hearth: Hearth
    let time: ManualTimeSource
    let updates: Updates

    init(_ configure: (inout HearthSettings) -> Void = { _ in }) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("hearth-srv-\(UUID().uuidString)")
        folder = try DataFolder.open(path: dir.appendingPathComponent("data").path)
        store = try SQLiteStore(path: folder.databasePath, sealer: KEKAuditSealer(kek: folder.kek))
        time = ManualTimeSource(Date())
        var settings = HearthSettings()
        settings.hashCost = .testing
        configure(&settings)
        updates = Updates(
            repository: try UpdateRepository(
                store: store, kek: folder.kek, targetsDirectory: folder.targetsDirectory, time: time), time: time)
        // As the server does: readings sealed under their owner's data key.
        let readingKeys = DataKeys(store: store, kek: folder.kek, time: time)
        hearth = try Hearth(
            store: store, kek: folder.kek, settings: settings, time: time,
            telemetry: try SQLiteTelemetryStore(path: folder.telemetryPath, keys: readingKeys),
            readingKeys: readingKeys, updates: updates)
        hearth.attach(assessments: try AssessmentService(folder: folder, store: store, storage: "SQLite"))
    }

    var application: some ApplicationProtocol {
        Application(router: HTTPSServer.router(hearth: hearth, logger: Logger(label: "test")))
    }

    func provisioner() -> Provisioner {
        Provisioner(
            store: store, deviceCA: folder.deviceCA, rootCA: folder.rootCA, hashCost: .testing,
            publicURL: "https://localhost:8443", time: time)
    }

    /// Adds the demo models and provisions `count` thermostats.
    func provisionThermostats(_ count: Int) async throws -> [ProvisionedUnit] {
        for model in ProductModel.demoModels() where try await store.model(model.id) == nil {
            try await store.createModel(model, at: time.now(), audit: AuditEntry(.modelCreated, at: time.now()))
        }
        return try await provisioner().provision(
            modelID: ProductModel.demoModels()[0].id, count: count, outDirectory: nil)
    }

    /// Every row of every table, as text: equal before and after means nothing changed.
    func snapshot() throws -> String {
        let db = try DatabaseQueue(path: folder.databasePath)
        return try db.read { db in
            try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").map {
                table in
                let rows = try Row.fetchAll(db, sql: "SELECT * FROM \"\(table)\" ORDER BY rowid")
                return "\(table): \(rows.map(\.description).joined(separator: "\n"))"
            }.joined(separator: "\n")
        }
    }

    func cleanUp() { try? FileManager.default.removeItem(at: dir) }
}

struct Reply {
    let status: Int
    let headers: HTTPFields
    let text: String
    /// The body as sent (`text` is it decoded as UTF-8, lossily for binary bodies).
    var bytes: [UInt8] = []
    var json: JSONValue? { try? JSONValue.parse(Array(text.utf8)) }
    var error: String? { if case .object(let o) = json, case .string(let s) = o["error"] { s } else { nil } }
    var field: String? { if case .object(let o) = json, case .string(let s) = o["field"] { s } else { nil } }
    func string(_ key: String) -> String? {
        if case .object(let o) = json, case .string(let s) = o[key] { s } else { nil }
    }
}

extension TestClientProtocol {
    func call(
        _ method: HTTPRequest.Method, _ path: String, body: String? = nil, bytes: [UInt8]? = nil, token: String? = nil,
        contentType: String = "application/json", headers extra: HTTPFields = [:]
    ) async throws -> Reply {
        var headers = extra
        if body != nil || bytes != nil { headers[.contentType] = contentType }
        if let token { headers[.authorization] = "Bearer \(token)" }
        let buffer = bytes.map { ByteBuffer(bytes: $0) } ?? body.map { ByteBuffer(string: $0) }
        let r = try await execute(uri: path, method: method, headers: headers, body: buffer)
        return Reply(
            status: Int(r.status.code), headers: r.headers, text: String(buffer: r.body),
            bytes: Array(r.body.readableBytesView))
    }

    /// Opens a public form page as a browser would: the form cookie and the hidden token to send
    /// back with the post.
    func formPass(_ path: String) async throws -> (cookie: String, csrf: String) {
        let page = try await call(.get, path)
        let cookie = String((page.headers[.setCookie] ?? "").split(separator: ";")[0])
        let csrf =
            page.text.components(separatedBy: "name=\"csrf\" value=\"").dropFirst().first.map {
                String($0.prefix { $0 != "\"" })
            } ?? ""
        return (cookie, csrf)
    }

    /// Posts a public form with its pass (cookie and token), as a browser would.
    func postForm(_ path: String, _ body: String, pass: (cookie: String, csrf: String), headers extra: HTTPFields = [:])
        async throws -> Reply
    {
        var headers = extra
        headers[.cookie] = pass.cookie
        return try await call(
            .post, path, body: body + "&csrf=\(pass.csrf)", contentType: "application/x-www-form-urlencoded",
            headers: headers)
    }

    /// Signs up an owner and signs in; returns the bearer token.
    func owner(_ email: String, password: String = "a long and unusual passphrase") async throws -> String {
        let credentials = #"{"email":"\#(email)","password":"\#(password)"}"#
        let created = try await call(.post, "/api/v1/accounts", body: credentials)
        precondition(created.status == 201, "sign-up failed: \(created.text)")
        return try await call(.post, "/api/v1/sessions", body: credentials).string("token")!
    }
}

let operatorPassword = "operator passphrase that is long"

/// Creates the operator through the set-up link and returns its bearer token.
func makeOperator(_ deployment: TestDeployment, _ client: some TestClientProtocol) async throws -> String {
    let link = try await deployment.hearth.issueSetupLinkIfNeeded(baseURL: "https://x")!
    let token = String(link.split(separator: "/").last!)
    let r = try await client.call(
        .post, "/api/v1/setup",
        body: #"{"token":"\#(token)","email":"op@example.com","password":"\#(operatorPassword)"}"#)
    precondition(r.status == 201, r.text)
    return try await client.call(
        .post, "/api/v1/sessions", body: #"{"email":"op@example.com","password":"\#(operatorPassword)"}"#
    ).string("token")!
}

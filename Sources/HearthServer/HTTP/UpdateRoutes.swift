import Foundation
import HTTPTypes
import HearthCore
import HearthStorage
import HearthUpdate
import Hummingbird
import NIOCore

extension API {
    static let rolloutBody = ObjectSchema([
        FieldSchema("target", .string(maxLength: 128), "a released image, MODEL-VERSION.img"),
        FieldSchema(
            "stages", .array(of: .integer(min: 1, max: 100), maxItems: 10), required: false,
            "percent of devices per stage, rising to 100; default 1, 10, 50, 100"),
        FieldSchema(
            "failureThreshold", .number(min: 0.001, max: 0.999), required: false,
            "share of failed attempts that pauses the rollout; default 0.2"),
        FieldSchema(
            "minimumSample", .integer(min: 1, max: 10_000), required: false,
            "attempts before the threshold applies; default 3"),
    ])
    static let controlBody = ObjectSchema([FieldSchema("action", .oneOf(Updates.Control.allCases.map(\.rawValue)))])
    static let supportBody = ObjectSchema([
        FieldSchema("supportEnds", .date, "the new last day of security updates; only later than the current one")
    ])

    func updateEndpoints() -> [(Endpoint, EndpointHandler)] {
        let hearth = self.hearth
        let bad: [HTTPResponse.Status] = [.badRequest, .contentTooLarge, .unsupportedMediaType, .unprocessableContent]
        @Sendable func updates() throws -> Updates {
            guard let updates = hearth.updates else {
                throw HearthError(.unavailable, "this server runs no update repository")
            }
            return updates
        }
        @Sendable func actor(_ context: HearthRequestContext) throws -> String {
            try context.requireIdentity().account.id.description
        }
        return [
            (
                Endpoint(
                    method: .get, path: "/api/v1/updates/online-keys",
                    summary:
                        "The update repository's online snapshot and timestamp public keys, for the maker's root.json (operators)",
                    access: .operator, body: nil, success: .ok, errors: [.unauthorized, .forbidden]),
                { _, _, _ in JSON.response(try await updates().repository.onlinePublicKeys()) }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/models/{id}/releases",
                    summary: "A model's firmware releases with their plain-language release notes", access: .public,
                    body: nil, success: .ok, errors: [.notFound]),
                { _, context, _ in
                    guard let id = try? ProductModelID(context.parameters.get("id") ?? ""),
                        try await hearth.store.model(id) != nil
                    else { throw HearthError(.notFound, field: "id", "no product model with this id") }
                    return JSON.response([
                        "releases": .array(try await updates().store.releases(model: id).map(Self.releaseJSON))
                    ])
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/models/{id}/support",
                    summary: "Extend a model's support period (operators); a shortening is refused and audited",
                    access: .operator, body: Self.supportBody, success: .ok,
                    errors: bad + [.unauthorized, .forbidden, .notFound, .conflict]),
                { _, context, body in
                    let model = try await updates().extendSupport(
                        context.parameters.get("id") ?? "", to: body.string("supportEnds")!, actor: try actor(context))
                    return JSON.response(Self.modelJSON(model))
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/rollouts",
                    summary: "Start a staged rollout of a release to its model's devices (operators)",
                    access: .operator, body: Self.rolloutBody, success: .created,
                    errors: bad + [.unauthorized, .forbidden, .notFound, .conflict]),
                { _, context, body in
                    let standard = RolloutPlan.standard
                    let plan = try RolloutPlan(
                        stages: body.array("stages").isEmpty
                            ? standard.stages
                            : body.array("stages").compactMap { if case .number(let n) = $0 { Int(n) } else { nil } },
                        failureThreshold: body.number("failureThreshold") ?? standard.failureThreshold,
                        minimumSample: body.number("minimumSample").map { Int($0) } ?? standard.minimumSample
                    )
                    return JSON.response(
                        Self.rolloutJSON(
                            try await updates().startRollout(
                                target: body.string("target")!, plan: plan, actor: try actor(context))),
                        status: .created)
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/rollouts",
                    summary: "Rollouts, newest first, with each stage's tally (operators)", access: .operator,
                    body: nil, success: .ok, errors: [.unauthorized, .forbidden]),
                { _, _, _ in JSON.response(["rollouts": .array(try await updates().rollouts().map(Self.rolloutJSON))]) }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/rollouts/{id}", summary: "One rollout (operators)", access: .operator,
                    body: nil, success: .ok, errors: [.unauthorized, .forbidden, .notFound]),
                { _, context, _ in
                    JSON.response(Self.rolloutJSON(try await updates().view(context.parameters.get("id") ?? "")))
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/rollouts/{id}/control",
                    summary: "Pause, resume, abort or advance a rollout (operators)", access: .operator,
                    body: Self.controlBody, success: .ok,
                    errors: bad + [.unauthorized, .forbidden, .notFound, .conflict]),
                { _, context, body in
                    let action = Updates.Control(rawValue: body.string("action")!)!
                    return JSON.response(
                        Self.rolloutJSON(
                            try await updates().control(
                                context.parameters.get("id") ?? "", action, actor: try actor(context))))
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/devices/{serial}/update",
                    summary:
                        "The owner's device: its firmware, update progress with the release notes, security alerts and support period",
                    access: .signedIn, body: nil, success: .ok, errors: [.unauthorized, .notFound]),
                { _, context, _ in
                    let device = try await hearth.ownedDevice(
                        context.parameters.get("serial") ?? "", by: try context.requireIdentity())
                    return JSON.response(Self.deviceUpdateJSON(try await updates().deviceView(device)))
                }
            ),
        ]
    }

    static func releaseJSON(_ r: ReleaseRecord) -> JSONValue {
        [
            "target": .string(r.target), "model": .string(r.model.rawValue), "version": .string(r.version),
            "length": .number(Double(r.length)),
            "sha256": .string(r.sha256), "publishedAt": .string(r.publishedAt.formatted(timestamp)),
            "notes": (try? JSONValue.parse(Array(r.custom.utf8))) ?? .null,
        ]
    }

    static func rolloutJSON(_ v: Updates.RolloutView) -> JSONValue {
        let r = v.rollout
        return [
            "id": .string(r.id), "target": .string(r.target), "model": .string(r.model.rawValue),
            "state": .string(r.state),
            "stage": .number(Double(r.stage + 1)), "stages": .array(r.stages.map { .number(Double($0)) }),
            "percent": .number(Double(r.stages[min(r.stage, r.stages.count - 1)])),
            "failureThreshold": .number(r.failureThreshold), "minimumSample": .number(Double(r.minimumSample)),
            "note": r.note.map { .string($0) } ?? .null,
            "tally": [
                "devicesInStage": .number(Double(v.tally.members)), "succeeded": .number(Double(v.tally.succeeded)),
                "failed": .number(Double(v.tally.failed)),
            ],
            "updatedAt": .string(r.updatedAt.formatted(timestamp)),
        ]
    }

    static func eventJSON(_ e: UpdateEventRecord) -> JSONValue {
        [
            "at": .string(e.at.formatted(timestamp)), "phase": .string(e.phase),
            "text": .string(UpdatePhase(rawValue: e.phase)?.plainEnglish ?? e.phase),
            "version": .string(e.version), "target": e.target.map { .string($0) } ?? .null,
            "reason": e.reason.map { .string($0) } ?? .null,
        ]
    }

    static func deviceUpdateJSON(_ v: Updates.DeviceUpdateView) -> JSONValue {
        [
            "firmwareVersion": v.running.map { .string($0) } ?? .null, "latest": v.latest.map(eventJSON) ?? .null,
            "release": v.release.map(releaseJSON) ?? .null, "alerts": .array(v.alerts.map(eventJSON)),
            "supportEnds": .string(v.supportEnds.description),
            "supportText": .string(
                v.supportEnded
                    ? "Security updates for this product ended on \(v.supportEnds.plainEnglish). It will get no more fixes; consider replacing it."
                    : "Security updates until \(v.supportEnds.plainEnglish)."),
            "supportEnded": .bool(v.supportEnded),
        ]
    }

    /// The TUF repository's files: metadata (JSON) and images (with byte ranges, so a device
    /// resumes an interrupted download).
    static func registerRepository(on router: Router<HearthRequestContext>, hearth: Hearth) {
        router.get("/tuf/metadata/:file") { _, context in
            guard let updates = hearth.updates,
                let bytes = try await updates.repository.metadata(context.parameters.get("file") ?? "")
            else {
                throw HearthError(.notFound, "no such metadata")
            }
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            headers[.cacheControl] = "no-store"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
        let files = FileIO()
        router.get("/tuf/targets/:file") { request, context in
            guard let updates = hearth.updates,
                let path = updates.repository.imagePath(context.parameters.get("file") ?? ""),
                let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? nil
            else { throw HearthError(.notFound, "no such image") }
            var headers = HTTPFields()
            headers[.contentType] = "application/octet-stream"
            headers[.acceptRanges] = "bytes"
            guard let header = request.headers[.range] else {
                headers[.contentLength] = String(size)
                return Response(
                    status: .ok, headers: headers,
                    body: size == 0 ? .init() : try await files.loadFile(path: path, context: context))
            }
            guard let start = NetworkInput.resumeOffset(header, size: size) else {
                headers[.contentRange] = "bytes */\(size)"
                return Response(status: .rangeNotSatisfiable, headers: headers)
            }
            headers[.contentRange] = "bytes \(start)-\(size - 1)/\(size)"
            headers[.contentLength] = String(size - start)
            return Response(
                status: .partialContent, headers: headers,
                body: try await files.loadFile(path: path, range: start...(size - 1), context: context))
        }
    }
}

import Foundation
import HTTPTypes
import HearthCore
import Hummingbird

/// The account's own routes: its data export, and changing and recovering credentials (EN 303 645
/// 5.1-4).
extension API {
    static let newPassword = FieldSchema(
        "newPassword", .string(maxLength: 256), "at least 15 characters; not a common password")
    static let recoveryCode = FieldSchema(
        "recoveryCode", .string(maxLength: 64), "the recovery code shown at sign-up or made since (dashes optional)")
    static let passwordChange = ObjectSchema([
        FieldSchema("currentPassword", .string(maxLength: 256)), newPassword,
    ])
    static let passwordOnly = ObjectSchema([FieldSchema("password", .string(maxLength: 256))])
    static let recovery = ObjectSchema([email, recoveryCode, newPassword])

    func credentialEndpoints() -> [(Endpoint, EndpointHandler)] {
        let hearth = self.hearth
        let bad: [HTTPResponse.Status] = [.badRequest, .contentTooLarge, .unsupportedMediaType, .unprocessableContent]
        return [
            (
                Endpoint(
                    method: .get, path: "/api/v1/account/export",
                    summary:
                        "Everything Hearth holds about you and your devices: a ZIP of JSON files and a README (one export at a time)",
                    access: .signedIn, body: nil, success: .ok, errors: [.unauthorized, .tooManyRequests]),
                { _, context, _ in
                    try await DataExport(hearth: hearth, identity: try context.requireIdentity()).response()
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/account/delete",
                    summary:
                        "Delete your account (owners; needs your password): carried out after 7 days unless cancelled; returns the token that fetches the signed receipt",
                    access: .signedIn, body: Self.passwordOnly, success: .accepted,
                    errors: bad + [.unauthorized, .forbidden, .conflict, .tooManyRequests]),
                { _, context, body in
                    let (after, token) = try await hearth.requestDeletion(
                        password: body.string("password")!, by: try context.requireIdentity(), source: context.source)
                    return JSON.response(
                        [
                            "deleteAfter": .string(after.formatted(Self.timestamp)), "receiptToken": .string(token),
                            "receipt": .string("/api/v1/deletion-receipts/\(token)"),
                        ], status: .accepted)
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/account/delete/cancel",
                    summary: "Cancel your account's pending deletion", access: .signedIn, body: nil, success: .ok,
                    errors: [.unauthorized, .conflict]),
                { _, context, _ in
                    try await hearth.cancelDeletion(by: try context.requireIdentity())
                    return JSON.response(["cancelled": true])
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/deletion-receipt-key",
                    summary: "The public key (P-256, PEM) that checks deletion receipts' ECDSA-SHA256 signatures",
                    access: .public, body: nil, success: .ok, errors: []),
                { _, _, _ in
                    JSON.response([
                        "publicKey": .string(hearth.receiptPublicKeyPEM),
                        "algorithm": "ECDSA P-256 with SHA-256 over the receipt's JSON text (sorted keys, no spaces)",
                    ])
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/assessment",
                    summary:
                        "The deployment's conformance assessment (EN 303 645 ICS, IXIT, PSTI statements, live checks, gaps), signed (operators; query: model)",
                    access: .operator, body: nil, success: .ok,
                    errors: [.badRequest, .unauthorized, .forbidden, .notFound]),
                { request, context, _ in
                    JSON.response(
                        try await hearth.assessment(
                            model: request.uri.queryParameters.get("model"), by: try context.requireIdentity()))
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/assessment-key",
                    summary: "The public key (P-256, PEM) that checks assessments' ECDSA-SHA256 signatures",
                    access: .public, body: nil, success: .ok, errors: [.notFound]),
                { _, _, _ in
                    guard let key = hearth.assessmentPublicKeyPEM else {
                        throw HearthError(.notFound, "this process makes no assessment")
                    }
                    return JSON.response([
                        "publicKey": .string(key),
                        "algorithm":
                            "ECDSA P-256 with SHA-256 over the assessment's JSON text (sorted keys, no spaces)",
                    ])
                }
            ),
            (
                Endpoint(
                    method: .get, path: "/api/v1/deletion-receipts/{token}",
                    summary: "A carried-out account deletion's signed receipt (the token was given with the request)",
                    access: .public, body: nil, success: .ok, errors: [.notFound]),
                { _, context, _ in
                    JSON.response(try await hearth.deletionReceipt(token: context.parameters.get("token") ?? ""))
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/account/password",
                    summary: "Change your password (the current one is needed); every other session ends",
                    access: .signedIn, body: Self.passwordChange, success: .ok,
                    errors: bad + [.unauthorized, .conflict, .tooManyRequests]),
                { _, context, body in
                    let ended = try await hearth.changePassword(
                        current: body.string("currentPassword")!, new: body.string("newPassword")!,
                        by: try context.requireIdentity(), source: context.source)
                    return JSON.response(["changed": true, "otherSessionsEnded": .number(Double(ended))])
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/account/recovery-code",
                    summary: "Make a new recovery code (shown once; the old one stops working); needs your password",
                    access: .signedIn, body: Self.passwordOnly, success: .created,
                    errors: bad + [.unauthorized, .tooManyRequests]),
                { _, context, body in
                    let code = try await hearth.newRecoveryCode(
                        password: body.string("password")!, by: try context.requireIdentity(), source: context.source)
                    return JSON.response(["recoveryCode": .string(code)], status: .created)
                }
            ),
            (
                Endpoint(
                    method: .post, path: "/api/v1/account/recover",
                    summary:
                        "Forgot your password: set a new one with your recovery code, which then stops working; every session ends and a new code is returned",
                    access: .public, body: Self.recovery, success: .ok, errors: bad + [.unauthorized, .tooManyRequests]),
                { _, context, body in
                    let code = try await hearth.recover(
                        email: body.string("email")!, recoveryCode: body.string("recoveryCode")!,
                        newPassword: body.string("newPassword")!, source: context.source)
                    return JSON.response(["recovered": true, "recoveryCode": .string(code)])
                }
            ),
        ]
    }
}

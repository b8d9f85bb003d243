import Foundation
import HearthCore
import Hummingbird
import HummingbirdTesting
import Testing

@testable import HearthServer

/// Bad input on every route that takes a body: the documented 4xx, the field named, and the
/// database byte-for-byte unchanged.
@Suite struct InputValidationTests {
    struct BadInput: Sendable, CustomStringConvertible {
        let description: String
        let body: [UInt8]
        var contentType = "application/json"
        let status: Int
        let error: String
        var field: String?
    }

    static func cases(for schema: ObjectSchema) -> [BadInput] {
        var cases = [
            BadInput(
                description: "malformed JSON", body: Array(#"{"email": "#.utf8), status: 400, error: "malformed_body"),
            BadInput(description: "not an object", body: Array("[1,2]".utf8), status: 400, error: "invalid_input"),
            BadInput(
                description: "invalid UTF-8", body: [0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xC3, 0x28, 0x22, 0x7D],
                status: 400, error: "malformed_body"),
            BadInput(
                description: "oversize body",
                body: Array(("{\"a\":\"" + String(repeating: "x", count: 20_000) + "\"}").utf8), status: 413,
                error: "payload_too_large"),
            BadInput(
                description: "wrong media type", body: Array("{}".utf8), contentType: "text/plain", status: 415,
                error: "unsupported_media_type"),
            BadInput(
                description: "unknown field", body: Array(#"{"zzz_unknown":1}"#.utf8), status: 400,
                error: "unknown_field", field: "zzz_unknown"),
        ]
        for field in schema.fields {
            var wrongType: [String: JSONValue] = [:]
            var tooLong: [String: JSONValue] = [:]
            var missing: [String: JSONValue] = [:]
            for f in schema.fields {
                wrongType[f.name] = validValue(f.kind)
                tooLong[f.name] = validValue(f.kind)
                missing[f.name] = validValue(f.kind)
            }
            wrongType[field.name] = .bool(true)
            if case .boolean = field.kind { wrongType[field.name] = .number(1) }
            cases.append(
                BadInput(
                    description: "\(field.name) of the wrong type",
                    body: Array(JSONValue.object(wrongType).serialized()), status: 400, error: "invalid_input",
                    field: field.name))
            if case .string(_, let maxLength, _, _) = field.kind {
                // Over the field's limit, inside the 16 KiB body cap.
                tooLong[field.name] = .string(
                    maxLength < 5_000
                        ? String(repeating: "é", count: 5_000) : String(repeating: "x", count: maxLength + 1))
                cases.append(
                    BadInput(
                        description: "\(field.name) very long", body: Array(JSONValue.object(tooLong).serialized()),
                        status: 400, error: "invalid_input", field: field.name))
                var control = tooLong
                control[field.name] = .string("abc\u{0}def")
                cases.append(
                    BadInput(
                        description: "\(field.name) with a control character",
                        body: Array(JSONValue.object(control).serialized()), status: 400, error: "invalid_input",
                        field: field.name))
            }
            if field.required {
                missing[field.name] = nil
                cases.append(
                    BadInput(
                        description: "\(field.name) missing", body: Array(JSONValue.object(missing).serialized()),
                        status: 400, error: "invalid_input", field: field.name))
            }
        }
        return cases
    }

    /// A value that passes `kind`, so that a case breaks exactly one field.
    static func validValue(_ kind: FieldKind) -> JSONValue {
        switch kind {
        case .string(let minLength, _, _, let pattern):
            .string(pattern?.example ?? String(repeating: "a", count: max(minLength, 1)))
        case .integer(let min, _): .number(Double(min))
        case .number(let min, _): .number(min)
        case .boolean: .bool(true)
        case .oneOf(let values): .string(values[0])
        case .date: "2030-01-01"
        case .object(let schema):
            .object(Dictionary(uniqueKeysWithValues: schema.fields.map { ($0.name, validValue($0.kind)) }))
        case .array: .array([])
        case .map: .object([:])
        case .scalar: .number(1)
        }
    }

    @Test func everyBodyRouteRefusesBadInputAndChangesNothing() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        _ = try await d.provisionThermostats(1)
        try await d.application.test(.router) { client in
            let token = try await makeOperator(d, client)
            let routes = API(hearth: d.hearth).endpoints().map(\.0).filter { $0.body != nil }
            #expect(routes.count == 22)
            for route in routes {
                let before = try d.snapshot()
                for bad in Self.cases(for: route.body!) {
                    let r = try await client.call(
                        route.method, route.path, bytes: bad.body, token: token, contentType: bad.contentType)
                    #expect(r.status == bad.status, "\(route.path): \(bad) → \(r.status) \(r.text)")
                    #expect(r.error == bad.error, "\(route.path): \(bad) → \(r.text)")
                    if let field = bad.field { #expect(r.field == field, "\(route.path): \(bad) → \(r.text)") }
                    #expect(r.headers[.contentType]?.hasPrefix("application/json") == true)
                }
                #expect(try d.snapshot() == before, "\(route.path) changed the database on bad input")
            }
        }
    }

    @Test func formsRefuseBadInputToo() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        try await d.application.test(.router) { client in
            let before = try d.snapshot()
            let form = "application/x-www-form-urlencoded"
            for body in [
                "email=a%40example.com&password=%FF%FE%FD+long+enough+passphrase",
                "email=a%40example.com&email=b%40example.com&password=x", "email=%ZZ",
                "email=a%40example.com&password=long+enough+passphrase+x&extra=1",
                String(repeating: "a", count: 20_000),
            ] {
                let r = try await client.call(.post, "/signup", body: body, contentType: form)
                #expect((400..<500).contains(r.status), "\(body.prefix(60)) → \(r.status)")
                #expect(r.text.contains("class=\"error\""))
            }
            #expect(try d.snapshot() == before)
        }
    }
}

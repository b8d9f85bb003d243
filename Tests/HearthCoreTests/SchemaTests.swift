import Foundation
import HearthCore
import Testing

@Suite struct SchemaTests {
    let schema = ObjectSchema([
        FieldSchema("name", .string(maxLength: 5)),
        FieldSchema("count", .integer(min: 0, max: 10)),
        FieldSchema("note", .string(maxLength: 20, multiline: true), required: false),
        FieldSchema("inner", .object(ObjectSchema([FieldSchema("flag", .boolean)])), required: false),
    ])

    func error(_ value: JSONValue) -> HearthError? {
        do {
            try schema.validate(value)
            return nil
        } catch let e as HearthError { return e } catch { return nil }
    }

    @Test func acceptsAValidObject() throws {
        let o = try schema.validate(["name": "abc", "count": 3, "note": "two\nlines", "inner": ["flag": true]])
        #expect(o.string("name") == "abc")
        #expect(o.number("count") == 3)
    }

    @Test func namesTheOffendingField() {
        let cases: [(JSONValue, HearthError.Code, String?)] = [
            (["name": "abc", "count": 3, "extra": 1], .unknownField, "extra"),
            (["count": 3], .invalidInput, "name"),
            (["name": 5, "count": 3], .invalidInput, "name"),
            (["name": "abcdef", "count": 3], .invalidInput, "name"),
            (["name": "", "count": 3], .invalidInput, "name"),
            (["name": "a\u{7}", "count": 3], .invalidInput, "name"),
            (["name": "a\u{202E}b", "count": 3], .invalidInput, "name"),
            (["name": "abc", "count": 11], .invalidInput, "count"),
            (["name": "abc", "count": 1.5], .invalidInput, "count"),
            (["name": "abc", "count": "3"], .invalidInput, "count"),
            (["name": "abc", "count": true], .invalidInput, "count"),
            (["name": "abc", "count": 3, "inner": ["flag": 1]], .invalidInput, "inner.flag"),
            (["name": "abc", "count": 3, "inner": ["flag": true, "x": 1]], .unknownField, "inner.x"),
            (["abc"], .invalidInput, nil),
        ]
        for (value, code, field) in cases {
            let e = error(value)
            #expect(e?.code == code, "\(value)")
            #expect(e?.field == field, "\(value)")
        }
    }

    @Test func parsesOnlyUTF8JSON() throws {
        #expect(try JSONValue.parse(Array(#"{"a":[1,true,null,"x"]}"#.utf8)) == ["a": [1, true, .null, "x"]])
        for bad in [
            [UInt8(0xFF), 0xFE], Array("{\"a\":".utf8), Array("{'a':1}".utf8),
            [0x7B, 0x22, 0xC3, 0x28, 0x22, 0x3A, 0x31, 0x7D],
        ] {
            #expect(throws: HearthError.self) { try JSONValue.parse(bad) }
        }
    }
}

@Suite struct ProductModelTests {
    @Test func demoModelsParseAndRoundTrip() throws {
        let models = ProductModel.demoModels()
        #expect(models.count == 2)
        for model in models { #expect(try ProductModel(json: model.json) == model) }
        #expect(models[0].supportEnds.plainEnglish == "31 December 2031")
    }

    static let data: JSONValue = [
        "category": "environmental", "purpose": "run", "personal": false, "recipients": ["you"], "retentionDays": 30,
    ]
    static let purposes: JSONValue = [
        ["id": "run", "essential": true, "description": "What the device is for."],
        ["id": "extra", "essential": false, "description": "Something the owner may refuse."],
    ]

    static func model(
        _ telemetry: JSONValue, id: JSONValue = "m-1", ends: JSONValue = "2030-01-31", purposes: JSONValue = purposes,
        commands: JSONValue = []
    ) -> JSONValue {
        [
            "id": id, "name": "M", "maker": "Maker", "supportEnds": ends, "purposes": purposes,
            "telemetry": telemetry, "commands": commands,
        ]
    }

    /// Each bad definition is refused for its own reason, named by the field to blame.
    @Test func invalidDefinitionsAreRefused() throws {
        let data = Self.data
        func model(_ t: JSONValue, id: JSONValue = "m-1", ends: JSONValue = "2030-01-31") -> JSONValue {
            Self.model(t, id: id, ends: ends)
        }
        #expect(throws: Never.self) { try ProductModel(json: model([["name": "t", "type": "boolean", "data": data]])) }
        let bad: [(JSONValue, String)] = [
            (model([["name": "t", "type": "number", "min": 5, "max": 1, "data": data]]), "telemetry[0].max"),
            (model([["name": "t", "type": "number", "min": 5, "data": data]]), "telemetry[0].min"),
            (model([["name": "t", "type": "enum", "values": [], "data": data]]), "telemetry[0].values"),
            (
                model([
                    ["name": "t", "type": "boolean", "data": data], ["name": "t", "type": "boolean", "data": data],
                ]),
                "telemetry"
            ),
            (model([["name": "1t", "type": "boolean", "data": data]]), "telemetry[0].name"),
            (model([["name": "t", "type": "float", "data": data]]), "telemetry[0].type"),
            (model([], id: "Bad Id"), "id"),
            (model([], ends: "2030-02-30"), "supportEnds"),
            (model([], ends: "31/12/2030"), "supportEnds"),
        ]
        for (json, field) in bad {
            #expect(throws: HearthError.self, "\(json)") { try ProductModel(json: json) }
            do { _ = try ProductModel(json: json) } catch let e as HearthError { #expect(e.field == field, "\(json)") }
        }
    }

    /// EN 303 645 6-1: a model that does not say what it collects and why is refused.
    @Test func aModelWithoutDataDeclarationsIsRefused() throws {
        func field(_ data: JSONValue?, required: Bool? = nil) -> JSONValue {
            var o: [String: JSONValue] = ["name": "t", "type": "boolean"]
            if let data { o["data"] = data }
            if let required { o["required"] = .bool(required) }
            return .object(o)
        }
        func with(_ key: String, _ value: JSONValue) -> JSONValue {
            guard case .object(var o) = Self.data else { return .null }
            o[key] = value
            return .object(o)
        }
        var noPurposes = Self.model([field(Self.data)])
        if case .object(var o) = noPurposes {
            o["purposes"] = nil
            noPurposes = .object(o)
        }
        let cases: [(JSONValue, String)] = [
            (noPurposes, "purposes"),
            (Self.model([field(nil)]), "telemetry[0].data"),
            (Self.model([field(with("purpose", "marketing"))]), "telemetry[0].data.purpose"),
            (Self.model([field(with("recipients", []))]), "telemetry[0].data.recipients"),
            (Self.model([field(with("retentionDays", 0))]), "telemetry[0].data.retentionDays"),
            (Self.model([field(with("retentionDays", 3651))]), "telemetry[0].data.retentionDays"),
            (Self.model([field(with("category", "everything"))]), "telemetry[0].data.category"),
            (Self.model([field(with("purpose", "extra"), required: true)]), "telemetry[0].required"),
            (
                Self.model(
                    [field(Self.data)], purposes: [["id": "run", "essential": false, "description": "Optional only."]]),
                "purposes"
            ),
            (Self.model([field(Self.data)], commands: [["name": "go", "parameters": []]]), "commands[0].data"),
        ]
        for (json, blame) in cases {
            do {
                _ = try ProductModel(json: json)
                Issue.record("accepted: \(json)")
            } catch let e as HearthError {
                #expect(e.field == blame, "\(e.message)")
            }
        }
    }

    @Test func aPolicyWithholdsTheFieldsOfPurposesNotAgreedTo() throws {
        let thermostat = ProductModel.demoModels()[0]
        #expect(DevicePolicy(model: thermostat, granted: []).withheld == ["humidity": "comfort"])
        #expect(DevicePolicy(model: thermostat, granted: ["comfort"]).withheld == [:])
        #expect(DevicePolicy(model: thermostat, granted: ["operation"]).withheld == ["humidity": "comfort"])
        let policy = DevicePolicy(model: thermostat, granted: [])
        #expect(try DevicePolicy(payload: policy.payload) == policy)
        let validator = TelemetryValidator(model: thermostat)
        let serial = try DeviceSerial("AAAAAAAAAAAA")
        let reading = Array(#"{"seq":1,"values":{"temperature":20,"humidity":40,"heating":true,"target":21}}"#.utf8)
        #expect(throws: Never.self) { try validator.validate(reading, serial: serial, receivedAt: Date()) }
        #expect(
            throws: TelemetryProblem(
                .declined, field: "values.humidity",
                "'humidity' is not collected: the owner has not agreed to its purpose 'comfort'")
        ) {
            try validator.validate(reading, serial: serial, receivedAt: Date(), policy: policy)
        }
        let without = Array(#"{"seq":2,"values":{"temperature":20,"heating":true,"target":21}}"#.utf8)
        #expect(throws: Never.self) {
            try validator.validate(without, serial: serial, receivedAt: Date(), policy: policy)
        }
    }
}

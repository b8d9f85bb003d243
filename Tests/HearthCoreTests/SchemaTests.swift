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

    @Test func invalidDefinitionsAreRefused() {
        func model(_ telemetry: JSONValue, id: JSONValue = "m-1", ends: JSONValue = "2030-01-31") -> JSONValue {
            ["id": id, "name": "M", "maker": "Maker", "supportEnds": ends, "telemetry": telemetry, "commands": []]
        }
        let bad: [JSONValue] = [
            model([["name": "t", "type": "number", "min": 5, "max": 1]]),
            model([["name": "t", "type": "number", "min": 5]]),
            model([["name": "t", "type": "enum", "values": []]]),
            model([["name": "t", "type": "boolean"], ["name": "t", "type": "boolean"]]),
            model([["name": "1t", "type": "boolean"]]),
            model([["name": "t", "type": "float"]]),
            model([], id: "Bad Id"),
            model([], ends: "2030-02-30"),
            model([], ends: "31/12/2030"),
        ]
        for json in bad { #expect(throws: HearthError.self, "\(json)") { try ProductModel(json: json) } }
    }
}

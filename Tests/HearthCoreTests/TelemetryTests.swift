import Foundation
import HearthCore
import Testing

@Suite struct TelemetryTests {
    let thermostat = ProductModel.demoModels()[0]
    let lock = ProductModel.demoModels()[1]
    let serial: DeviceSerial

    init() throws { serial = try DeviceSerial("0123456789AB") }
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    func problem(_ payload: String, model: ProductModel? = nil) -> TelemetryProblem? {
        do {
            _ = try TelemetryValidator(model: model ?? thermostat).validate(
                Array(payload.utf8), serial: serial, receivedAt: now)
            return nil
        } catch { return error }
    }

    @Test func aValidReadingBecomesATypedRecord() throws {
        let payload =
            #"{"seq": 7, "at": 1800000000500, "values": {"temperature": -12.5, "humidity": 100, "heating": true, "target": 5}}"#
        let r = try TelemetryValidator(model: thermostat).validate(Array(payload.utf8), serial: serial, receivedAt: now)
        #expect(r.sequence == 7 && r.deviceTime == Date(timeIntervalSince1970: 1_800_000_000.5) && r.receivedAt == now)
        #expect(r.values == ["temperature": -12.5, "humidity": 100, "heating": true, "target": 5])
        let lockReading = try TelemetryValidator(model: lock).validate(
            Array(#"{"seq":0,"values":{"state":"jammed","battery":0}}"#.utf8), serial: serial, receivedAt: now)
        #expect(lockReading.deviceTime == nil && lockReading.droppedBefore == 0)
        let afterDrops = try TelemetryValidator(model: lock).validate(
            Array(#"{"seq":9,"dropped":1000000000,"values":{"state":"locked","battery":3}}"#.utf8), serial: serial,
            receivedAt: now)
        #expect(afterDrops.droppedBefore == 1_000_000_000)
    }

    @Test func eachKindOfBadPayloadIsNamed() {
        let good = #""temperature": 20, "humidity": 50, "heating": false, "target": 20"#
        let cases: [(String, TelemetryRejection, String?)] = [
            ("", .malformed, nil),
            ("null", .malformed, nil),
            ("\"text\"", .malformed, nil),
            (#"{"seq": 1, "values": {\#(good)}"#, .malformed, nil),
            (#"{"seq": 1, "seq": 2, "values": {\#(good)}}"#, .malformed, nil),
            (#"{"values": {\#(good)}}"#, .missingField, "seq"),
            (#"{"seq": "1", "values": {\#(good)}}"#, .wrongType, "seq"),
            (#"{"seq": 9007199254740993, "values": {\#(good)}}"#, .outOfRange, "seq"),
            (#"{"seq": 1}"#, .missingField, "values"),
            (#"{"seq": 1, "values": [1]}"#, .wrongType, "values"),
            (#"{"seq": 1, "values": {\#(good)}, "x": 1}"#, .unknownField, "x"),
            (#"{"seq": 1, "values": {\#(good), "x": 1}}"#, .unknownField, "values.x"),
            (
                #"{"seq": 1, "values": {"humidity": 20, "heating": false, "target": 20}}"#, .missingField,
                "values.temperature"
            ),
            (
                #"{"seq": 1, "values": {"temperature": 85.01, "humidity": 50, "heating": false, "target": 20}}"#,
                .outOfRange, "values.temperature"
            ),
            (
                #"{"seq": 1, "values": {"temperature": -40.5, "humidity": 50, "heating": false, "target": 20}}"#,
                .outOfRange, "values.temperature"
            ),
            (
                #"{"seq": 1, "values": {"temperature": true, "humidity": 50, "heating": false, "target": 20}}"#,
                .wrongType, "values.temperature"
            ),
            (
                #"{"seq": 1, "values": {"temperature": 20, "humidity": 50, "heating": "no", "target": 20}}"#,
                .wrongType, "values.heating"
            ),
            (
                #"{"seq": 1, "values": {"temperature": 1e999, "humidity": 50, "heating": false, "target": 20}}"#,
                .malformed, nil
            ),
            (String(repeating: " ", count: 4097), .oversize, nil),
            (#"{"seq": 1, "dropped": -1, "values": {\#(good)}}"#, .outOfRange, "dropped"),
            (#"{"seq": 1, "dropped": 1000000001, "values": {\#(good)}}"#, .outOfRange, "dropped"),
            (#"{"seq": 1, "dropped": 2.5, "values": {\#(good)}}"#, .wrongType, "dropped"),
            (#"{"seq": 1, "dropped": "7", "values": {\#(good)}}"#, .wrongType, "dropped"),
        ]
        for (payload, kind, field) in cases {
            let p = problem(payload)
            #expect(p?.kind == kind && p?.field == field, "\(payload.prefix(80)) → \(String(describing: p))")
        }
        #expect(problem(#"{"seq": 1, "values": {"state": "open", "battery": 50}}"#, model: lock)?.kind == .outOfRange)
        #expect(
            problem(#"{"seq": 1, "values": {"state": "locked", "battery": 50.5}}"#, model: lock)?.kind == .wrongType)
        #expect(
            problem(#"{"seq": 1, "values": {"state": "locked", "battery": 101}}"#, model: lock)?.kind == .outOfRange)
    }

    @Test func commandsAreCheckedAgainstTheModel() throws {
        #expect(
            try CommandMessage.validate("setTarget", parameters: ["target": 21.5], model: thermostat).name
                == "setTarget")
        let cases: [(String, [String: JSONValue], TelemetryRejection)] = [
            ("selfDestruct", [:], .unknownField),
            ("setTarget", [:], .missingField),
            ("setTarget", ["target": 31], .outOfRange),
            ("setTarget", ["target": "21"], .wrongType),
            ("setTarget", ["target": 21, "mode": "eco"], .unknownField),
        ]
        for (name, parameters, kind) in cases {
            #expect(throws: TelemetryProblem.self) {
                try CommandMessage.validate(name, parameters: parameters, model: thermostat)
            }
            do { _ = try CommandMessage.validate(name, parameters: parameters, model: thermostat) } catch {
                #expect(error.kind == kind, "\(name) \(parameters)")
            }
        }
        #expect(throws: TelemetryProblem.self) {
            try CommandMessage.validate("lock", parameters: ["force": true], model: lock)
        }
    }

    @Test func tokenBucketsRefillWithTime() {
        var bucket = TokenBucket(rate: 10, burst: 5, now: now)
        var taken: [Bool] = (0..<6).map { _ in bucket.take(now: now) }
        #expect(taken == [true, true, true, true, true, false])
        #expect(bucket.wait() > 0.09 && bucket.wait() <= 0.1)
        taken = [bucket.take(now: now.addingTimeInterval(0.05)), bucket.take(now: now.addingTimeInterval(0.15))]
        #expect(taken == [false, true])
        // Never more than the burst, however long it was idle.
        let later = now.addingTimeInterval(3600)
        taken = (0..<6).map { _ in bucket.take(now: later) }
        #expect(taken == [true, true, true, true, true, false])
        // Costs larger than one (bytes).
        var bytes = TokenBucket(rate: 1000, burst: 1000, now: now)
        taken = [bytes.take(800, now: now), bytes.take(300, now: now), bytes.take(200, now: now)]
        #expect(taken == [true, false, true])
    }
}

@Suite struct JSONParserTests {
    func parse(_ text: String) -> JSONValue? { try? JSONValue.parse(Array(text.utf8)) }

    @Test func parsesWhatRFC8259Allows() {
        #expect(
            parse(#" { "a" : [1, -2.5e3, true, false, null, "x\"\\\/\b\f\n\r\tA\u00e9\ud83d\ude00"] } "#)
                == ["a": [1, -2500, true, false, .null, "x\"\\/\u{8}\u{C}\n\r\tAé😀"]])
        #expect(parse("0") == 0 && parse("-0.5") == -0.5 && parse("[]") == [] && parse("{}") == [:])
        #expect(parse(#""é""#) == "é")
    }

    @Test func refusesEverythingElse() {
        let bad = [
            "", " ", "{", "[1,]", "{\"a\":1,}", "01", "1.", ".5", "+1", "1e", "--1", "NaN", "Infinity", "tru", "nul",
            "'a'", "{a:1}", "{\"a\" 1}", "[1 2]", "\"unterminated", "\"bad \\x escape\"", "\"\\u12\"", "\"\\ud83d\"",
            "\"\\ude00\"",
            "\"tab\there\"", "{\"a\":1,\"a\":2}", "1 2", "[1]x", "1e999",
            String(repeating: "[", count: 33) + String(repeating: "]", count: 33),
        ]
        for text in bad { #expect(parse(text) == nil, "\(text.prefix(40)) was accepted") }
        #expect(parse(String(repeating: "[", count: 32) + String(repeating: "]", count: 32)) != nil)
        #expect((try? JSONValue.parse([0x22, 0xC3, 0x28, 0x22])) == nil, "invalid UTF-8")
    }

    @Test func serialisesCanonicallyAndRoundTrips() throws {
        let value: JSONValue = ["b": [1, 2.5, "q\"\n\u{1}"], "a": .null, "c": ["z": true, "y": false]]
        #expect(value.text == #"{"a":null,"b":[1,2.5,"q\"\n\u0001"],"c":{"y":false,"z":true}}"#)
        #expect(try JSONValue.parse(Array(value.text.utf8)) == value)
    }
}

@Suite struct DisclosureWorkflowTests {
    @Test func onlyTheWorkflowsStepsAreAllowed() throws {
        let policy = DisclosurePolicy()
        let allowed: Set<String> = [
            "received>acknowledged", "acknowledged>valid", "acknowledged>duplicate", "acknowledged>not_a_vulnerability",
            "duplicate>valid", "not_a_vulnerability>valid", "valid>fix_in_progress", "fix_in_progress>fixed",
            "fixed>disclosed",
        ]
        for from in ReportState.allCases {
            for to in ReportState.allCases {
                let ok = (try? policy.check(from: from, to: to)) != nil
                #expect(ok == allowed.contains("\(from.rawValue)>\(to.rawValue)"), "\(from) → \(to)")
            }
        }
        #expect(ReportState.allCases.filter(\.isClosed) == [.duplicate, .notVulnerability, .disclosed])
    }

    @Test func reportIDsAreValidOnceBuilt() throws {
        var rng = SplitMix64(state: 1)
        let id = ReportID.random(using: &rng)
        #expect(try ReportID(id.rawValue) == id)
        for bad in ["", "VR-", "VR-123", "VR-ILOU123456", "XX-0123456789", "VR-0123456789A", "vr-0123456789"] {
            #expect(throws: HearthError.self, "\(bad)") { try ReportID(bad) }
        }
    }
}

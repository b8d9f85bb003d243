/// One value a device reports or a command takes: a thermostat's temperature, a lock's state.
public struct DataField: Sendable, Equatable {
    public enum ValueType: Sendable, Equatable {
        case number(min: Double, max: Double)
        case integer(min: Int, max: Int)
        case boolean
        case enumeration([String])
    }

    public let name: String
    public let type: ValueType
    public let unit: String?
    public let required: Bool

    public init(name: String, type: ValueType, unit: String? = nil, required: Bool = true) {
        self.name = name
        self.type = type
        self.unit = unit
        self.required = required
    }

    /// The JSON shape a maker writes: `{"name", "type", "unit"?, "min"?, "max"?, "values"?, "required"?}`.
    static let schema = ObjectSchema([
        FieldSchema(
            "name", .string(maxLength: 32, pattern: DataField.identifier),
            "identifier: letters, digits and '_', starting with a letter"),
        FieldSchema("type", .oneOf(["number", "integer", "boolean", "enum"])),
        FieldSchema("unit", .string(maxLength: 16), required: false),
        FieldSchema("min", .number(min: -1e9, max: 1e9), required: false),
        FieldSchema("max", .number(min: -1e9, max: 1e9), required: false),
        FieldSchema("values", .array(of: .string(maxLength: 32), maxItems: 32), required: false),
        FieldSchema("required", .boolean, required: false),
    ])

    /// Field and command names become JSON keys and MQTT topic levels (`devices/S/commands/NAME`):
    /// ASCII letters, digits and '_', starting with a letter — never `/`, `+`, `#`, markup or spaces.
    static func requireIdentifier(_ name: String, field: String) throws {
        guard identifier.matches(name) else { throw HearthError.invalid(field, identifier.message) }
    }

    /// The rule for field and command names, published as their pattern.
    public static let identifier = TextPattern(
        "^[A-Za-z][A-Za-z0-9_]*" + TextPattern.end, "letters, digits and '_', starting with a letter",
        example: "setTarget")

    init(json: JSONValue, path: String) throws {
        let o = try Self.schema.validate(json, path: path)
        let name = o.string("name")!
        try Self.requireIdentifier(name, field: "\(path).name")
        let min = o.number("min")
        let max = o.number("max")
        let type: ValueType
        switch o.string("type")! {
        case "number", "integer":
            guard let min, let max else { throw HearthError.invalid("\(path).min", "numbers need both min and max") }
            guard min < max else { throw HearthError.invalid("\(path).max", "max must be greater than min") }
            if o.string("type") == "integer" {
                guard min.rounded() == min, max.rounded() == max else {
                    throw HearthError.invalid("\(path).min", "integer bounds must be whole")
                }
                type = .integer(min: Int(min), max: Int(max))
            } else {
                type = .number(min: min, max: max)
            }
        case "boolean":
            type = .boolean
        default:
            let values = o.array("values").compactMap { if case .string(let s) = $0 { s } else { nil } }
            guard !values.isEmpty, Set(values).count == values.count else {
                throw HearthError.invalid("\(path).values", "an enum needs distinct values")
            }
            type = .enumeration(values)
        }
        self.init(name: name, type: type, unit: o.string("unit"), required: o.bool("required") ?? true)
    }

    public var json: JSONValue {
        var o: [String: JSONValue] = ["name": .string(name), "required": .bool(required)]
        if let unit { o["unit"] = .string(unit) }
        switch type {
        case .number(let min, let max):
            o["type"] = "number"
            o["min"] = .number(min)
            o["max"] = .number(max)
        case .integer(let min, let max):
            o["type"] = "integer"
            o["min"] = .number(Double(min))
            o["max"] = .number(Double(max))
        case .boolean: o["type"] = "boolean"
        case .enumeration(let values):
            o["type"] = "enum"
            o["values"] = .array(values.map { .string($0) })
        }
        return .object(o)
    }

    /// The check a value of this field must pass (used for telemetry and command parameters).
    public var kind: FieldKind {
        switch type {
        case .number(let min, let max): .number(min: min, max: max)
        case .integer(let min, let max): .integer(min: min, max: max)
        case .boolean: .boolean
        case .enumeration(let values): .oneOf(values)
        }
    }
}

/// A command an owner can send to a device of a model, with its parameters.
public struct CommandSpec: Sendable, Equatable {
    public let name: String
    public let parameters: [DataField]

    public init(name: String, parameters: [DataField]) {
        self.name = name
        self.parameters = parameters
    }

    /// The schema a command's parameters are checked against, on the server and on the device.
    public var parameterSchema: ObjectSchema {
        ObjectSchema(parameters.map { FieldSchema($0.name, $0.kind, required: $0.required) })
    }
}

/// A product model: what a maker sells, what its devices report and accept, and until when it
/// gets security updates (Code of Practice guideline 3; PSTI Schedule 1 ¶3).
public struct ProductModel: Sendable, Equatable {
    public let id: ProductModelID
    public let name: String
    public let maker: String
    public let telemetry: [DataField]
    public let commands: [CommandSpec]
    /// The last day on which security updates are promised.
    public let supportEnds: CalendarDate

    public init(
        id: ProductModelID, name: String, maker: String, telemetry: [DataField], commands: [CommandSpec],
        supportEnds: CalendarDate
    ) {
        self.id = id
        self.name = name
        self.maker = maker
        self.telemetry = telemetry
        self.commands = commands
        self.supportEnds = supportEnds
    }

    static let fieldList = FieldKind.array(of: .object(DataField.schema), maxItems: 64)

    /// The JSON a maker writes (file or API).
    public static let schema = ObjectSchema([
        FieldSchema("id", .string(minLength: 2, maxLength: 32), "lowercase slug, e.g. thermostat-t1"),
        FieldSchema("name", .string(maxLength: 100)),
        FieldSchema("maker", .string(maxLength: 100)),
        FieldSchema("supportEnds", .date, "last day of security updates (YYYY-MM-DD)"),
        FieldSchema("telemetry", fieldList),
        FieldSchema(
            "commands",
            .array(
                of: .object(
                    ObjectSchema([
                        FieldSchema(
                            "name", .string(maxLength: 32, pattern: DataField.identifier),
                            "identifier: letters, digits and '_', starting with a letter"),
                        FieldSchema("parameters", fieldList),
                    ])), maxItems: 32)
        ),
    ])

    public init(json: JSONValue) throws {
        let o = try Self.schema.validate(json)
        let id = try ProductModelID(o.string("id")!)
        let telemetry = try o.array("telemetry").enumerated().map { try DataField(json: $1, path: "telemetry[\($0)]") }
        try Self.requireDistinct(telemetry.map(\.name), field: "telemetry")
        let commands = try o.array("commands").enumerated().map { i, command -> CommandSpec in
            let c = ValidatedObject(members: { if case .object(let m) = command { m } else { [:] } }())
            let parameters = try c.array("parameters").enumerated().map {
                try DataField(json: $1, path: "commands[\(i)].parameters[\($0)]")
            }
            try Self.requireDistinct(parameters.map(\.name), field: "commands[\(i)].parameters")
            try DataField.requireIdentifier(c.string("name")!, field: "commands[\(i)].name")
            return CommandSpec(name: c.string("name")!, parameters: parameters)
        }
        try Self.requireDistinct(commands.map(\.name), field: "commands")
        guard let ends = CalendarDate(o.string("supportEnds")!) else {
            throw HearthError.invalid("supportEnds", "expected YYYY-MM-DD")
        }
        self.init(
            id: id, name: o.string("name")!, maker: o.string("maker")!, telemetry: telemetry, commands: commands,
            supportEnds: ends)
    }

    static func requireDistinct(_ names: [String], field: String) throws {
        guard Set(names).count == names.count else { throw HearthError.invalid(field, "names must be distinct") }
    }

    public var json: JSONValue {
        [
            "id": .string(id.rawValue), "name": .string(name), "maker": .string(maker),
            "supportEnds": .string(supportEnds.description),
            "telemetry": .array(telemetry.map(\.json)),
            "commands": .array(
                commands.map { ["name": .string($0.name), "parameters": .array($0.parameters.map(\.json))] }),
        ]
    }

    /// A thermostat and a lock, for the demo and the tests.
    public static func demoModels() -> [ProductModel] {
        let thermostat: JSONValue = [
            "id": "thermostat-t1", "name": "Hearth Thermostat T1", "maker": "Hearth Demo Devices Ltd",
            "supportEnds": "2031-12-31",
            "telemetry": [
                ["name": "temperature", "type": "number", "unit": "°C", "min": -40, "max": 85],
                ["name": "humidity", "type": "number", "unit": "%", "min": 0, "max": 100],
                ["name": "heating", "type": "boolean"],
                ["name": "target", "type": "number", "unit": "°C", "min": 5, "max": 30],
            ],
            "commands": [
                [
                    "name": "setTarget",
                    "parameters": [["name": "target", "type": "number", "unit": "°C", "min": 5, "max": 30]],
                ]
            ],
        ]
        let lock: JSONValue = [
            "id": "lock-l1", "name": "Hearth Smart Lock L1", "maker": "Hearth Demo Devices Ltd",
            "supportEnds": "2032-06-30",
            "telemetry": [
                ["name": "state", "type": "enum", "values": ["locked", "unlocked", "jammed"]],
                ["name": "battery", "type": "integer", "unit": "%", "min": 0, "max": 100],
            ],
            "commands": [["name": "lock", "parameters": []], ["name": "unlock", "parameters": []]],
        ]
        // The literals above are checked by the same parser as any maker's file.
        return [thermostat, lock].compactMap { try? ProductModel(json: $0) }
    }
}

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
    /// What the field is as personal data: required for telemetry, absent for command parameters
    /// (their command carries it).
    public let declaration: DataDeclaration?

    public init(
        name: String, type: ValueType, unit: String? = nil, required: Bool = true, declaration: DataDeclaration? = nil
    ) {
        self.name = name
        self.type = type
        self.unit = unit
        self.required = required
        self.declaration = declaration
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

    /// A telemetry field: the same, plus its data declaration (required).
    static let telemetrySchema = ObjectSchema(
        schema.fields + [FieldSchema("data", .object(DataDeclaration.schema), "what the field is as personal data")])

    /// Field and command names become JSON keys and MQTT topic levels (`devices/S/commands/NAME`):
    /// ASCII letters, digits and '_', starting with a letter — never `/`, `+`, `#`, markup or spaces.
    static func requireIdentifier(_ name: String, field: String) throws {
        guard identifier.matches(name) else { throw HearthError.invalid(field, identifier.message) }
    }

    /// The rule for field and command names, published as their pattern.
    public static let identifier = TextPattern(
        "^[A-Za-z][A-Za-z0-9_]*" + TextPattern.end, "letters, digits and '_', starting with a letter",
        example: "setTarget")

    init(json: JSONValue, path: String, purposes: [DataPurpose]? = nil) throws {
        let o = try (purposes == nil ? Self.schema : Self.telemetrySchema).validate(json, path: path)
        let declaration = try purposes.map {
            try DataDeclaration(json: o.members["data"]!, path: "\(path).data", purposes: $0)
        }
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
        self.init(
            name: name, type: type, unit: o.string("unit"), required: o.bool("required") ?? true,
            declaration: declaration)
    }

    public var json: JSONValue {
        var o: [String: JSONValue] = ["name": .string(name), "required": .bool(required)]
        if let unit { o["unit"] = .string(unit) }
        if let declaration { o["data"] = declaration.json }
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
    /// What the command and its history are as personal data.
    public let declaration: DataDeclaration?

    public init(name: String, parameters: [DataField], declaration: DataDeclaration? = nil) {
        self.name = name
        self.parameters = parameters
        self.declaration = declaration
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
    /// Why its devices collect data; every telemetry field and command names one.
    public let purposes: [DataPurpose]

    public init(
        id: ProductModelID, name: String, maker: String, telemetry: [DataField], commands: [CommandSpec],
        supportEnds: CalendarDate, purposes: [DataPurpose] = []
    ) {
        self.id = id
        self.name = name
        self.maker = maker
        self.telemetry = telemetry
        self.commands = commands
        self.supportEnds = supportEnds
        self.purposes = purposes
    }

    /// The same model with a later support end (support periods are extended, never shortened).
    public func supported(until date: CalendarDate) -> ProductModel {
        ProductModel(
            id: id, name: name, maker: maker, telemetry: telemetry, commands: commands, supportEnds: date,
            purposes: purposes)
    }

    public func purpose(_ id: String?) -> DataPurpose? { purposes.first { $0.id == id } }

    /// The purposes an owner may refuse.
    public var optionalPurposes: [DataPurpose] { purposes.filter { !$0.essential } }

    static let fieldList = FieldKind.array(of: .object(DataField.schema), maxItems: 64)

    /// The JSON a maker writes (file or API).
    public static let schema = ObjectSchema([
        FieldSchema("id", .string(minLength: 2, maxLength: 32), "lowercase slug, e.g. thermostat-t1"),
        FieldSchema("name", .string(maxLength: 100)),
        FieldSchema("maker", .string(maxLength: 100)),
        FieldSchema("supportEnds", .date, "last day of security updates (YYYY-MM-DD)"),
        FieldSchema(
            "purposes", .array(of: .object(DataPurpose.schema), maxItems: 16),
            "why its devices collect data; at least one essential"),
        FieldSchema("telemetry", .array(of: .object(DataField.telemetrySchema), maxItems: 64)),
        FieldSchema(
            "commands",
            .array(
                of: .object(
                    ObjectSchema([
                        FieldSchema(
                            "name", .string(maxLength: 32, pattern: DataField.identifier),
                            "identifier: letters, digits and '_', starting with a letter"),
                        FieldSchema("parameters", fieldList),
                        FieldSchema(
                            "data", .object(DataDeclaration.schema), "what the command is as personal data"),
                    ])), maxItems: 32)
        ),
    ])

    public init(json: JSONValue) throws {
        let o = try Self.schema.validate(json)
        let id = try ProductModelID(o.string("id")!)
        let purposes = try o.array("purposes").enumerated().map { try DataPurpose(json: $1, path: "purposes[\($0)]") }
        try Self.requireDistinct(purposes.map(\.id), field: "purposes")
        guard purposes.contains(where: \.essential) else {
            throw HearthError.invalid("purposes", "declare at least one essential purpose (what the device is for)")
        }
        let telemetry = try o.array("telemetry").enumerated().map {
            try DataField(json: $1, path: "telemetry[\($0)]", purposes: purposes)
        }
        try Self.requireDistinct(telemetry.map(\.name), field: "telemetry")
        for (i, field) in telemetry.enumerated() where field.required {
            // An owner can refuse an optional purpose, so its fields cannot be required.
            if purposes.first(where: { $0.id == field.declaration?.purpose })?.essential == false {
                throw HearthError.invalid(
                    "telemetry[\(i)].required", "a field of an optional purpose cannot be required")
            }
        }
        let commands = try o.array("commands").enumerated().map { i, command -> CommandSpec in
            let c = ValidatedObject(members: { if case .object(let m) = command { m } else { [:] } }())
            let parameters = try c.array("parameters").enumerated().map {
                try DataField(json: $1, path: "commands[\(i)].parameters[\($0)]")
            }
            try Self.requireDistinct(parameters.map(\.name), field: "commands[\(i)].parameters")
            try DataField.requireIdentifier(c.string("name")!, field: "commands[\(i)].name")
            let declaration = try DataDeclaration(
                json: c.members["data"]!, path: "commands[\(i)].data", purposes: purposes)
            return CommandSpec(name: c.string("name")!, parameters: parameters, declaration: declaration)
        }
        try Self.requireDistinct(commands.map(\.name), field: "commands")
        guard let ends = CalendarDate(o.string("supportEnds")!) else {
            throw HearthError.invalid("supportEnds", "expected YYYY-MM-DD")
        }
        self.init(
            id: id, name: o.string("name")!, maker: o.string("maker")!, telemetry: telemetry, commands: commands,
            supportEnds: ends, purposes: purposes)
    }

    static func requireDistinct(_ names: [String], field: String) throws {
        guard Set(names).count == names.count else { throw HearthError.invalid(field, "names must be distinct") }
    }

    public var json: JSONValue {
        [
            "id": .string(id.rawValue), "name": .string(name), "maker": .string(maker),
            "supportEnds": .string(supportEnds.description),
            "purposes": .array(purposes.map(\.json)),
            "telemetry": .array(telemetry.map(\.json)),
            "commands": .array(
                commands.map { command in
                    var o: [String: JSONValue] = [
                        "name": .string(command.name), "parameters": .array(command.parameters.map(\.json)),
                    ]
                    if let declaration = command.declaration { o["data"] = declaration.json }
                    return .object(o)
                }),
        ]
    }

    /// A thermostat and a lock, for the demo and the tests.
    public static func demoModels() -> [ProductModel] {
        func data(_ category: String, _ purpose: String, personal: Bool, days: Int) -> JSONValue {
            [
                "category": .string(category), "purpose": .string(purpose), "personal": .bool(personal),
                "recipients": ["you", "the operator of this Hearth service, who stores it for you"],
                "retentionDays": .number(Double(days)),
            ]
        }
        let thermostat: JSONValue = [
            "id": "thermostat-t1", "name": "Hearth Thermostat T1", "maker": "Hearth Demo Devices Ltd",
            "supportEnds": "2031-12-31",
            "purposes": [
                [
                    "id": "operation", "essential": true,
                    "description": "Keep your home at the temperature you set, and show you its readings and history.",
                ],
                [
                    "id": "comfort", "essential": false,
                    "description":
                        "Show you the humidity in the room and its history, so you can spot damp or dry air.",
                ],
            ],
            "telemetry": [
                [
                    "name": "temperature", "type": "number", "unit": "°C", "min": -40, "max": 85,
                    "data": data("environmental", "operation", personal: false, days: 365),
                ],
                [
                    "name": "humidity", "type": "number", "unit": "%", "min": 0, "max": 100, "required": false,
                    "data": data("environmental", "comfort", personal: false, days: 90),
                ],
                ["name": "heating", "type": "boolean", "data": data("usage", "operation", personal: true, days: 365)],
                [
                    "name": "target", "type": "number", "unit": "°C", "min": 5, "max": 30,
                    "data": data("usage", "operation", personal: true, days: 365),
                ],
            ],
            "commands": [
                [
                    "name": "setTarget",
                    "parameters": [["name": "target", "type": "number", "unit": "°C", "min": 5, "max": 30]],
                    "data": data("usage", "operation", personal: true, days: 365),
                ]
            ],
        ]
        let lock: JSONValue = [
            "id": "lock-l1", "name": "Hearth Smart Lock L1", "maker": "Hearth Demo Devices Ltd",
            "supportEnds": "2032-06-30",
            "purposes": [
                [
                    "id": "operation", "essential": true,
                    "description": "Lock and unlock your door when you ask, and show you whether it is locked.",
                ],
                [
                    "id": "maintenance", "essential": false,
                    "description": "Show you the battery level, so you can change the batteries before the lock stops.",
                ],
            ],
            "telemetry": [
                [
                    "name": "state", "type": "enum", "values": ["locked", "unlocked", "jammed"],
                    "data": data("security-state", "operation", personal: true, days: 30),
                ],
                [
                    "name": "battery", "type": "integer", "unit": "%", "min": 0, "max": 100, "required": false,
                    "data": data("diagnostics", "maintenance", personal: false, days: 90),
                ],
            ],
            "commands": [
                [
                    "name": "lock", "parameters": [],
                    "data": data("security-state", "operation", personal: true, days: 30),
                ],
                [
                    "name": "unlock", "parameters": [],
                    "data": data("security-state", "operation", personal: true, days: 30),
                ],
            ],
        ]
        // The literals above are checked by the same parser as any maker's file.
        return [thermostat, lock].compactMap { try? ProductModel(json: $0) }
    }
}

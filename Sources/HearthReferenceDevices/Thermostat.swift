import Foundation
import HearthCore
import HearthDevice

/// A room with a heater, deterministic for a seed: it cools toward the outside temperature
/// (Newton's law) and the heater adds a fixed power; small seeded noise stands in for draughts.
public struct RoomSimulation: Sendable {
    public private(set) var temperature: Double
    public private(set) var humidity: Double
    public let outside: Double
    /// Per second: the share of the indoor–outdoor difference lost.
    public let loss: Double
    /// °C per second the heater adds.
    public let heaterPower: Double
    var random: SplitMix64

    public init(temperature: Double = 19, outside: Double = 5, humidity: Double = 45, seed: UInt64 = 1) {
        self.temperature = temperature
        self.outside = outside
        self.humidity = humidity
        loss = 1.0 / 3600
        heaterPower = 0.012
        random = SplitMix64(state: seed)
    }

    public mutating func step(seconds: Double, heating: Bool) {
        var left = seconds
        while left > 0 {
            let dt = min(1, left)
            temperature += (-loss * (temperature - outside) + (heating ? heaterPower : 0)) * dt
            temperature += Double.random(in: -0.005...0.005, using: &random)
            humidity = min(100, max(0, humidity + Double.random(in: -0.02...0.02, using: &random) * dt))
            left -= dt
        }
    }
}

/// The thermostat's own logic: regulate on the last setpoint with a hysteresis band, whatever
/// the network does (Code of Practice guideline 9).
public struct Thermostat: Sendable {
    public static let model = "thermostat-t1"
    public private(set) var room: RoomSimulation
    public private(set) var target: Double
    public private(set) var heating = false
    /// The heater switches on below `target - hysteresis` and off above `target + hysteresis`.
    public let hysteresis: Double
    public private(set) var now: Date

    public init(room: RoomSimulation, target: Double = 21, hysteresis: Double = 0.3, now: Date) {
        self.room = room
        self.target = target
        self.hysteresis = hysteresis
        self.now = now
    }

    /// Runs the room and the control loop forward to `time`, a second at a time.
    public mutating func advance(to time: Date) {
        while now < time {
            let dt = min(1, time.timeIntervalSince(now))
            if room.temperature < target - hysteresis { heating = true }
            if room.temperature > target + hysteresis { heating = false }
            room.step(seconds: dt, heating: heating)
            now = now.addingTimeInterval(dt)
        }
    }

    /// The model's telemetry fields.
    public var reading: [String: JSONValue] {
        [
            "temperature": .number((room.temperature * 100).rounded() / 100),
            "humidity": .number((room.humidity * 10).rounded() / 10),
            "heating": .bool(heating), "target": .number(target),
        ]
    }

    /// `setTarget {target}`; the agent has already checked it against the model, and the device
    /// checks its own limits again.
    public mutating func apply(_ command: DeviceCommand) -> CommandReply {
        guard command.name == "setTarget", case .number(let value)? = command.parameters["target"] else {
            return .refused("unknown command")
        }
        guard value.isFinite, (5...30).contains(value) else { return .refused("target must be between 5 and 30 °C") }
        target = value
        return .ok
    }
}

/// A smart lock: a local keypad/button works with or without the network; each change becomes a
/// reading (an event with the device's time), queued until the server has it.
public struct SmartLock: Sendable {
    public static let model = "lock-l1"
    public enum State: String, Sendable {
        case locked, unlocked, jammed
    }

    public private(set) var state: State = .locked
    /// Battery in per cent; each motor run uses a little.
    public private(set) var battery: Double = 100

    /// - Parameter state: the state kept on the device's storage from before a restart.
    public init(state: State = .locked) {
        self.state = state
    }

    /// A local event: `lock`, `unlock` or `toggle` (the button). Returns false for anything else.
    public mutating func press(_ input: String) -> Bool {
        switch input.trimmingCharacters(in: .whitespacesAndNewlines).lowercased() {
        case "lock": run(to: .locked)
        case "unlock": run(to: .unlocked)
        case "toggle", "button": run(to: state == .locked ? .unlocked : .locked)
        case "jam": state = .jammed
        case "clear": state = .locked
        default: return false
        }
        return true
    }

    public mutating func apply(_ command: DeviceCommand) -> CommandReply {
        guard state != .jammed else { return .failed("the bolt is jammed; clear it by hand") }
        switch command.name {
        case "lock": run(to: .locked)
        case "unlock": run(to: .unlocked)
        default: return .refused("unknown command")
        }
        return .ok
    }

    mutating func run(to target: State) {
        guard state != .jammed, state != target else { return }
        state = target
        battery = max(0, battery - 0.05)
    }

    public var reading: [String: JSONValue] {
        ["state": .string(state.rawValue), "battery": .number(battery.rounded(.down))]
    }
}

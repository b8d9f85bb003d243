import Foundation

/// A child process whose standard output and error are collected while it runs. For tests that
/// drive real programs: `hearth` itself, curl, openssl, mosquitto's clients.
public final class ChildProcess: @unchecked Sendable {
    public let process = Process()
    private let lock = NSLock()
    private var collected = Data()
    private var collectedErrors = Data()

    /// Starts `executable`; its standard error joins its output in ``text`` unless `separateErrors`,
    /// then it is in ``errorText`` alone.
    public init(
        _ executable: URL, _ arguments: [String], separateErrors: Bool = false, environment: [String: String] = [:]
    ) throws {
        process.executableURL = executable
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let pipe = Pipe()
        process.standardOutput = pipe
        collect(pipe, errors: false)
        if separateErrors {
            let errors = Pipe()
            process.standardError = errors
            collect(errors, errors: true)
        } else {
            process.standardError = pipe
        }
        try process.run()
    }

    /// Appends what `pipe` delivers, as it arrives, to the output or (`errors`) the error text.
    private func collect(_ pipe: Pipe, errors: Bool) {
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self, !data.isEmpty else { return }
            self.lock.withLock {
                if errors { self.collectedErrors.append(data) } else { self.collected.append(data) }
            }
        }
    }

    /// Standard error so far, when it was asked for apart.
    public var errorText: String { lock.withLock { String(decoding: collectedErrors, as: UTF8.self) } }

    public convenience init(_ path: String, _ arguments: [String]) throws {
        try self.init(URL(fileURLWithPath: path), arguments)
    }

    /// Everything printed so far.
    public var text: String { lock.withLock { String(decoding: collected, as: UTF8.self) } }

    /// Waits until the output contains `marker`, the process exits, or `timeout` passes.
    @discardableResult
    public func wait(for marker: String, timeout: TimeInterval = 60) async throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if text.contains(marker) { return true }
            if !process.isRunning {
                try await Task.sleep(for: .milliseconds(50))
                return text.contains(marker)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    /// The exit status, or nil if it is still running after `timeout` (then it is terminated).
    public func waitForExit(timeout: TimeInterval = 60) async throws -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        if process.isRunning {
            process.terminate()
            return nil
        }
        try await Task.sleep(for: .milliseconds(50))  // the last output
        return process.terminationStatus
    }

    public func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }

    /// Runs a program to completion: its exit status and output.
    public static func run(_ path: String, _ arguments: [String], timeout: TimeInterval = 300) async throws -> (
        status: Int32, output: String
    ) {
        let child = try ChildProcess(path, arguments)
        let status = try await child.waitForExit(timeout: timeout) ?? -1
        return (status, child.text)
    }
}

/// The path of a system tool the tests need, or nil to skip. `.ci/run` sets HEARTH_REQUIRE_TOOLS=1,
/// which turns a missing tool into a failure instead.
public func requiredTool(_ name: String, package: String) throws -> String? {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"]
    where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
        return "\(dir)/\(name)"
    }
    if ProcessInfo.processInfo.environment["HEARTH_REQUIRE_TOOLS"] == "1" {
        throw MissingTool(description: "\(name) is required by this test: apt-get install \(package)")
    }
    return nil
}

/// For `@Test(.enabled(if: toolsPresentOrRequired("mosquitto_pub")))`: a test whose tools are
/// missing shows as skipped (not passed), except under HEARTH_REQUIRE_TOOLS=1 (CI), where it runs
/// and ``requiredTool(_:package:)`` fails it.
public func toolsPresentOrRequired(_ names: String...) -> Bool {
    if ProcessInfo.processInfo.environment["HEARTH_REQUIRE_TOOLS"] == "1" { return true }
    return names.allSatisfy { name in
        ["/usr/bin", "/usr/local/bin", "/bin"].contains {
            FileManager.default.isExecutableFile(atPath: "\($0)/\(name)")
        }
    }
}

public struct MissingTool: Error, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}

/// A python3 (from PATH) that can import `module`, or nil to skip (a failure under
/// HEARTH_REQUIRE_TOOLS=1, as for ``requiredTool(_:package:)``).
public func requiredPython(module: String, package: String) throws -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    for dir in path.split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(dir)/python3") {
        let python = "\(dir)/python3"
        let check = Process()
        check.executableURL = URL(fileURLWithPath: python)
        check.arguments = ["-c", "import \(module)"]
        check.standardOutput = FileHandle.nullDevice
        check.standardError = FileHandle.nullDevice
        try check.run()
        check.waitUntilExit()
        if check.terminationStatus == 0 { return python }
    }
    if ProcessInfo.processInfo.environment["HEARTH_REQUIRE_TOOLS"] == "1" {
        throw MissingTool(description: "python3 with \(module) is required by this test: pip install \(package)")
    }
    return nil
}

/// `Scripts/validate_schema.py`: validates JSON against the official CSAF 2.0 or OSV schema.
public var schemaScript: String { Bundle.module.url(forResource: "Scripts/validate_schema", withExtension: "py")!.path }

/// `Scripts/tuf_check.py`: python-tuf verifies a root.json and prints its canonical JSON.
public var tufScript: String { Bundle.module.url(forResource: "Scripts/tuf_check", withExtension: "py")!.path }

/// An executable this package built, next to the test bundle.
public func builtProduct(_ name: String) -> URL {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
    // On Linux the test runner is <build>/debug/<package>PackageTests.xctest.
    if dir.pathExtension == "xctest" { dir = dir.deletingLastPathComponent() }
    return dir.appendingPathComponent(name)
}

/// `Scripts/mqtt_client.py`: paho-mqtt driven by the tests (publish, answer commands, conformance).
public var pahoScript: String { Bundle.module.url(forResource: "Scripts/mqtt_client", withExtension: "py")!.path }

extension ChildProcess {
    /// For `mosquitto_sub -d …`: waits until the broker acknowledged the subscription, so a test
    /// never relies on a fixed sleep (machines under load are slow).
    public func waitForSubscription(timeout: TimeInterval = 30) async throws -> Bool {
        try await wait(for: "received SUBACK", timeout: timeout)
    }

    /// The lines `mosquitto_sub -d` printed that are messages, not its debug log.
    public var messageLines: [String] {
        text.split(separator: "\n").map(String.init).filter {
            !$0.hasPrefix("Client ") && !$0.hasPrefix("Subscribed (")
        }
    }
}

extension ChildProcess {
    /// Starts `path` with its standard output line-buffered (through coreutils' stdbuf), so that a
    /// test can react to what it prints before it exits (`mosquitto_sub -d`, for one).
    public static func lineBuffered(_ path: String, _ arguments: [String]) throws -> ChildProcess {
        try ChildProcess("/usr/bin/stdbuf", ["-oL", "-eL", path] + arguments)
    }
}

/// Real Chromium through the public forms (`Scripts/browser_flows.py`, Selenium).
public var browserFlowsScript: String {
    Bundle.module.url(forResource: "Scripts/browser_flows", withExtension: "py")!.path
}

/// What the schemathesis conformance run allows beyond the OpenAPI document (`Scripts/schemathesis.toml`).
public var schemathesisConfig: String {
    Bundle.module.url(forResource: "Scripts/schemathesis", withExtension: "toml")!.path
}

/// The raw-request HTTPS fuzzer (`Scripts/http_fuzz.py`).
public var httpFuzzScript: String { Bundle.module.url(forResource: "Scripts/http_fuzz", withExtension: "py")!.path }

/// python-tuf's `ngclient.Updater` against a Hearth server.
public var tufUpdaterScript: String { Bundle.module.url(forResource: "Scripts/tuf_updater", withExtension: "py")!.path }

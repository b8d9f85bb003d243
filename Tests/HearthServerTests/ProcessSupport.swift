import Foundation

/// The built `hearth` executable, next to the test bundle.
func hearthBinary() -> URL {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
    // On Linux the test runner is <build>/debug/<package>PackageTests.xctest.
    if dir.pathExtension == "xctest" { dir = dir.deletingLastPathComponent() }
    return dir.appendingPathComponent("hearth")
}

/// A `hearth` process whose output is collected as it comes.
final class HearthProcess: @unchecked Sendable {
    let process: Process
    private let output = LockedText()

    init(_ arguments: [String]) throws {
        process = Process()
        process.executableURL = hearthBinary()
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        let output = self.output
        pipe.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            if !data.isEmpty { output.append(String(decoding: data, as: UTF8.self)) }
        }
        try process.run()
    }

    var text: String { output.value }

    /// Waits until the output contains `marker` (or the process exits, or `timeout` passes).
    @discardableResult
    func wait(for marker: String, timeout: TimeInterval = 60) async throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if text.contains(marker) { return true }
            if !process.isRunning { return text.contains(marker) }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    func waitForExit(timeout: TimeInterval = 60) async throws -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        return process.isRunning ? nil : process.terminationStatus
    }

    func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }

    /// The HTTPS base URL the server printed.
    var baseURL: String? {
        guard let range = text.range(of: #"Hearth is serving (https://\S+)"#, options: .regularExpression) else { return nil }
        return String(text[range].split(separator: " ")[3])
    }

    /// Runs a hearth command to completion.
    static func run(_ arguments: [String], timeout: TimeInterval = 300) async throws -> (status: Int32, output: String) {
        let p = try HearthProcess(arguments)
        let status = try await p.waitForExit(timeout: timeout) ?? -1
        try await Task.sleep(for: .milliseconds(50))
        return (status, p.text)
    }
}

/// Runs a tool such as curl and returns its exit status and standard output.
func runTool(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = arguments
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = FileHandle.nullDevice
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// curl is needed by the process tests; CI installs it and sets HEARTH_REQUIRE_TOOLS=1, which turns
/// a missing tool into a failure instead of a skip.
func curlPath() throws -> String? {
    for path in ["/usr/bin/curl", "/usr/local/bin/curl"] where FileManager.default.isExecutableFile(atPath: path) { return path }
    if ProcessInfo.processInfo.environment["HEARTH_REQUIRE_TOOLS"] == "1" {
        struct MissingTool: Error {}
        throw MissingTool()
    }
    return nil
}

func temporaryFolder() -> URL {
    FileManager.default.temporaryDirectory.appendingPathComponent("hearth-proc-\(UUID().uuidString)")
}

final class LockedText: @unchecked Sendable {
    private let lock = NSLock()
    private var text = ""
    func append(_ more: String) { lock.withLock { text += more } }
    var value: String { lock.withLock { text } }
}

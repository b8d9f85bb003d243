import Foundation
import HearthTestSupport

/// The built `hearth` executable, next to the test bundle.
func hearthBinary() -> URL { builtProduct("hearth") }

/// A running `hearth` command.
typealias HearthProcess = ChildProcess

extension ChildProcess {
    convenience init(_ hearthArguments: [String]) throws {
        try self.init(hearthBinary(), hearthArguments)
    }

    /// Runs a hearth command to completion.
    static func run(_ hearthArguments: [String], timeout: TimeInterval = 300) async throws -> (status: Int32, output: String) {
        try await run(hearthBinary().path, hearthArguments, timeout: timeout)
    }

    /// The HTTPS base URL the server printed.
    var baseURL: String? {
        guard let range = text.range(of: #"Hearth is serving (https://\S+)"#, options: .regularExpression) else { return nil }
        return String(text[range].split(separator: " ")[3])
    }
}

/// Runs a tool such as curl to completion.
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

func curlPath() throws -> String? { try requiredTool("curl", package: "curl") }

func temporaryFolder() -> URL {
    FileManager.default.temporaryDirectory.appendingPathComponent("hearth-proc-\(UUID().uuidString)")
}

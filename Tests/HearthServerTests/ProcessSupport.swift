import Foundation
import HearthCore
import HearthTestSupport
import Testing

/// The built `hearth` executable, next to the test bundle.
func hearthBinary() -> URL { builtProduct("hearth") }

/// A running `hearth` command.
typealias HearthProcess = ChildProcess

extension ChildProcess {
    convenience init(_ hearthArguments: [String]) throws {
        try self.init(hearthBinary(), hearthArguments)
    }

    /// Runs a hearth command to completion.
    static func run(_ hearthArguments: [String], timeout: TimeInterval = 300) async throws -> (
        status: Int32, output: String
    ) {
        try await run(hearthBinary().path, hearthArguments, timeout: timeout)
    }

    /// The HTTPS base URL the server printed.
    var baseURL: String? {
        guard let range = text.range(of: #"Hearth is serving (https://\S+)"#, options: .regularExpression) else {
            return nil
        }
        return String(text[range].split(separator: " ")[3])
    }
}

func curlPath() throws -> String { try requiredTool("curl", package: "curl") }

func temporaryFolder() -> URL {
    FileManager.default.temporaryDirectory.appendingPathComponent("hearth-proc-\(UUID().uuidString)")
}

/// Provisions `count` locks with the real `hearth factory provision` into `dir/bundles` and reads
/// the first one's label: its serial and setup code.
/// `extra`: options every command of the deployment takes (`--database …`).
func provisionedLock(data: String, in dir: URL, count: Int, extra: [String] = []) async throws -> (
    serial: String, code: String
) {
    let bundles = dir.appendingPathComponent("bundles")
    let provision = try await HearthProcess.run(
        [
            "factory", "provision", "--data", data, "--model", "lock-l1", "--count", "\(count)", "--out", bundles.path,
        ] + extra)
    #expect(provision.status == 0, "\(provision.output)")
    let serial = try #require(try FileManager.default.contentsOfDirectory(atPath: bundles.path).sorted().first)
    let bundle = try JSONValue.parse(
        Array(try Data(contentsOf: bundles.appendingPathComponent(serial).appendingPathComponent("bundle.json"))))
    guard case .object(let b) = bundle, case .string(let code) = b["setupCode"] else {
        throw HearthError(.integrity, "no setup code in the bundle of \(serial)")
    }
    return (serial, code)
}

import Foundation
import HearthTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The systemd unit in `deploy/` (the security-defects issue added it; issue 16 made it
/// `Type=notify`): systemd's own checker accepts it, its exposure level is 2.0 or lower ("OK"), and
/// the server really sends `READY=1` once it serves and `STOPPING=1` when told to stop.
@Suite struct SystemdTests {
    static var unit: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("deploy/hearth.service")
    }

    /// The unit with its ExecStart pointing at the built binary (verify checks it is executable).
    func installedCopy() throws -> (URL, URL) {
        let dir = temporaryFolder()
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let text = try String(contentsOf: Self.unit, encoding: .utf8)
            .replacingOccurrences(of: "/usr/local/bin/hearth", with: hearthBinary().path)
        let copy = dir.appendingPathComponent("hearth.service")
        try text.write(to: copy, atomically: true, encoding: .utf8)
        return (dir, copy)
    }

    @Test(.enabled(if: toolsPresentOrRequired("systemd-analyze")))
    func theUnitPassesSystemdsChecksWithExposureTwoOrLower() async throws {
        let analyze = try requiredTool("systemd-analyze", package: "systemd")
        let (dir, copy) = try installedCopy()
        defer { try? FileManager.default.removeItem(at: dir) }
        let verify = try await runTool("/bin/sh", ["-c", "'\(analyze)' verify '\(copy.path)' 2>&1"])
        #expect(verify.status == 0 && verify.output.isEmpty, "systemd-analyze verify: \(verify.output)")
        let security = try await runTool(analyze, ["security", "--offline=true", copy.path])
        let overall = try #require(
            security.output.firstMatch(of: #/Overall exposure level for hearth\.service: (\d+\.\d+) (\w+)/#),
            "\(security.output)")
        #expect(Double(overall.1)! <= 2.0 && overall.2 == "OK", "exposure \(overall.1) \(overall.2)")
        let text = try String(contentsOf: Self.unit, encoding: .utf8)
        #expect(text.contains("Type=notify"))
    }

    @Test(.enabled(if: toolsPresentOrRequired("curl")))
    func theServerNotifiesSystemdWhenReadyAndWhenStopping() async throws {
        let curl = try requiredTool("curl", package: "curl")
        let dir = temporaryFolder()
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let socketPath = dir.appendingPathComponent("notify").path
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(socketPath.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(bound == 0)
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        func receive() -> String {
            var buffer = [UInt8](repeating: 0, count: 512)
            let n = recv(fd, &buffer, buffer.count, 0)
            return n > 0 ? String(decoding: buffer[..<n], as: UTF8.self) : ""
        }

        let data = dir.appendingPathComponent("data").path
        let server = try ChildProcess(
            hearthBinary(),
            [
                "serve", "--data", data, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                "--mqtt-listen", "127.0.0.1:0",
            ], environment: ["NOTIFY_SOCKET": socketPath])
        defer { server.signal(SIGKILL) }
        #expect(receive() == "READY=1", "\(server.text)")
        // At that moment the server serves: /readyz says so.
        #expect(try await server.wait(for: "Hearth is serving"), "\(server.text)")
        let base = try #require(server.baseURL, "\(server.text)")
        let ready = try await runTool(curl, ["-s", "--cacert", data + "/root-ca.pem", base + "/readyz"])
        #expect(ready.output == #"{"status":"ready"}"#)
        server.signal(SIGTERM)
        #expect(receive() == "STOPPING=1")
        #expect(try await server.waitForExit(timeout: 60) == 0)
    }
}

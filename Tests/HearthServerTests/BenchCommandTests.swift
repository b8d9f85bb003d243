import Foundation
import HearthCore
import HearthFixtures
import HearthTestSupport
import Testing

/// The benchmark commands, each run once at the smallest size it takes, so that whoever repeats
/// BENCHMARKS.md finds them working. Their figures are not judged here (a benchmark is not a timed
/// test): what they print must be whole and count what they were asked to do.
@Suite struct BenchCommandTests {
    /// The JSON line a bench command prints last (`{…}`, or `JSON {…}` after a table).
    static func figures(_ output: String) throws -> JSONValue {
        let line = try #require(
            output.split(separator: "\n").last { $0.hasPrefix("{") || $0.hasPrefix("JSON {") }, "\(output)")
        return try JSONValue.parse(Array(line.drop { $0 != "{" }.utf8))
    }

    @Test func theStorageAndMemoryBenchmarksRunAtTheirSmallestSizes() async throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        func folder(_ name: String) -> String { dir.appendingPathComponent(name).path }

        let rights = try await HearthProcess.run([
            "bench", "data-rights", "--data", folder("rights"), "--devices", "2", "--readings", "100",
        ])
        #expect(rights.status == 0, "\(rights.output)")
        let exported = try Self.figures(rights.output)
        #expect(exported["readings"] == 100 && exported["readingsLeft"] == 0, "\(rights.output)")

        let ingest = try await HearthProcess.run([
            "bench", "ingest", "--data", folder("ingest"), "--devices", "10", "--owners", "2", "--readings", "1000",
            "--batch", "100", "--rounds", "1",
        ])
        #expect(ingest.status == 0, "\(ingest.output)")
        #expect(try Self.figures(ingest.output)["devices"] == 10, "\(ingest.output)")

        let detectors = try await HearthProcess.run(["bench", "detectors", "--devices", "100"])
        #expect(detectors.status == 0 && detectors.output.contains("detectors: 100 devices"), "\(detectors.output)")

        let pages = try await HearthProcess.run([
            "bench", "pages", "--data", folder("pages"), "--out", folder("pages-out"), "--devices", "1000",
            "--readings", "60480",
        ])
        #expect(pages.status == 0 && pages.output.contains("1000 devices, 60480 readings"), "\(pages.output)")

        let fleet = try await HearthProcess.run([
            "bench", "assess-fleet", "--data", folder("assess"), "--devices", "1000", "--models", "2",
        ])
        #expect(fleet.status == 0 && fleet.output.contains("1000 devices over 2 models"), "\(fleet.output)")

        // Out-of-range sizes are refused with the range, before anything is made.
        let tiny = try await HearthProcess.run(["bench", "ingest", "--data", folder("tiny"), "--readings", "5"])
        #expect(tiny.status != 0 && tiny.output.contains("1,000 to 10,000,000 readings"), "\(tiny.output)")
        #expect(!FileManager.default.fileExists(atPath: folder("tiny")))
    }

    /// `bench prepare` makes a deployment and bundles; `bench run` drives them against `hearth
    /// serve` over mutual TLS in each mode.
    @Test func benchRunDrivesPreparedDevicesAgainstAServer() async throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("data").path
        let out = dir.appendingPathComponent("out").path
        let prepared = try await HearthProcess.run(["bench", "prepare", "--data", data, "--out", out, "--devices", "5"])
        #expect(prepared.status == 0, "\(prepared.output)")
        let server = try HearthProcess([
            "serve", "--data", data, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--mqtt-listen",
            "127.0.0.1:0",
        ])
        defer { server.signal(SIGKILL) }
        #expect(try await server.wait(for: "mqtts://"), "\(server.text)")
        let port = try #require(
            server.text.firstMatch(of: /mqtts:\/\/127\.0\.0\.1:(\d+)/).flatMap { Int($0.output.1) }, "\(server.text)")
        let bundles = URL(fileURLWithPath: out).appendingPathComponent("bundles").path
        for mode in ["fanin", "connect", "idle"] {
            let run = try await HearthProcess.run([
                "bench", "run", "--mode", mode, "--port", "\(port)", "--bundles", bundles, "--devices", "5",
                "--messages", "20", "--label", "test", "--server-pid", "\(server.processIdentifier)",
            ])
            #expect(run.status == 0, "\(mode): \(run.output)")
            let figures = try Self.figures(run.output)
            #expect(figures["label"] == "test" && figures["mode"] == .string(mode), "\(run.output)")
            if mode == "fanin" {
                #expect(
                    figures["acknowledged"] == 100 && figures["lost"] == 0, "every reading acknowledged: \(run.output)")
            }
        }
    }

    @Test(.enabled(if: TestPostgres.available))
    func benchStorageComparesSQLiteWithPostgreSQL() async throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        try await TestPostgres.withAddress { address, passwordFile in
            let run = try await HearthProcess.run(
                [
                    "bench", "storage", "--data", dir.appendingPathComponent("data").path, "--database", address,
                    "--devices", "10", "--owners", "2", "--readings", "1000", "--batch", "100", "--rounds", "1",
                ] + (passwordFile.map { ["--database-password-file", $0] } ?? []))
            #expect(
                run.status == 0 && run.output.contains("median (1 writer, batches of 100): SQLite")
                    && run.output.contains("PostgreSQL/SQLite"), "\(run.output)")
        }
    }
}

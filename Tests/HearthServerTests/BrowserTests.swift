import Foundation
import HearthCore
import HearthTestSupport
import Testing

/// The suites that run a real server with a heavy client (Chromium, the fuzzers) in this module: one
/// at a time, so together they do not starve the timing-sensitive tests of a two-core machine.
@Suite(.serialized) enum HeavyServerTests {}

extension HeavyServerTests {
    @Suite struct BrowserTests {
        /// The whole web face in Chromium against a running demo (issue 13): owners, the operator, a
        /// researcher and an attacker's page; axe-core and 375 px on every page visited.
        @Test(.enabled(if: toolsPresentOrRequired("chromium", "chromedriver")))
        func ownersOperatorsAndResearchersUseEveryPageInChromium() async throws {
            _ = try requiredTool("chromium", package: "chromium")
            _ = try requiredTool("chromedriver", package: "chromium-driver")
            let python = try requiredPython(module: "selenium", package: "selenium")
            _ = try requiredPython(module: "axe_selenium_python", package: "axe-selenium-python")
            let dir = temporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let data = dir.appendingPathComponent("data")
            let demo = try HearthProcess([
                "demo", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0",
                "--devices", "1", "--data",
                data.path,
            ])
            #expect(try await demo.wait(for: "Press Ctrl-C to stop."), "\(demo.text)")
            let base = try #require(demo.baseURL)
            let link = try #require(
                demo.text.components(separatedBy: "\n").first { $0.contains("/setup/") }?.trimmingCharacters(
                    in: .whitespaces))
            // One more lock, not running, for the new owner to set up from its label.
            let (serial, code) = try await provisionedLock(data: data.path, in: dir, count: 1)
            let run = try await ChildProcess.run(
                python,
                [
                    browserFlowsScript, base, link, serial, code, data.appendingPathComponent("demo-owner.json").path,
                    hearthBinary().path, data.path,
                ], timeout: 600
            )
            print(
                run.output.split(separator: "\n").filter { $0.hasPrefix("browser steps:") || $0.hasPrefix("axe-core") }
                    .joined(separator: "\n"))
            for line in run.output.split(separator: "\n") where line.hasPrefix("FAILED") { Issue.record("\(line)") }
            #expect(run.status == 0, "\(run.output.suffix(4000))")
            demo.signal(SIGINT)
            _ = try await demo.waitForExit()
        }
    }
}

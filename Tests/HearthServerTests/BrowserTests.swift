import Foundation
import HearthCore
import HearthTestSupport
import Testing

/// The public forms in real headless Chromium against `hearth serve` (issue 13, first part): the
/// review found that no browser could sign up, sign in, create the operator or file a report,
/// while curl with a hand-set Origin could.
/// The suites that run a real server with a heavy client (Chromium, the fuzzers) in this module: one
/// at a time, so together they do not starve the timing-sensitive tests of a two-core machine.
@Suite(.serialized) enum HeavyServerTests {}

extension HeavyServerTests {
@Suite struct BrowserTests {
    @Test(.enabled(if: toolsPresentOrRequired("chromium", "chromedriver"))) func thePublicFormsWorkInChromiumAndCrossSitePostsAreRefused() async throws {
        guard try requiredTool("chromium", package: "chromium") != nil, try requiredTool("chromedriver", package: "chromium-driver") != nil,
            let python = try requiredPython(module: "selenium", package: "selenium")
        else { return }
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try await dataFolder(in: dir, with: ProductModel.demoModels()[1])
        let (serial, code) = try await provisionedLock(data: data, in: dir, count: 1)

        let server = try HearthProcess(["serve", "--data", data, "--listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0"])
        #expect(try await server.wait(for: "Clients verify it"), "\(server.text)")
        let base = try #require(server.baseURL)
        let link = try #require(server.text.components(separatedBy: "\n").first { $0.contains("/setup/") }?.trimmingCharacters(in: .whitespaces))
        let run = try await ChildProcess.run(python, [browserFlowsScript, base, link, serial, code], timeout: 300)
        print(run.output.split(separator: "\n").first { $0.hasPrefix("browser steps:") } ?? "browser steps: no summary")
        for line in run.output.split(separator: "\n") where line.hasPrefix("FAILED") { Issue.record("\(line)") }
        #expect(run.status == 0, "\(run.output.suffix(3000))")
        server.signal(SIGTERM)
        _ = try await server.waitForExit()
    }
}
}

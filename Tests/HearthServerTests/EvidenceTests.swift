import Foundation
import HearthTestSupport
import Hummingbird
import Logging
import Testing

@testable import HearthServer

/// The tests as evidence: every route and command is exercised by some test, and every test the
/// documents cite exists. Both read the test sources themselves, so the list of what is exercised
/// is the tests, not a list kept by hand.
@Suite struct EvidenceTests {
    /// The package's root folder (this file is `Tests/HearthServerTests/EvidenceTests.swift`).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// Every test source (Swift, and the Python scripts the tests drive), by path from the root;
    /// without this file unless `includingChecks` (the checks name routes and commands, they do not
    /// exercise them; the documents may cite the checks themselves).
    static func testSources(includingChecks: Bool = false) throws -> [String: String] {
        var sources: [String: String] = [:]
        for folder in ["Tests", "Sources/HearthTestSupport/Scripts"] {
            let base = root.appendingPathComponent(folder)
            let files = FileManager.default.enumerator(at: base, includingPropertiesForKeys: nil)
            while let url = files?.nextObject() as? URL {
                guard ["swift", "py"].contains(url.pathExtension),
                    includingChecks || url.lastPathComponent != "EvidenceTests.swift"
                else { continue }
                sources["\(folder)/\(url.path.dropFirst(base.path.count + 1))"] = try String(
                    contentsOf: url, encoding: .utf8)
            }
        }
        return sources
    }

    // MARK: Routes

    /// A route of the router: its method and path (`{name}` captures, `*`/`**` wildcards).
    struct Route: Hashable, CustomStringConvertible {
        let method: String
        let segments: [String]
        /// An API endpoint that needs a bearer token.
        var needsToken = false
        /// An endpoint or form that takes a body.
        var needsBody = false
        var description: String { "\(method) /\(segments.joined(separator: "/"))" }
    }

    /// Every route the server's router has, but the 405 answers registered for the methods an API
    /// path does not take.
    static func routes() throws -> [Route] {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let router = HTTPSServer.router(hearth: d.hearth, logger: Logger(label: "evidence"))
        var endpoints: [String: Endpoint] = [:]
        for (endpoint, _) in API(hearth: d.hearth).endpoints() {
            endpoints["\(endpoint.method.rawValue) \(endpoint.path)"] = endpoint
        }
        let apiPaths = Set(endpoints.keys.map { String($0.split(separator: " ")[1]) })
        return router.routes.compactMap { described in
            let path = described.path.description
            let key = "\(described.method.rawValue) \(path)"
            let endpoint = endpoints[key]
            if endpoint == nil, apiPaths.contains(path) { return nil }
            var route = Route(method: described.method.rawValue, segments: path.split(separator: "/").map(String.init))
            route.needsToken = endpoint.map { $0.access != .public } ?? false
            route.needsBody = endpoint.map { $0.body != nil } ?? (described.method == .post)
            return route
        }
    }

    /// A request some test sends: method, path segments (`*` where the test interpolates), and
    /// whether it carries a token (bearer or a signed-in page's cookie) and a body.
    struct SentRequest {
        let method: String
        let segments: [String]
        let hasToken: Bool
        let hasBody: Bool
        let file: String

        func reaches(_ route: Route) -> Bool {
            guard method == route.method else { return false }
            for (index, pattern) in route.segments.enumerated() {
                if pattern.hasPrefix("**") { return segments.count > index }
                guard index < segments.count else { return false }
                let sent = segments[index]
                // What a test interpolates stands for a capture, never for a route's fixed segment.
                guard pattern.hasPrefix("{") || pattern == "*" || sent == pattern else { return false }
            }
            return segments.count == route.segments.count
        }
    }

    /// How a test sends a request: a pattern ending where the path's literal (or a `let` name
    /// holding it) begins, the method when the pattern does not name it, and whether the shape
    /// itself carries the credential and a body (a signed-in browser's form post).
    struct Shape {
        let pattern: Regex<(Substring, Substring)>
        let method: String?
        var form = false
        /// Any argument after the path is the credential (curl's extra arguments in ClusterTests).
        var extraIsCredential = false
    }

    static var shapes: [Shape] {
        [
            // In-process: client.call(.post, "/api/…", body:, token:) and client.execute(uri:method:).
            Shape(pattern: #/call\(\s*\.(get|post|put|patch|delete),\s*/#, method: nil),
            Shape(pattern: #/uri:\s*()/#, method: "GET"),
            // curl in the process tests: call(curl, "POST", "/api/…", token:, body:); c.call(node, "/…", cookie).
            Shape(pattern: #/"(GET|POST|PUT|PATCH|DELETE)",\s*/#, method: nil),
            Shape(pattern: #/\bc\.call\(\s*\w+,\s*()/#, method: "GET", extraIsCredential: true),
            Shape(pattern: #/base \+ ()/#, method: "GET"),
            // Public forms and signed-in browsers' forms in process (PageTests.post).
            Shape(pattern: #/(formPass)\(\s*/#, method: "GET"),
            Shape(pattern: #/(postForm)\(\s*/#, method: "POST", form: true),
            Shape(pattern: #/\.(post)\(\s*client,\s*/#, method: "POST", form: true),
            // Chromium (browser_flows.py): go("/…"), fill_and_submit("/…", …), submit("form[action='/…'] …").
            Shape(pattern: #/\b(go)\(f?/#, method: "GET", form: true),
            Shape(pattern: #/(fill_and_submit)\(f?/#, method: "POST", form: true),
            Shape(pattern: #/submit\(f?"form\[action\^?='()/#, method: "POST", form: true),
        ]
    }

    /// The requests in one test source, found by ``shapes``.
    static func requests(in text: String, file: String) -> [SentRequest] {
        var found: [SentRequest] = []
        for shape in shapes {
            for match in text.matches(of: shape.pattern) {
                guard
                    let (literal, end) = pathArgument(
                        in: text, at: match.range.upperBound, python: file.hasSuffix(".py")),
                    literal.hasPrefix("/")
                else { continue }
                let call = argumentsText(in: text, from: end)
                let path = literal.split(separator: "?", maxSplits: 1).first.map(String.init) ?? literal
                let credential =
                    shape.form || call.contains("token:") || call.contains("cookie") || call.contains("Bearer")
                    || (shape.extraIsCredential && call.contains(","))
                found.append(
                    SentRequest(
                        method: shape.method ?? match.output.1.uppercased(),
                        segments: path.split(separator: "/").map(String.init), hasToken: credential,
                        hasBody: shape.form || call.contains("body:") || call.contains("bytes:")
                            || call.contains("--data"),
                        file: file))
            }
        }
        return found
    }

    /// The path a request names at `start`: a string literal (interpolations as `*`; in Python
    /// `{…}` too, and a CSS selector's `'][action$='` joined by `*`), or a name bound earlier in the
    /// file by `let name = "…"` (with a literal suffix added by `+`). With the index where the
    /// argument ends.
    static func pathArgument(in text: String, at start: String.Index, python: Bool) -> (String, String.Index)? {
        if python {
            let rest = text[start...]
            guard let quote = rest.first, quote == "\"" || quote == "'" || quote == "/" else { return nil }
            let body = quote == "/" ? rest : rest.dropFirst()
            let stop = body.firstIndex { $0 == "\"" || $0 == "]" || $0 == "\n" || ($0 == "'" && quote != "\"") }
            guard let stop else { return nil }
            let literal = String(body[..<stop]).replacing(#/\{[^}]*\}/#, with: "*")
            var path = literal
            if text[stop...].hasPrefix("'][action$='") {
                let suffix = text[text.index(stop, offsetBy: 12)...].prefix { $0 != "'" }
                path = literal + "*" + suffix
            }
            return (path, stop)
        }
        if text[start...].hasPrefix("\"") { return stringLiteral(in: text, from: text.index(after: start)) }
        let name = text[start...].prefix { $0.isLetter || $0.isNumber || $0 == "_" }
        guard !name.isEmpty,
            let binding = text[..<start].ranges(of: "let \(name) = \"").last
        else { return nil }
        guard let (literal, _) = stringLiteral(in: text, from: binding.upperBound) else { return nil }
        let after = text.index(start, offsetBy: name.count)
        // `page + "/transition"`: the bound path and a literal suffix.
        if let plus = text[after...].firstMatch(of: #/^\s*\+\s*"/#),
            let (suffix, end) = stringLiteral(in: text, from: plus.range.upperBound)
        {
            return (literal + suffix, end)
        }
        return (literal, after)
    }

    /// A Swift string literal whose opening quote ends just before `start`: its text with every
    /// interpolation as `*`, and the index after its closing quote.
    static func stringLiteral(in text: String, from start: String.Index) -> (String, String.Index)? {
        var result = ""
        var index = start
        while index < text.endIndex {
            let c = text[index]
            if c == "\"" { return (result, text.index(after: index)) }
            if c == "\n" { return nil }
            if c == "\\", text.index(after: index) < text.endIndex, text[text.index(after: index)] == "(" {
                var depth = 0
                var inner = text.index(after: index)
                while inner < text.endIndex {
                    if text[inner] == "(" { depth += 1 }
                    if text[inner] == ")" {
                        depth -= 1
                        if depth == 0 { break }
                    }
                    inner = text.index(after: inner)
                }
                guard inner < text.endIndex else { return nil }
                result += "*"
                index = text.index(after: inner)
                continue
            }
            result.append(c)
            index = text.index(after: index)
        }
        return nil
    }

    /// The rest of a call's argument list from `start` to its closing parenthesis (at most 600
    /// characters).
    static func argumentsText(in text: String, from start: String.Index) -> Substring {
        var depth = 1
        var index = start
        var count = 0
        while index < text.endIndex, count < 600 {
            if text[index] == "(" { depth += 1 }
            if text[index] == ")" {
                depth -= 1
                if depth == 0 { break }
            }
            index = text.index(after: index)
            count += 1
        }
        return text[start..<index]
    }

    /// The routes no test sends a request to, or only without the token or body it needs.
    static func unexercised(_ routes: [Route], sources: [String: String]) -> [Route] {
        let sent = sources.flatMap { requests(in: $0.value, file: $0.key) }
        return routes.filter { route in
            !sent.contains { request in
                request.reaches(route) && (!route.needsToken || request.hasToken)
                    && (!route.needsBody || request.hasBody)
            }
        }
    }

    @Test func everyRouteIsExercisedByATestWithItsTokenAndBody() throws {
        let routes = try Self.routes()
        let sources = try Self.testSources()
        #expect(routes.count > 60, "the router lists its routes: \(routes.count)")
        let missing = Self.unexercised(routes, sources: sources)
        #expect(missing.isEmpty, "no test sends these (with their token and body): \(missing)")

        // The check can fail: without the tests that revoke a device through the API, that route
        // is reported.
        let revoke = try #require(routes.first { $0.description == "POST /api/v1/devices/{serial}/revoke" })
        let without = sources.mapValues { text in
            text.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.contains("/revoke") }
                .joined(separator: "\n")
        }
        #expect(Self.unexercised([revoke], sources: without) == [revoke])
    }

    // MARK: Commands

    /// Every command of a built executable, as the words that run it (`updates rollout pause`):
    /// its subcommands from `--help`, recursively, and for a command that takes an `<action>`
    /// argument, each action its help lists.
    static func commands(of executable: String, under path: [String] = []) async throws -> [[String]] {
        let help = try await runTool(builtProduct(executable).path, path + ["--help"]).output
        let lines = help.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        func section(_ title: String) -> [String] {
            guard let start = lines.firstIndex(of: title) else { return [] }
            return Array(lines[(start + 1)...].prefix { !$0.isEmpty })
        }
        let subcommands = section("SUBCOMMANDS:").compactMap { line -> String? in
            guard line.hasPrefix("  "), !line.hasPrefix("   ") else { return nil }
            return line.split(separator: " ").first.map(String.init)
        }
        if !subcommands.isEmpty {
            var all: [[String]] = []
            for subcommand in subcommands { all += try await commands(of: executable, under: path + [subcommand]) }
            return all
        }
        let arguments = section("ARGUMENTS:")
        guard let action = arguments.firstIndex(where: { $0.hasPrefix("  <action>") }) else { return [path] }
        let described =
            ([arguments[action].dropFirst("  <action>".count)]
            + arguments[(action + 1)...].prefix {
                $0.hasPrefix("   ")
            }.map { $0[...] }).joined(separator: " ")
        return described.matches(of: /[a-z][a-z-]*/).map(\.output).map(String.init).filter { $0 != "or" }.map {
            path + [$0]
        }
    }

    /// The commands no test runs: no array literal in the test sources starts with their words
    /// (after the program's name, as in Python's `[hearth, "disclosure", "team", …]`).
    static func notRun(_ commands: [[String]], sources: [String: String]) -> [[String]] {
        commands.filter { words in
            let pattern =
                "\\[\\s*(?:\\w+,\\s*)?" + words.map { "\"\($0)\"" }.joined(separator: "\\s*,\\s*") + "\\s*[,\\]]"
            guard let regex = try? Regex(pattern) else { return true }  // unreadable words: reported as not run
            return !sources.values.contains { $0.contains(regex) }
        }
    }

    @Test func everyCommandOfTheCLIsIsRunByATest() async throws {
        let sources = try Self.testSources()
        let commands = try await Self.commands(of: "hearth") + Self.commands(of: "hearth-device")
        #expect(commands.count > 40, "the CLIs list their commands: \(commands)")
        #expect(commands.contains(["updates", "rollout", "advance"]) && commands.contains(["download-bench"]))
        let missing = Self.notRun(commands, sources: sources)
        #expect(missing.isEmpty, "no test runs these: \(missing.map { $0.joined(separator: " ") })")

        // The check can fail: without the tests that run `hearth audit verify`, it is reported.
        let without = sources.mapValues { $0.replacingOccurrences(of: #"["audit", "verify""#, with: "[") }
        #expect(Self.notRun([["audit", "verify"]], sources: without) == [["audit", "verify"]])
    }

    // MARK: Documents

    static let documents = ["ARCHITECTURE.md", "SECURITY.md", "README.md", "BENCHMARKS.md"]

    /// A test a document cites: `SuiteTests` or `SuiteTests.testName`, in backticks.
    struct Citation: Hashable, CustomStringConvertible {
        let document: String
        let suite: String
        let test: String?
        var description: String { "\(document): \(suite)\(test.map { ".\($0)" } ?? "")" }
    }

    /// Every citation in `text`, and every backticked name cut short with "…" (which no check
    /// can follow: the documents give whole names).
    static func citations(in text: String, document: String) -> (cited: [Citation], shortened: [String]) {
        var cited: [Citation] = []
        var shortened: [String] = []
        // Code fences hold no citation and would pair backticks wrongly.
        let prose = text.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.hasPrefix("```") }
            .joined(separator: "\n")
        for match in prose.matches(of: /`([^`\n]+(?:\n[^`\n]+)?)`/) {
            // A name may be broken over two lines.
            let token = String(match.output.1).filter { !$0.isWhitespace }
            if let whole = token.wholeMatch(of: /([A-Z][A-Za-z0-9]*Tests)(?:\.([A-Za-z0-9_]+))?/) {
                cited.append(
                    Citation(document: document, suite: String(whole.output.1), test: whole.output.2.map(String.init)))
            } else if match.output.1.wholeMatch(of: /…?[A-Za-z][A-Za-z0-9.]*…?/) != nil, token.contains("…") {
                shortened.append(token)
            }
        }
        return (cited, shortened)
    }

    /// What the test sources declare: the types each file declares or extends (suites), the
    /// `@Test` functions in it, and the test targets (folders under Tests/).
    struct Declared {
        var files: [(types: Set<String>, tests: Set<String>)] = []
        var targets: Set<String> = []

        init(_ sources: [String: String]) {
            for (path, text) in sources where path.hasSuffix(".swift") {
                if let target = path.split(separator: "/").dropFirst().first { targets.insert(String(target)) }
                let types = text.matches(of: /(?:struct|enum|class|extension)\s+(?:\w+\.)*(\w+)/).map {
                    String($0.output.1)
                }
                let tests = text.matches(of: /@Test\b[^{]*?func\s+(\w+)\(/).map { String($0.output.1) }
                files.append((Set(types), Set(tests)))
            }
        }

        /// The citations that name no suite (a type or a test target) or no test of that suite (a
        /// `@Test` function in a file that declares or extends it).
        func unresolved(_ citations: [Citation]) -> [Citation] {
            citations.filter { citation in
                let declaring = files.filter { $0.types.contains(citation.suite) }
                guard let test = citation.test else { return declaring.isEmpty && !targets.contains(citation.suite) }
                return !declaring.contains { $0.tests.contains(test) }
            }
        }
    }

    /// The numbers of the decisions (numbered paragraphs under "## Decisions") that neither cite a
    /// test nor say why they have none.
    static func decisionsWithoutATest(_ text: String) -> [Int] {
        guard let section = text.range(of: "## Decisions") else { return [] }
        var result: [Int] = []
        var number: Int?
        var paragraph = ""
        func close() {
            guard let n = number else { return }
            let cites = !citations(in: paragraph, document: "").cited.isEmpty
            if !cites, !paragraph.contains("Not tested:"), !paragraph.contains("A design choice") { result.append(n) }
        }
        for line in text[section.upperBound...].split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("## ") { break }
            if let match = line.firstMatch(of: #/^(\d+)\. /#) {
                close()
                number = Int(match.output.1)
                paragraph = ""
            }
            paragraph += line + "\n"
        }
        close()
        return result
    }

    @Test func everyTestTheDocumentsCiteExists() throws {
        var sources = try Self.testSources(includingChecks: true)
        var cited: [Citation] = []
        for document in Self.documents {
            let text = try String(contentsOf: Self.root.appendingPathComponent(document), encoding: .utf8)
            let found = Self.citations(in: text, document: document)
            #expect(found.shortened.isEmpty, "\(document) cuts test names short: \(found.shortened)")
            cited += found.cited
        }
        #expect(cited.count > 50, "the documents cite their tests: \(cited.count)")
        let missing = Declared(sources).unresolved(cited)
        #expect(missing.isEmpty, "cited, not found: \(missing)")

        // Every decision ARCHITECTURE.md records names the test that holds it to its word, or says
        // why there is none ("Not tested:", "A design choice").
        let architecture = try String(contentsOf: Self.root.appendingPathComponent("ARCHITECTURE.md"), encoding: .utf8)
        let uncited = Self.decisionsWithoutATest(architecture)
        #expect(uncited.isEmpty, "ARCHITECTURE.md decisions that cite no test: \(uncited)")
        #expect(Self.decisionsWithoutATest("## Decisions\n1. **A promise** with nothing behind it.\n") == [1])
        #expect(
            Self.citations(in: "(`PageTests.badInputOnEach…`)", document: "").shortened == ["PageTests.badInputOnEach…"]
        )

        // Every adversary SECURITY.md names comes with the tests that show what stops them.
        let security = try String(contentsOf: Self.root.appendingPathComponent("SECURITY.md"), encoding: .utf8)
        let threats = try #require(security.range(of: "### Adversaries and what stops them"))
        let limits = try #require(security.range(of: "### Out of scope today"))
        let bullets = security[threats.upperBound..<limits.lowerBound].components(separatedBy: "\n- ").dropFirst()
        let unshown = bullets.filter { Self.citations(in: $0, document: "").cited.isEmpty }.map { $0.prefix(60) }
        #expect(bullets.count > 20 && unshown.isEmpty, "SECURITY.md threats that cite no test: \(unshown)")

        // The check can fail: a cited test renamed in the sources is reported.
        let renamed = try #require(cited.first { $0.test == "onlyTheServersOwnHostNamesAreAnswered" })
        for (path, text) in sources where text.contains("func onlyTheServersOwnHostNamesAreAnswered(") {
            sources[path] = text.replacingOccurrences(
                of: "func onlyTheServersOwnHostNamesAreAnswered(", with: "func renamed(")
        }
        #expect(Declared(sources).unresolved([renamed]) == [renamed])
    }
}

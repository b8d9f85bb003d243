import Foundation
import Glibc
import Synchronization
import Testing

/// A child process whose standard output and error are collected while it runs. For tests that
/// drive real programs: `hearth` itself, curl, openssl, mosquitto's clients.
///
/// Started with `posix_spawn`, not Foundation's `Process`: on Swift 6.3.1 `Process.run()` crashes
/// now and then (swift-corelibs-foundation #5472, an over-read while it lists open descriptors),
/// and one crash ends a whole suite. The child gets /dev/null as standard input, the default
/// action for every signal, an empty signal mask, and no descriptor of the test process but its
/// output pipes.
public final class ChildProcess: @unchecked Sendable {
    public let processIdentifier: pid_t
    private let lock = NSLock()
    private var collected: [UInt8] = []
    private var collectedErrors: [UInt8] = []
    /// The wait status once the child is reaped.
    private var waitStatus: Int32?
    /// Pipes still being read (the last output is in only once they are done).
    private var openPipes = 0

    /// Starts `executable`; its standard error joins its output in ``text`` unless `separateErrors`,
    /// then it is in ``errorText`` alone.
    public init(
        _ executable: URL, _ arguments: [String], separateErrors: Bool = false, environment: [String: String] = [:]
    ) throws {
        let output = try Self.pipe()
        let errors = separateErrors ? try Self.pipe() : nil
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, output.write, 1)
        posix_spawn_file_actions_adddup2(&actions, errors?.write ?? output.write, 2)
        Self.closeFrom(3, &actions)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let variables = ProcessInfo.processInfo.environment.merging(environment) { $1 }.map { "\($0)=\($1)" }
        let argv = ([executable.path] + arguments).map { strdup($0) } + [nil]
        let envp = variables.map { strdup($0) } + [nil]
        defer { for pointer in argv + envp { free(pointer) } }
        var pid = pid_t()
        let result = posix_spawn(&pid, executable.path, &actions, &attributes, argv, envp)
        close(output.write)
        if let errors { close(errors.write) }
        guard result == 0 else {
            close(output.read)
            if let errors { close(errors.read) }
            throw SpawnFailed(description: "\(executable.path): \(String(cString: strerror(result)))")
        }
        processIdentifier = pid
        collect(output.read, errors: false)
        if let errors { collect(errors.read, errors: true) }
    }

    public convenience init(_ path: String, _ arguments: [String]) throws {
        try self.init(URL(fileURLWithPath: path), arguments)
    }

    private static func pipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        guard Glibc.pipe(&fds) == 0 else { throw SpawnFailed(description: "pipe: \(String(cString: strerror(errno)))") }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return (fds[0], fds[1])
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), which Swift's Glibc
    /// module does not declare: the child keeps no other descriptor of ours (another child's pipe
    /// would otherwise stay open, and its reader would never see the end).
    private static func closeFrom(_ fd: Int32, _ actions: inout posix_spawn_file_actions_t) {
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np")
        else { return }
        _ = unsafeBitCast(symbol, to: CloseFrom.self)(&actions, fd)
    }

    /// Reads `fd` on its own thread until the child (and any process it handed the pipe to) closes it.
    private func collect(_ fd: Int32, errors: Bool) {
        lock.withLock { openPipes += 1 }
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { break }
                lock.withLock {
                    if errors {
                        collectedErrors += buffer[..<count]
                    } else {
                        collected += buffer[..<count]
                    }
                }
            }
            close(fd)
            lock.withLock { openPipes -= 1 }
        }
        thread.start()
    }

    /// Reaps the child if it has ended; the caller holds `lock`.
    private func reap() {
        guard waitStatus == nil else { return }
        var status: Int32 = 0
        let result = waitpid(processIdentifier, &status, WNOHANG)
        if result == processIdentifier {
            waitStatus = status
        } else if result < 0, errno == ECHILD {
            waitStatus = -1
        }
    }

    public var isRunning: Bool {
        lock.withLock {
            reap()
            return waitStatus == nil
        }
    }

    /// Whether it ended by exiting (not by a signal); false while it runs.
    public var exited: Bool { lock.withLock { waitStatus.map { $0 >= 0 && $0 & 0x7f == 0 } ?? false } }

    /// Its exit code, or the signal that ended it (as Foundation's `Process` reports them).
    private var terminationStatus: Int32 {
        lock.withLock {
            guard let status = waitStatus, status >= 0 else { return -1 }
            return status & 0x7f == 0 ? (status >> 8) & 0xff : status & 0x7f
        }
    }

    /// Standard error so far, when it was asked for apart.
    public var errorText: String { lock.withLock { String(decoding: collectedErrors, as: UTF8.self) } }

    /// Everything printed so far.
    public var text: String { lock.withLock { String(decoding: collected, as: UTF8.self) } }

    /// Waits until the output contains `marker` (`count` times), the process exits, or `timeout`
    /// passes.
    @discardableResult
    public func wait(for marker: String, count: Int = 1, timeout: TimeInterval = 60) async throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        func seen() -> Bool { text.components(separatedBy: marker).count > count }
        while Date() < deadline {
            if seen() { return true }
            if !isRunning {
                await outputDrained()
                return seen()
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    /// Waits (at most a second) until the pipes are read to their end, after the child exited.
    private func outputDrained() async {
        for _ in 0..<100 where lock.withLock({ openPipes > 0 }) { try? await Task.sleep(for: .milliseconds(10)) }
    }

    /// The exit status, or nil if it is still running after `timeout` (then it is terminated).
    public func waitForExit(timeout: TimeInterval = 60) async throws -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while isRunning, Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        if isRunning {
            signal(SIGTERM)
            return nil
        }
        await outputDrained()
        return terminationStatus
    }

    /// Sends `sig`, unless the child has already been reaped (its id may be another's by then).
    public func signal(_ sig: Int32) {
        lock.withLock {
            reap()
            if waitStatus == nil { kill(processIdentifier, sig) }
        }
    }

    deinit {
        if waitStatus == nil {
            kill(processIdentifier, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(processIdentifier, &status, 0)
        }
    }

    /// Runs a program to completion: its exit status and output.
    public static func run(_ path: String, _ arguments: [String], timeout: TimeInterval = 300) async throws -> (
        status: Int32, output: String
    ) {
        let child = try ChildProcess(path, arguments)
        let status = try await child.waitForExit(timeout: timeout) ?? -1
        return (status, child.text)
    }

    /// Runs a short program to completion, blocking the calling thread: its exit status and
    /// standard output (standard error is dropped). For synchronous helpers only; async code uses
    /// ``runTool(_:_:)``.
    public static func runBlocking(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let child = try ChildProcess(URL(fileURLWithPath: path), arguments, separateErrors: true)
        var status: Int32 = 0
        while waitpid(child.processIdentifier, &status, 0) < 0, errno == EINTR {}
        child.lock.withLock { child.waitStatus = status }
        for _ in 0..<100 where child.lock.withLock({ child.openPipes > 0 }) { usleep(10_000) }
        return (child.terminationStatus, child.text)
    }
}

/// Runs a short program to completion on a thread of its own: its exit status and standard output
/// (standard error is dropped).
public func runTool(_ path: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
    try await offPool { try ChildProcess.runBlocking(path, arguments) }
}

/// Runs blocking work (waiting for a child process, `poll` on a socket) on a thread of its own.
/// Every test's tasks share the cooperative pool's threads, one per core: a test that blocks one
/// of them stalls all the others (a keep-alive ping, a deadline), which on two cores made timing
/// tests fail beside the rest.
public func offPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}

/// ``offPool(_:)`` for work that cannot fail.
public func offPool<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in Thread { continuation.resume(returning: work()) }.start() }
}

public struct SpawnFailed: Error, CustomStringConvertible {
    public let description: String
}

/// Where `name` is on `PATH` (the same search a shell does), or nil.
public func toolOnPath(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    return path.split(separator: ":").map { "\($0)/\(name)" }.first {
        FileManager.default.isExecutableFile(atPath: $0)
    }
}

/// Whether the tests must fail, not skip, when a tool is missing: `.ci/run` sets
/// HEARTH_REQUIRE_TOOLS=1.
public var toolsRequired: Bool { ProcessInfo.processInfo.environment["HEARTH_REQUIRE_TOOLS"] == "1" }

/// The path of a system tool the test needs, found on `PATH`. When it is missing the test is
/// cancelled, which the runner reports as skipped (never as passed); under HEARTH_REQUIRE_TOOLS=1
/// (CI) it fails instead.
public func requiredTool(_ name: String, package: String) throws -> String {
    if let found = toolOnPath(name) { return found }
    try skipOrFail("\(name) is required by this test: apt-get install \(package)")
}

/// Cancels the running test (reported as skipped) for a missing prerequisite, or fails it under
/// HEARTH_REQUIRE_TOOLS=1.
public func skipOrFail(_ reason: String) throws -> Never {
    if toolsRequired { throw MissingTool(description: reason) }
    try Test.cancel(Comment(rawValue: reason))
}

/// For `@Test(.enabled(if: toolsPresentOrRequired("mosquitto_sub")))`: a test whose tools are
/// missing shows as skipped (not passed), except under HEARTH_REQUIRE_TOOLS=1 (CI), where it runs
/// and ``requiredTool(_:package:)`` fails it. A parameterized test needs this trait: the runner
/// reports its cancelled test cases as passed.
public func toolsPresentOrRequired(_ names: String...) -> Bool {
    toolsRequired || names.allSatisfy { toolOnPath($0) != nil }
}

/// As ``toolsPresentOrRequired(_:)``, for a python3 on `PATH` that can import `modules`. Parameterized
/// tests need the trait: the runner reports a cancelled test case as passed.
public func pythonPresentOrRequired(_ modules: String...) -> Bool {
    guard !toolsRequired else { return true }
    return modules.allSatisfy { pythonImporting($0) != nil }
}

/// Which python3 on `PATH` can import a module, asked once per module and process: each question
/// starts a python3 and waits for it, and ~25 tests ask, beside each other, on the two threads
/// that run every test's tasks.
private let pythons = Mutex<[String: String?]>([:])

/// The first python3 on `PATH` that can import `module`, or nil.
func pythonImporting(_ module: String) -> String? {
    if let known = pythons.withLock({ $0[module] }) { return known }
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    let found = path.split(separator: ":").map { "\($0)/python3" }.first {
        FileManager.default.isExecutableFile(atPath: $0)
            && (try? ChildProcess.runBlocking($0, ["-c", "import \(module)"]).status) == 0
    }
    pythons.withLock { $0[module] = .some(found) }
    return found
}

public struct MissingTool: Error, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}

/// A python3 (from PATH) that can import `module`; the test is skipped without one (a failure
/// under HEARTH_REQUIRE_TOOLS=1, as for ``requiredTool(_:package:)``).
public func requiredPython(module: String, package: String) throws -> String {
    if let python = pythonImporting(module) { return python }
    try skipOrFail("python3 with \(module) is required by this test: pip install \(package)")
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
        try ChildProcess(try requiredTool("stdbuf", package: "coreutils"), ["-oL", "-eL", path] + arguments)
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

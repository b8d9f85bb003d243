import Foundation
import Logging
import Synchronization

/// How the server writes its log (`--log-format`): `text` for a person at a terminal (swift-log's
/// stream handler), `json` for a collector — one object a line with `time` (RFC 3339, UTC,
/// milliseconds), `level`, `component` (the logger's label), `message`, and the metadata
/// (`connection` on gateway lines, `hb.request.id` on request lines, …) as string members.
///
/// What is logged never includes a password, token, setup code or key: code logs ids, counts and
/// kinds only, never a request path (`/setup/<token>`) or payload (`LogTests` runs the whole demo
/// and searches its log for every secret the demo made).
public enum LogFormat: String, Sendable, CaseIterable {
    case text, json

    public func handler(label: String, to stream: JSONLogHandler.Stream = .standardError) -> any LogHandler {
        switch self {
        case .text: StreamLogHandler.standardError(label: label)
        case .json: JSONLogHandler(label: label, stream: stream)
        }
    }
}

public struct JSONLogHandler: LogHandler {
    /// Where lines go; one write per line, under a lock, so lines of concurrent loggers never mix.
    public final class Stream: Sendable {
        private let handle: Mutex<FileHandle>
        public init(_ handle: FileHandle) { self.handle = Mutex(handle) }
        public static let standardError = Stream(.standardError)
        func write(_ data: Data) { handle.withLock { $0.write(data) } }
    }

    public let label: String
    let stream: Stream
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?

    public init(label: String, stream: Stream) {
        self.label = label
        self.stream = stream
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [String: String] = [:]
        let provided = metadataProvider?.get() ?? [:]
        for (key, value) in metadata.merging(provided, uniquingKeysWith: { $1 }).merging(
            event.metadata ?? [:], uniquingKeysWith: { $1 })
        {
            fields[key] = "\(value)"
        }
        fields["time"] = Self.time(Date())
        fields["level"] = event.level.rawValue
        fields["component"] = label
        fields["message"] = "\(event.message)"
        guard var line = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]) else { return }
        line.append(0x0A)
        stream.write(line)
    }

    static func time(_ date: Date) -> String {
        date.formatted(
            Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: TimeZone(identifier: "UTC")!))
    }
}

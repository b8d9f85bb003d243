import Foundation
import HearthCore

/// A firmware version, `MAJOR.MINOR.PATCH`, each part 0…999999. Ordered numerically.
public struct FirmwareVersion: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let parts: [Int]

    public init(_ text: String) throws {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard text.utf8.count <= 20, parts.count == 3,
            parts.allSatisfy({
                !$0.isEmpty && $0.count <= 6 && $0.utf8.allSatisfy { (48...57).contains($0) }
                    && !($0.count > 1 && $0.first == "0")
            })
        else { throw HearthError.invalid("version", "a firmware version is MAJOR.MINOR.PATCH, e.g. 1.4.0") }
        self.parts = parts.map { Int($0)! }
    }

    public var description: String { parts.map(String.init).joined(separator: ".") }
    public static func < (a: Self, b: Self) -> Bool { a.parts.lexicographicallyPrecedes(b.parts) }
}

/// How serious what an update fixes is, in words an owner reads.
public enum UpdateSeverity: String, Sendable, CaseIterable {
    case critical, high, medium, low, none

    public var plainEnglish: String {
        switch self {
        case .critical:
            "Critical: fixes a security problem that is being exploited or is easy to exploit. Install it now."
        case .high: "Important: fixes a serious security problem."
        case .medium: "Recommended: fixes a security problem that is harder to exploit."
        case .low: "Minor security improvement."
        case .none: "No security fix: improvements and bug fixes."
        }
    }
}

/// One firmware image as the maker's targets role signs it (TUF `custom` metadata): which model
/// it is for, its version, the oldest version it can update from, and plain-language release notes
/// — what it fixes, how serious, and whether the device keeps working while it installs (Code of
/// Practice guideline 3: the need for each update made clear).
public struct FirmwareTarget: Sendable, Equatable {
    public let name: String
    public let length: Int
    public let sha256: String
    public let model: ProductModelID
    public let version: FirmwareVersion
    public let minimumFrom: FirmwareVersion
    public let fixes: String
    public let severity: UpdateSeverity
    /// True if the device keeps doing its job (heating, locking) while the update downloads and installs.
    public let keepsWorking: Bool
    /// The switch-over itself (a restart) takes at most this long.
    public let downtimeSeconds: Int
    /// The model's support period when the release was signed.
    public let supportEnds: CalendarDate

    public init(
        name: String, length: Int, sha256: String, model: ProductModelID, version: FirmwareVersion,
        minimumFrom: FirmwareVersion,
        fixes: String, severity: UpdateSeverity, keepsWorking: Bool, downtimeSeconds: Int, supportEnds: CalendarDate
    ) throws {
        guard minimumFrom < version else {
            throw HearthError.invalid("min-from", "the oldest version it updates from must be older than \(version)")
        }
        try Self.validateNotes(fixes)
        guard (0...3600).contains(downtimeSeconds) else {
            throw HearthError.invalid("downtime", "between 0 and 3600 seconds")
        }
        self.name = name
        self.length = length
        self.sha256 = sha256
        self.model = model
        self.version = version
        self.minimumFrom = minimumFrom
        self.fixes = fixes
        self.severity = severity
        self.keepsWorking = keepsWorking
        self.downtimeSeconds = downtimeSeconds
        self.supportEnds = supportEnds
    }

    static func validateNotes(_ fixes: String) throws {
        guard (10...2000).contains(fixes.count),
            !fixes.unicodeScalars.contains(where: { $0.properties.generalCategory == .control && $0 != "\n" })
        else {
            throw HearthError.invalid("fixes", "release notes are 10 to 2000 characters of plain text")
        }
    }

    /// The target name for a model's version: `MODEL-VERSION.img` (flat, so consistent-snapshot
    /// names are `SHA256.MODEL-VERSION.img`).
    public static func name(model: ProductModelID, version: FirmwareVersion) -> String {
        "\(model.rawValue)-\(version).img"
    }

    /// The `custom` object a targets entry carries.
    public var custom: [String: JSONValue] {
        [
            "model": .string(model.rawValue), "version": .string(version.description),
            "min_version": .string(minimumFrom.description),
            "release_notes": [
                "fixes": .string(fixes), "severity": .string(severity.rawValue),
                "severity_text": .string(severity.plainEnglish),
                "keeps_working_while_installing": .bool(keepsWorking),
                "max_downtime_seconds": .number(Double(downtimeSeconds)),
            ],
            "support_ends": .string(supportEnds.description),
            "support_ends_text": .string("Security updates until \(supportEnds.plainEnglish)"),
        ]
    }

    /// Reads a signed targets entry back (as the device and the server do).
    public init(name: String, length: Int, sha256: String, custom: [String: JSONValue]) throws {
        let o = ValidatedObject(members: custom)
        guard case .object(let notes)? = custom["release_notes"], let modelText = o.string("model"),
            let v = o.string("version"), let minText = o.string("min_version"),
            case .string(let fixes)? = notes["fixes"], case .string(let severityText)? = notes["severity"],
            let severity = UpdateSeverity(rawValue: severityText),
            case .bool(let keeps)? = notes["keeps_working_while_installing"],
            case .number(let downtimeNumber)? = notes["max_downtime_seconds"],
            let downtime = NetworkInput.wholeNumber(downtimeNumber),
            let endsText = o.string("support_ends"), let ends = CalendarDate(endsText)
        else {
            throw UpdateRefusal.malformed(
                "target \(name) lacks Hearth's custom metadata (model, version, min_version, release_notes, support_ends)"
            )
        }
        let model: ProductModelID
        do { model = try ProductModelID(modelText) } catch {
            throw UpdateRefusal.malformed("target \(name) names an invalid model")
        }
        do {
            try self.init(
                name: name, length: length, sha256: sha256, model: model, version: try FirmwareVersion(v),
                minimumFrom: try FirmwareVersion(minText),
                fixes: fixes, severity: severity, keepsWorking: keeps, downtimeSeconds: downtime, supportEnds: ends
            )
        } catch let error as HearthError {
            throw UpdateRefusal.malformed("target \(name): \(error.message)")
        }
    }

    /// Whether a device of `model` running `current` may install this image. Each refusal is one
    /// the device reports.
    public func check(for model: ProductModelID, running current: FirmwareVersion) throws {
        guard self.model == model else {
            throw UpdateRefusal.wrongModel(name, for: self.model.rawValue, device: model.rawValue)
        }
        guard current < version else {
            throw UpdateRefusal.downgrade(offered: version.description, running: current.description)
        }
        guard minimumFrom <= current else {
            throw UpdateRefusal.unsupportedPath(from: current.description, minimum: minimumFrom.description)
        }
    }
}

extension TrustedMetadata {
    /// Every firmware target in the trusted targets metadata.
    public func firmware(_ name: String) throws -> FirmwareTarget {
        let entry = try target(name)
        return try FirmwareTarget(name: name, length: entry.length, sha256: entry.sha256, custom: entry.custom)
    }
}

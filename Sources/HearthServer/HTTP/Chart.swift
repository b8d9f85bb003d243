import Foundation
import HearthStorage

/// A history chart drawn on the server as SVG (no script, no chart library, nothing fetched from
/// the network): one line through each time slice's mean, axes labelled with the reading's unit
/// and the time (UTC), and a text summary for screen readers. `chart.mustache` draws it.
struct Chart: Sendable {
    /// The windows a device page offers.
    enum Window: String, CaseIterable, Sendable {
        case hour = "1h"
        case day = "24h"
        case week = "7d"

        var seconds: TimeInterval {
            switch self {
            case .hour: 3600
            case .day: 86_400
            case .week: 7 * 86_400
            }
        }
        /// Slices drawn: one a minute, ten minutes, an hour.
        var buckets: Int {
            switch self {
            case .hour: 60
            case .day: 144
            case .week: 168
            }
        }
        var words: String {
            switch self {
            case .hour: "the last hour"
            case .day: "the last 24 hours"
            case .week: "the last 7 days"
            }
        }
        /// Where the time axis has a label, in seconds, and how it reads.
        var tickEvery: TimeInterval {
            switch self {
            case .hour: 900
            case .day: 6 * 3600
            case .week: 86_400
            }
        }
    }

    struct Tick: Sendable {
        let x: String
        let y: String
        let label: String
    }

    static let width = 600.0, height = 220.0, left = 52.0, right = 14.0, top = 12.0, bottom = 30.0

    let id: String
    let heading: String
    let summary: String
    let points: String
    let yTicks: [Tick]
    let xTicks: [Tick]
    let hasData: Bool
    let plotLeft = String(Int(left)), plotRight = String(Int(width - right)), plotTop = String(Int(top)),
        plotBottom = String(Int(height - bottom))

    init(field: String, unit: String?, buckets: [TelemetryBucket], window: Window, now: Date) {
        let from = now.addingTimeInterval(-window.seconds)
        id = "chart-\(field)"
        let unitText = unit.map { " (\($0))" } ?? ""
        heading = "\(field.prefix(1).uppercased() + field.dropFirst())\(unitText)"
        let means = buckets.map(\.mean).filter(\.isFinite)
        hasData = !means.isEmpty
        var lo = means.min() ?? 0
        var hi = means.max() ?? 1
        if hi - lo < 1e-9 { (lo, hi) = (lo - 1, hi + 1) }
        var step = Self.niceStep((hi - lo) / 4)
        // Values beyond what a step can span (never from a model's bounded fields): a plain split.
        if !((hi - lo) / step < 20) { (lo, hi, step) = (-1, 1, 0.5) }
        lo = (lo / step).rounded(.down) * step
        hi = (hi / step).rounded(.up) * step
        let plotWidth = Self.width - Self.left - Self.right
        let plotHeight = Self.height - Self.top - Self.bottom
        func x(_ date: Date) -> Double {
            Self.left + plotWidth * min(1, max(0, date.timeIntervalSince(from) / window.seconds))
        }
        func y(_ value: Double) -> Double { Self.top + plotHeight * (1 - (value - lo) / (hi - lo)) }
        let slice = window.seconds / Double(window.buckets)
        points = buckets.filter { $0.mean.isFinite }.map {
            "\(Self.fixed(x($0.start.addingTimeInterval(slice / 2)))),\(Self.fixed(y($0.mean)))"
        }.joined(separator: " ")
        yTicks = stride(from: lo, through: hi + step / 2, by: step).map {
            Tick(x: Self.fixed(Self.left - 6), y: Self.fixed(y($0) + 4), label: Self.number($0, step: step))
        }
        var ticks: [Tick] = []
        var t = (from.timeIntervalSince1970 / window.tickEvery).rounded(.up) * window.tickEvery
        while t <= now.timeIntervalSince1970 {
            let date = Date(timeIntervalSince1970: t)
            ticks.append(
                Tick(
                    x: Self.fixed(x(date)), y: Self.fixed(Self.height - 10), label: Self.timeLabel(date, window: window)
                ))
            t += window.tickEvery
        }
        xTicks = ticks
        if let first = means.first, let last = means.last, let low = means.min(), let high = means.max() {
            let u = unit.map { " \($0)" } ?? ""
            summary =
                "\(heading) over \(window.words): from \(Self.number(low, step: 0.1)) to \(Self.number(high, step: 0.1))\(u); first \(Self.number(first, step: 0.1)), latest \(Self.number(last, step: 0.1))\(u)."
        } else {
            summary = "No readings of \(field) in \(window.words)."
        }
    }

    /// 1, 2, 2.5 or 5 times a power of ten, at least `raw`.
    static func niceStep(_ raw: Double) -> Double {
        guard raw.isFinite, raw > 0 else { return 1 }
        let magnitude = pow(10, (log10(raw)).rounded(.down))
        return [1, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude
    }

    static func fixed(_ value: Double) -> String { String(format: "%.1f", value) }

    /// A value with as many decimals as the step needs (at most 2).
    static func number(_ value: Double, step: Double) -> String {
        let decimals = step >= 1 ? 0 : step >= 0.1 ? 1 : 2
        return String(format: "%.\(decimals)f", value)
    }

    static func timeLabel(_ date: Date, window: Window) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = .gmt
        let parts = calendar.dateComponents([.hour, .minute, .day, .weekday], from: date)
        if window == .week {
            let names = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
            return "\(names[((parts.weekday ?? 1) - 1 + 7) % 7]) \(parts.day ?? 0)"
        }
        return String(format: "%02d:%02d", parts.hour ?? 0, parts.minute ?? 0)
    }
}

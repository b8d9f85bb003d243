import Foundation
import HearthCore
import HearthMonitor
import Synchronization

/// The gateway's side of security monitoring (guideline 10): one ``DeviceWatch`` per device it
/// has seen, fed by the connection handlers from what they already do (accept, refuse, connect),
/// under a lock held for a few comparisons and no I/O. Shards spread the lock over devices. What
/// the detectors find goes into a bounded buffer that the gateway service drains to the server's
/// alert service, so a slow alert path never delays a connection; past 10,000 waiting, the oldest
/// are dropped and counted.
final class Watchers: Sendable {
    /// One device's detectors. A connection looks its device's box up once, when the device is
    /// admitted, and then observes through it: a message costs one uncontended lock, no lookup.
    final class Box: Sendable {
        let serial: DeviceSerial
        let watch: Mutex<DeviceWatch>

        init(_ serial: DeviceSerial, _ watch: DeviceWatch) {
            self.serial = serial
            self.watch = Mutex(watch)
        }
    }

    final class Shard: Sendable {
        let boxes = Mutex<[DeviceSerial: Box]>([:])
    }

    static let shardCount = 16
    private let shards: [Shard]
    let thresholds: Thresholds
    let found: AsyncStream<(DeviceSerial, Detection)>
    private let sink: AsyncStream<(DeviceSerial, Detection)>.Continuation
    let counters: Counters
    let enabled: Bool

    init(thresholds: Thresholds, counters: Counters, enabled: Bool = true) {
        self.thresholds = thresholds
        self.counters = counters
        self.enabled = enabled
        shards = (0..<Self.shardCount).map { _ in Shard() }
        (found, sink) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(10_000))
    }

    /// The device's box, made on first sight; nil while monitoring is off.
    func box(_ serial: DeviceSerial, now: Date = Date()) -> Box? {
        guard enabled else { return nil }
        var hasher = Hasher()
        hasher.combine(serial)
        let shard = shards[Int(UInt(bitPattern: hasher.finalize()) % UInt(Self.shardCount))]
        return shard.boxes.withLock { boxes in
            if let box = boxes[serial] { return box }
            let box = Box(serial, DeviceWatch(thresholds: thresholds, now: now))
            boxes[serial] = box
            return box
        }
    }

    func observe(_ serial: DeviceSerial, _ observation: Observation, now: Date = Date()) {
        observe(box(serial, now: now), observation, now: now)
    }

    func observe(_ box: Box?, _ observation: Observation, now: Date = Date()) {
        guard let box else { return }
        let detections = box.watch.withLock { $0.observe(observation, at: now) }
        for detection in detections {
            counters.add(\.detections)
            if case .dropped = sink.yield((box.serial, detection)) { counters.add(\.detectionsDropped) }
        }
    }

    /// Devices watched now (for the memory measure).
    var count: Int { shards.reduce(0) { $0 + $1.boxes.withLock { $0.count } } }

    /// Hands each detection to `channel` until the stream ends or the task is cancelled.
    func deliver(to channel: @escaping @Sendable () -> (any DeviceAlertChannel)?) async {
        for await (serial, detection) in found {
            guard let channel = channel() else { continue }
            await channel.detected(detection, device: serial)
        }
    }

    func finish() { sink.finish() }
}

extension MQTTGateway {
    /// For `hearth bench detectors` only: the detectors of `serials` kept exactly as the gateway
    /// keeps them (each device connected from an address and published once). Hold the result
    /// while measuring.
    public static func detectorsForBenchmark(_ serials: [DeviceSerial]) -> any Sendable {
        let watchers = Watchers(thresholds: Thresholds(), counters: Counters(metrics: nil))
        let now = Date()
        for (i, serial) in serials.enumerated() {
            let box = watchers.box(serial, now: now)
            watchers.observe(box, .connected(source: "10.\(i / 62_500 % 250).\(i / 250 % 250).\(i % 250)"), now: now)
            watchers.observe(box, .published(bytes: 80), now: now)
        }
        return watchers
    }
}

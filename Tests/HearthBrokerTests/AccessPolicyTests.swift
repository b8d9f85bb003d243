import HearthBroker
import Testing

@Suite struct AccessPolicyTests {
    let a = AccessPolicy.device(serial: "AAAAAAAAAAAA")

    @Test func aDeviceWorksInItsOwnNamespace() {
        #expect(a.canPublish("devices/AAAAAAAAAAAA/telemetry"))
        #expect(a.canPublish("devices/AAAAAAAAAAAA/events"))
        #expect(a.canPublish("devices/AAAAAAAAAAAA/commands/setTarget/result"))
        #expect(a.canSubscribe("devices/AAAAAAAAAAAA/commands/#"))
        #expect(a.canSubscribe("devices/AAAAAAAAAAAA/commands/+"))
        #expect(a.canReceive("devices/AAAAAAAAAAAA/commands/lock"))
        #expect(a.canPublish("devices/AAAAAAAAAAAA/update"))
        #expect(a.canSubscribe("devices/AAAAAAAAAAAA/update/offer"))
        #expect(a.canReceive("devices/AAAAAAAAAAAA/update/offer"))
    }

    @Test func thePolicyIsTheDevicesOwnAndOnlyTheServerWritesIt() {
        #expect(a.canSubscribe("devices/AAAAAAAAAAAA/policy"))
        #expect(a.canReceive("devices/AAAAAAAAAAAA/policy"))
        #expect(!a.canPublish("devices/AAAAAAAAAAAA/policy"), "a device cannot change what its owner agreed to")
        for filter in ["devices/BBBBBBBBBBBB/policy", "devices/+/policy", "devices/AAAAAAAAAAAA/+"] {
            #expect(!a.canSubscribe(filter), "\(filter)")
        }
        #expect(!a.canReceive("devices/BBBBBBBBBBBB/policy"))
        #expect(!a.canReceive("devices/AAAAAAAAAAAA/telemetry"))
    }

    @Test func updateOffersAreTheDevicesOwnAndOnlyTheServerMakesThem() {
        #expect(!a.canPublish("devices/AAAAAAAAAAAA/update/offer"), "a device cannot offer itself an update")
        #expect(!a.canPublish("devices/BBBBBBBBBBBB/update"))
        for filter in [
            "devices/BBBBBBBBBBBB/update/offer", "devices/AAAAAAAAAAAA/update/#", "devices/AAAAAAAAAAAA/update/+",
            "devices/AAAAAAAAAAAA/update", "devices/+/update/offer",
        ] {
            #expect(!a.canSubscribe(filter), "\(filter)")
        }
        #expect(!a.canReceive("devices/BBBBBBBBBBBB/update/offer"))
        #expect(!a.canReceive("devices/AAAAAAAAAAAA/update"), "never its own reports")
    }

    /// Every wildcard trick from the gateway issue: refused.
    @Test(arguments: [
        "#", "+", "+/#", "+/+/#", "devices/#", "devices/+", "devices/+/commands/#", "devices/+/telemetry",
        "+/AAAAAAAAAAAA/commands/#", "devices/BBBBBBBBBBBB/commands/#", "devices/BBBBBBBBBBBB/telemetry",
        "$share/g/devices/AAAAAAAAAAAA/commands/#", "$share/g/devices/BBBBBBBBBBBB/commands/#", "$share/g/#",
        "$SYS/#", "devices/AAAAAAAAAAAA/#", "devices/AAAAAAAAAAAA/+/#", "devices/AAAAAAAAAAAA/telemetry",
    ])
    func aDeviceCannotSubscribeOutsideItsCommands(_ filter: String) {
        #expect(!a.canSubscribe(filter))
    }

    @Test(arguments: [
        "devices/BBBBBBBBBBBB/telemetry", "devices/BBBBBBBBBBBB/commands/lock", "devices/AAAAAAAAAAAA/commands/lock",
        "devices/AAAAAAAAAAAA", "devices/AAAAAAAAAAAA/telemetry/extra", "devices/AAAAAAAAAAAA/other",
        "devices/AAAAAAAAAAAA/commands//result", "other/topic", "$SYS/x", "devices",
    ])
    func aDeviceCannotPublishOutsideItsOwnTopics(_ topic: String) {
        #expect(!a.canPublish(topic))
    }

    @Test func aDeviceReceivesOnlyItsOwnCommands() {
        #expect(!a.canReceive("devices/BBBBBBBBBBBB/commands/lock"))
        #expect(!a.canReceive("devices/AAAAAAAAAAAA/telemetry"))
        #expect(!a.canReceive("news"))
    }

    @Test func theDevelopmentListenerStaysOutOfTheDeviceNamespace() {
        let dev = AccessPolicy.development
        #expect(dev.canPublish("test/topic"))
        #expect(!dev.canPublish("devices/AAAAAAAAAAAA/telemetry"))
        #expect(!dev.canPublish("$SYS/x"))
        #expect(dev.canSubscribe("#"))
        #expect(dev.canSubscribe("$share/g/test/#"))
        #expect(!dev.canSubscribe("$SYS/#"))
        #expect(dev.canReceive("test/topic"))
        #expect(!dev.canReceive("devices/AAAAAAAAAAAA/commands/lock"), "a dev client's # never sees device traffic")
    }
}

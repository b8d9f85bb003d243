import Foundation
import HearthBroker
import HearthMQTT
import NIOCore
import Testing

@Suite struct ConnectionStateMachineTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    func connected(_ version: MQTTVersion = .v5, keepAlive: UInt16 = 60, identity: PeerIdentity = .development)
        -> ConnectionStateMachine
    {
        var m = ConnectionStateMachine(identity: identity, now: t0)
        _ = m.received(.connect(Connect(version: version, clientID: "c1", keepAlive: keepAlive)), now: t0)
        return m
    }

    func connack(_ actions: [ConnectionStateMachine.Action]) -> ConnAck? {
        for a in actions {
            if case .accept(_, _, let c) = a { return c }
            if case .send(.connack(let c)) = a { return c }
        }
        return nil
    }

    @Test func aValidConnectIsAcceptedWithTheServersLimits() {
        var m = ConnectionStateMachine(identity: .development, now: t0)
        let actions = m.received(.connect(Connect(version: .v5, clientID: "c1", keepAlive: 60)), now: t0)
        guard case .accept(let key, _, let ack) = actions.first else {
            Issue.record("not accepted: \(actions)")
            return
        }
        #expect(key == "dev:c1")
        #expect(ack.reason == .success)
        #expect(ack.properties.receiveMaximum == 100)
        #expect(ack.properties.topicAliasMaximum == 16)
        #expect(m.isConnected)
    }

    @Test func deviceSessionsAreKeyedByCertificateNotClientID() {
        var m = ConnectionStateMachine(identity: .device(serial: "AAAAAAAAAAAA"), now: t0)
        let actions = m.received(.connect(Connect(version: .v5, clientID: "BBBBBBBBBBBB")), now: t0)
        guard case .accept(let key, _, _) = actions.first else {
            Issue.record("not accepted")
            return
        }
        #expect(key == "device:AAAAAAAAAAAA")
        var withPassword = ConnectionStateMachine(identity: .device(serial: "AAAAAAAAAAAA"), now: t0)
        let refused = withPassword.received(
            .connect(Connect(version: .v5, clientID: "x", username: "admin", password: Array("admin".utf8))), now: t0)
        #expect(connack(refused)?.reason == .badUserNameOrPassword)
        #expect(refused.last == .close(sendWill: false))
    }

    @Test func clientIdentifiersAreAssignedOrRefusedPerVersion() {
        var v5 = ConnectionStateMachine(identity: .development, now: t0)
        let assigned = connack(v5.received(.connect(Connect(version: .v5, clientID: "", cleanStart: false)), now: t0))
        #expect(
            assigned?.properties.all.contains { if case .assignedClientIdentifier = $0 { true } else { false } } == true
        )
        var v311 = ConnectionStateMachine(identity: .development, now: t0)
        let rejected = connack(
            v311.received(.connect(Connect(version: .v3_1_1, clientID: "", cleanStart: false)), now: t0))
        #expect(rejected?.reason == .clientIdentifierNotValid)
        var wire = ByteBuffer()
        MQTTPacket.connack(rejected!).write(version: .v3_1_1, to: &wire)
        #expect(Array(wire.readableBytesView) == [0x20, 0x02, 0x00, 0x02], "3.1.1 return code 2: identifier rejected")
        var long = ConnectionStateMachine(identity: .development, now: t0)
        #expect(
            connack(
                long.received(.connect(Connect(version: .v5, clientID: String(repeating: "x", count: 200))), now: t0))?
                .reason == .clientIdentifierNotValid)
    }

    @Test func keepAliveIsCappedAndEnforcedAtOneAndAHalfTimes() {
        var m = ConnectionStateMachine(identity: .development, now: t0)
        let ack = connack(m.received(.connect(Connect(version: .v5, clientID: "c", keepAlive: 0)), now: t0))
        #expect(ack?.properties.all.contains(.serverKeepAlive(300)) == true, "5.0 keep-alive 0 is replaced")
        var k = connected(keepAlive: 60)
        #expect(k.tick(now: t0.addingTimeInterval(89)).isEmpty)
        _ = k.received(.pingreq, now: t0.addingTimeInterval(89))
        #expect(k.tick(now: t0.addingTimeInterval(89 + 89)).isEmpty, "any packet resets the timer")
        let expired = k.tick(now: t0.addingTimeInterval(89 + 90))
        #expect(
            expired.first
                == .send(
                    .disconnect(
                        ReasonPacket(
                            reason: .keepAliveTimeout,
                            properties: [.reasonString("no packet within 1.5 × the keep-alive")]))))
        #expect(expired.last == .close(sendWill: true), "a lost client's will is published")
    }

    @Test func aConnectionThatNeverConnectsIsClosed() {
        var m = ConnectionStateMachine(identity: .development, now: t0)
        #expect(m.tick(now: t0.addingTimeInterval(9)).isEmpty)
        #expect(m.tick(now: t0.addingTimeInterval(10)) == [.close(sendWill: false)])
    }

    @Test func packetsBeforeConnectAndASecondConnectEndTheConnection() {
        var m = ConnectionStateMachine(identity: .development, now: t0)
        #expect(m.received(.pingreq, now: t0) == [.close(sendWill: false)])
        var c = connected()
        let second = c.received(.connect(Connect(version: .v5, clientID: "again")), now: t0)
        #expect(
            second.first
                == .send(
                    .disconnect(ReasonPacket(reason: .protocolError, properties: [.reasonString("a second CONNECT")]))))
        #expect(!c.isConnected)
        #expect(c.received(.pingreq, now: t0).isEmpty, "nothing after close")
    }

    @Test func topicAliasesResolveAndAreBounded() {
        var m = connected()
        let set = m.received(.publish(Publish(topic: "a/b", payload: [1], properties: [.topicAlias(3)])), now: t0)
        #expect(set == [.deliver(Publish(topic: "a/b", payload: [1]))])
        let used = m.received(.publish(Publish(topic: "", payload: [2], properties: [.topicAlias(3)])), now: t0)
        #expect(used == [.deliver(Publish(topic: "a/b", payload: [2]))])
        var unknown = connected()
        #expect(
            unknown.received(.publish(Publish(topic: "", payload: [], properties: [.topicAlias(4)])), now: t0).last
                == .close(sendWill: true))
        var tooHigh = connected()
        let refused = tooHigh.received(
            .publish(Publish(topic: "x", payload: [], properties: [.topicAlias(17)])), now: t0)
        if case .send(.disconnect(let d)) = refused.first {
            #expect(d.reason == .topicAliasInvalid)
        } else {
            Issue.record("expected DISCONNECT 0x94")
        }
    }

    @Test func disconnectsFollowTheVersion() {
        var v5 = connected(.v5)
        #expect(
            v5.received(.disconnect(ReasonPacket(reason: .disconnectWithWill)), now: t0) == [.close(sendWill: true)])
        var normal = connected(.v5)
        #expect(normal.received(.disconnect(ReasonPacket()), now: t0) == [.close(sendWill: false)])
        var v311 = connected(.v3_1_1)
        #expect(
            v311.decodeFailed(MQTTProtocolError(.malformedPacket, "x")) == [.close(sendWill: true)],
            "3.1.1 is closed without a DISCONNECT")
        var busy = connected(.v5)
        #expect(
            busy.disconnect(.serverBusy, "overloaded").first
                == .send(.disconnect(ReasonPacket(reason: .serverBusy, properties: [.reasonString("overloaded")]))))
        var fresh = ConnectionStateMachine(identity: .development, now: t0)
        #expect(
            fresh.decodeFailed(MQTTProtocolError(.unsupportedProtocolVersion, "v3")) == [
                .send(.connack(ConnAck(reason: .unsupportedProtocolVersion))), .close(sendWill: false),
            ])
    }
}

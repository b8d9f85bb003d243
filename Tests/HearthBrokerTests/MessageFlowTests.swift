import HearthBroker
import HearthMQTT
import Testing

func message(_ n: Int, qos: QoS = .atLeastOnce) -> Publish {
    Publish(topic: "t/\(n)", payload: [UInt8(n & 0xFF)], qos: qos)
}

extension OutboundFlow.Action {
    var packetID: UInt16? {
        switch self {
        case .send(let p): p.packetID
        case .sendRelease(let id): id
        case .dropped: nil
        }
    }
    var topic: String? { if case .send(let p) = self { p.topic } else { nil } }
}

@Suite struct OutboundFlowTests {
    @Test func theWindowHoldsAtReceiveMaximumAndDrainsInOrder() throws {
        var flow = OutboundFlow(receiveMaximum: 2, queueLimit: 10)
        let sent = (1...5).flatMap { flow.enqueue(message($0)) }
        #expect(sent.compactMap(\.topic) == ["t/1", "t/2"])
        #expect(flow.inflightCount == 2)
        #expect(flow.queuedCount == 3)
        let afterAck = try flow.receive(.puback(Ack(packetID: sent[0].packetID!)))
        #expect(afterAck.compactMap(\.topic) == ["t/3"])
        #expect(flow.enqueue(message(9, qos: .atMostOnce)).compactMap(\.topic) == ["t/9"], "QoS 0 bypasses the window")
    }

    @Test func qos2GoesThroughRecRelComp() throws {
        var flow = OutboundFlow(receiveMaximum: 1)
        let first = flow.enqueue(message(1, qos: .exactlyOnce))
        _ = flow.enqueue(message(2, qos: .exactlyOnce))
        let id = try #require(first.first?.packetID)
        #expect(try flow.receive(.pubrec(Ack(packetID: id))) == [.sendRelease(id)])
        #expect(flow.inflightCount == 1, "still in flight until PUBCOMP")
        #expect(throws: MQTTProtocolError.self) { try flow.receive(.puback(Ack(packetID: id))) }
        let next = try flow.receive(.pubcomp(Ack(packetID: id)))
        #expect(next.compactMap(\.topic) == ["t/2"])
    }

    @Test func aRefusedPubrecEndsTheExchange() throws {
        var flow = OutboundFlow(receiveMaximum: 1)
        let id = try #require(flow.enqueue(message(1, qos: .exactlyOnce)).first?.packetID)
        _ = flow.enqueue(message(2))
        let next = try flow.receive(.pubrec(Ack(packetID: id, reason: .quotaExceeded)))
        #expect(next.compactMap(\.topic) == ["t/2"])
    }

    @Test func unknownOrMismatchedAcknowledgementsAreErrors() throws {
        var flow = OutboundFlow()
        let id = try #require(flow.enqueue(message(1)).first?.packetID)
        #expect(throws: MQTTProtocolError(.packetIdentifierNotFound, "acknowledgement for unknown packet 999")) {
            try flow.receive(.puback(Ack(packetID: 999)))
        }
        #expect(throws: MQTTProtocolError.self) { try flow.receive(.pubcomp(Ack(packetID: id))) }
        #expect(throws: MQTTProtocolError.self) { try flow.receive(.pubrec(Ack(packetID: id))) }
        #expect(flow.inflightCount == 1, "errors change nothing")
    }

    @Test func resumeResendsWithDupAndReleases() throws {
        var flow = OutboundFlow(receiveMaximum: 10)
        let a = try #require(flow.enqueue(message(1)).first?.packetID)
        let b = try #require(flow.enqueue(message(2, qos: .exactlyOnce)).first?.packetID)
        _ = try flow.receive(.pubrec(Ack(packetID: b)))
        let again = flow.resend()
        #expect(again.count == 2)
        if case .send(let p) = again[0] {
            #expect(p.dup && p.packetID == a)
        } else {
            Issue.record("expected a PUBLISH first")
        }
        #expect(again[1] == .sendRelease(b))
    }

    @Test func aFullQueueDropsTheOldestAndCounts() {
        var flow = OutboundFlow(receiveMaximum: 1, queueLimit: 2)
        _ = flow.enqueue(message(1))
        _ = flow.enqueue(message(2))
        _ = flow.enqueue(message(3))
        let overflow = flow.enqueue(message(4))
        #expect(overflow == [.dropped(message(2))])
        #expect(flow.droppedCount == 1)
        #expect(flow.queuedCount == 2)
    }

    @Test func packetIdentifiersWrapAndSkipThoseInFlight() throws {
        var flow = OutboundFlow(receiveMaximum: 65_535, queueLimit: 0)
        var ids = Set<UInt16>()
        for n in 0..<65_535 {
            if let id = flow.enqueue(message(n)).first?.packetID { ids.insert(id) }
        }
        #expect(ids.count == 65_535 && !ids.contains(0), "every identifier in use once")
        #expect(flow.enqueue(message(0)) == [.dropped(message(0))], "a full window with no queue drops")
        _ = try flow.receive(.puback(Ack(packetID: 40_000)))
        #expect(flow.enqueue(message(1)).first?.packetID == 40_000, "the only free identifier is reused")
    }
}

@Suite struct InboundFlowTests {
    @Test func qos2IsDeliveredOnceUntilReleased() throws {
        var flow = InboundFlow(receiveMaximum: 10)
        var p = message(1, qos: .exactlyOnce)
        p.packetID = 5
        #expect(try flow.received(p) == .deliver)
        p.dup = true
        #expect(try flow.received(p) == .duplicate)
        #expect(flow.released(5) == .success)
        #expect(flow.released(5) == .packetIdentifierNotFound)
        #expect(try flow.received(p) == .deliver, "after release the identifier is new again")
    }

    @Test func theReceiveMaximumIsEnforced() throws {
        var flow = InboundFlow(receiveMaximum: 2)
        for id: UInt16 in 1...2 {
            var p = message(Int(id))
            p.packetID = id
            #expect(try flow.received(p) == .deliver)
        }
        var third = message(3)
        third.packetID = 3
        #expect(throws: MQTTProtocolError.self) { try flow.received(third) }
        flow.acknowledged(1)
        #expect(try flow.received(third) == .deliver)
        #expect(try flow.received(message(4, qos: .atMostOnce)) == .deliver, "QoS 0 is not counted")
    }
}

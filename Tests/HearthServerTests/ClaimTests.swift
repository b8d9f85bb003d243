import Foundation
import HearthCore
import Hummingbird
import HummingbirdTesting
import Testing

@testable import HearthServer

@Suite struct ClaimTests {
    @Test func anOwnerClaimsAnUnclaimedDeviceWithItsLabel() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let units = try await d.provisionThermostats(2)
        try await d.application.test(.router) { client in
            let ann = try await client.owner("ann@example.com")
            let bob = try await client.owner("bob@example.com")
            let claim = #"{"serial":"\#(units[0].serial)","setupCode":"\#(units[0].setupCode.formatted)"}"#
            let r = try await client.call(.post, "/api/v1/devices/claim", body: claim, token: ann)
            #expect(r.status == 201)
            #expect(r.string("serial") == units[0].serial.rawValue)
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: claim, token: ann).status == 201,
                "idempotent for its owner")
            let stolen = try await client.call(.post, "/api/v1/devices/claim", body: claim, token: bob)
            #expect(stolen.status == 422)
            let list = try await client.call(.get, "/api/v1/devices", token: ann)
            #expect(list.text.contains(units[0].serial.rawValue))
            #expect(!list.text.contains(units[1].serial.rawValue))
            #expect(try await client.call(.get, "/api/v1/devices", token: bob).text == #"{"devices":[]}"#)
        }
    }

    @Test func aWrongCodeAndAnUnknownSerialGetTheSameAnswer() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let units = try await d.provisionThermostats(1)
        try await d.application.test(.router) { client in
            let ann = try await client.owner("ann@example.com")
            var rng = SystemRandomNumberGenerator()
            let wrongCode = try await client.call(
                .post, "/api/v1/devices/claim", body: #"{"serial":"\#(units[0].serial)","setupCode":"3141592653"}"#,
                token: ann)
            let unknown = try await client.call(
                .post, "/api/v1/devices/claim",
                body: #"{"serial":"\#(DeviceSerial.random(using: &rng))","setupCode":"3141592653"}"#, token: ann)
            #expect(wrongCode.status == 422)
            #expect(wrongCode.status == unknown.status)
            #expect(wrongCode.text == unknown.text)
        }
    }

    @Test func aThousandGuessesAreThrottledAndTheRightCodeStillWorksFromAnotherAccount() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try await d.provisionThermostats(1)[0]
        try await d.application.test(.router) { client in
            let mallory = try await client.owner("mallory@example.com")
            var rng = SystemRandomNumberGenerator()
            var statuses: [Int: Int] = [:]
            var guessed = 0
            for _ in 0..<1000 {
                var guess = SetupCode.generate(using: &rng)
                while guess == unit.setupCode { guess = SetupCode.generate(using: &rng) }
                let r = try await client.call(
                    .post, "/api/v1/devices/claim",
                    body: #"{"serial":"\#(unit.serial)","setupCode":"\#(guess.digits)"}"#, token: mallory)
                statuses[r.status, default: 0] += 1
                if r.status == 422 { guessed += 1 }
                d.time.advance(by: 0.5)
            }
            #expect(statuses[201] == nil, "no guess succeeded")
            #expect(guessed <= 10, "only a handful of guesses were even checked: \(statuses)")
            #expect((statuses[429] ?? 0) >= 990)
            #expect(try await d.store.device(unit.serial)?.owner == nil)

            // The stranger's wrong codes do not block the label's holder, who claims it at once.
            let owner = try await client.owner("owner@example.com")
            let right = #"{"serial":"\#(unit.serial)","setupCode":"\#(unit.setupCode.digits)"}"#
            #expect(try await client.call(.post, "/api/v1/devices/claim", body: right, token: owner).status == 201)
        }
    }

    @Test func aReleasedDeviceReturnsToItsOwnCode() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let unit = try await d.provisionThermostats(1)[0]
        try await d.application.test(.router) { client in
            let ann = try await client.owner("ann@example.com")
            let right = #"{"serial":"\#(unit.serial)","setupCode":"\#(unit.setupCode.digits)"}"#
            #expect(try await client.call(.post, "/api/v1/devices/claim", body: right, token: ann).status == 201)
            let unclaim = try await client.call(
                .post, "/api/v1/devices/\(unit.serial)/unclaim", body: #"{"history":"keep"}"#, token: ann)
            #expect(unclaim.status == 200, "\(unclaim.text)")
            let bob = try await client.owner("bob@example.com")
            #expect(
                try await client.call(.post, "/api/v1/devices/claim", body: right, token: bob).status == 201,
                "the same label code works for the next owner")
        }
    }
}

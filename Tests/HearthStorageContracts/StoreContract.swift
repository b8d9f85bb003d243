import Foundation
import HearthCore
import HearthStorage

/// The behaviour every `HearthStore` driver must show. A driver's tests run each case against a
/// fresh, empty store: `@Test(arguments: StoreContract.cases)`.
///
/// It needs nothing from a test framework, so a future driver's test target can run it unchanged.
public enum StoreContract {
    public struct Case: Sendable, CustomStringConvertible {
        public let description: String
        public let run: @Sendable (any HearthStore) async throws -> Void
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    static func require(_ condition: Bool, _ message: String, line: Int = #line) throws {
        if !condition { throw Failure(description: "StoreContract line \(line): \(message)") }
    }

    static func requireThrows(
        _ code: HearthError.Code, _ message: String, line: Int = #line, _ body: () async throws -> Void
    ) async throws {
        do {
            try await body()
        } catch let e as HearthError where e.code == code {
            return
        } catch {
            throw Failure(description: "StoreContract line \(line): \(message): threw \(error)")
        }
        throw Failure(description: "StoreContract line \(line): \(message): did not throw")
    }

    public static let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    static func audit(_ kind: AuditKind = .accountCreated) -> AuditEntry { AuditEntry(kind, at: t0) }

    static func account(_ n: Int, role: Role = .owner) -> AccountRecord {
        AccountRecord(
            id: AccountID(), role: role, emailIndex: "index-\(n)", emailSealed: Data([1, 2, UInt8(n)]),
            passwordHash: "scrypt$hash\(n)", createdAt: t0)
    }

    static func device(_ model: ProductModel) -> DeviceRecord {
        var rng = SystemRandomNumberGenerator()
        return DeviceRecord(
            serial: DeviceSerial.random(using: &rng), model: model.id, certificatePEM: "PEM",
            setupCodeHash: "scrypt$code", provisionedAt: t0)
    }

    /// The end of `owner`'s hold (claimed at t0) of a device.
    static func ended(
        _ serial: DeviceSerial, _ owner: AccountID, kept: Bool = true, reason: ReleaseReason = .unclaimed,
        at: Date = t0 + 3600
    ) -> OwnershipRecord {
        OwnershipRecord(serial: serial, owner: owner, claimedAt: t0, releasedAt: at, reason: reason, historyKept: kept)
    }

    public static let cases: [Case] = [
        Case(description: "a lease has one holder until it expires; its holder renews it") { store in
            try await require(store.acquireLease("x", holder: "a", now: t0, until: t0 + 60), "free: taken")
            try await require(!(store.acquireLease("x", holder: "b", now: t0 + 10, until: t0 + 70)), "held by a")
            try await require(store.acquireLease("x", holder: "a", now: t0 + 20, until: t0 + 80), "a renews")
            try await require(!(store.acquireLease("x", holder: "b", now: t0 + 79, until: t0 + 140)), "renewed")
            try await require(store.acquireLease("x", holder: "b", now: t0 + 80, until: t0 + 140), "expired: b")
            try await require(!(store.acquireLease("x", holder: "a", now: t0 + 90, until: t0 + 150)), "b's now")
            try await require(store.acquireLease("y", holder: "a", now: t0 + 90, until: t0 + 150), "leases apart")
            // Ten nodes asking at once: one gets it.
            let winners = try await withThrowingTaskGroup(of: Bool.self) { group in
                for n in 0..<10 {
                    group.addTask { try await store.acquireLease("z", holder: "node\(n)", now: t0, until: t0 + 60) }
                }
                return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            try require(winners == 1, "one holder of ten asking at once: \(winners)")
        },
        Case(description: "throttle states are updated atomically, kept, deleted and swept") { store in
            let blocked = ThrottleState(failures: 7, inFlight: 0, blockedUntil: t0 + 7200, lastFailure: t0)
            let busy = ThrottleState(failures: 1, inFlight: 2, blockedUntil: nil, lastFailure: t0)
            try await store.updateThrottles(["k1", "k2"]) { stored in
                guard stored.isEmpty else { throw Failure(description: "fresh keys have no state") }
                return (
                    (),
                    [
                        "k1": StoredThrottle(state: blocked, reservedAt: nil),
                        "k2": StoredThrottle(state: busy, reservedAt: t0),
                    ]
                )
            }
            let back = try await store.updateThrottles(["k1", "k2", "k3"]) { ($0, [:]) }
            try require(back["k1"]?.state == blocked && back["k2"]?.state == busy, "kept: \(back)")
            try require(back["k2"]?.reservedAt == t0 && back["k3"] == nil, "with the reservation time")
            struct Refused: Error {}
            _ = try? await store.updateThrottles(["k1"]) { _ -> ((), [String: StoredThrottle?]) in throw Refused() }
            try await require(
                store.updateThrottles(["k1"]) { ($0, [:]) }["k1"]?.state == blocked, "a throw keeps nothing")
            let delete: StoredThrottle? = nil
            try await store.updateThrottles(["k2"]) { _ in ((), ["k2": delete]) }
            try await require(store.updateThrottles(["k2"]) { ($0, [:]) }.isEmpty, "nil deletes")
            // Fifty updates of one key at once: none is lost.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<50 {
                    group.addTask {
                        try await store.updateThrottles(["count"]) { stored in
                            let n = stored["count"]?.state.failures ?? 0
                            return (
                                (),
                                [
                                    "count": StoredThrottle(
                                        state: ThrottleState(
                                            failures: n + 1, inFlight: 0, blockedUntil: nil, lastFailure: t0),
                                        reservedAt: nil)
                                ]
                            )
                        }
                    }
                }
                try await group.waitForAll()
            }
            let counted = try await store.updateThrottles(["count"]) { ($0["count"]?.state.failures, [:]) }
            try require(counted == 50, "fifty at once, fifty counted: \(counted ?? 0)")
            // Swept: idle and old goes; a block in force, a recent failure or a live reservation stays.
            try await store.updateThrottles(["live"]) { _ in
                ((), ["live": StoredThrottle(state: busy, reservedAt: t0 + 3500)])
            }
            let swept = try await store.deleteIdleThrottles(
                now: t0 + 3600, reservedBefore: t0 + 3480, failedBefore: t0 + 1)
            let left = try await store.updateThrottles(["k1", "count", "live"]) { (Set($0.keys), [:]) }
            try require(
                swept == 1 && left == ["k1", "live"], "the counted key went, the rest stayed: \(swept) \(left)")
        },
        Case(description: "accounts are unique by e-mail index and found by index and id") { store in
            let a = account(1)
            try await store.createAccount(a, audit: audit())
            try await require(store.account(emailIndex: "index-1") == a, "found by index")
            try await require(store.account(id: a.id) == a, "found by id")
            try await require(store.account(emailIndex: "index-2") == nil, "unknown index")
            try await requireThrows(.conflict, "duplicate e-mail") {
                try await store.createAccount(
                    AccountRecord(
                        id: AccountID(), role: .owner, emailIndex: "index-1", emailSealed: Data(), passwordHash: "x",
                        createdAt: t0), audit: audit())
            }
            try await require(!(store.hasOperator()), "no operator yet")
            try await store.createAccount(account(2, role: .operator), audit: audit())
            try await require(store.hasOperator(), "operator exists")
        },
        Case(description: "a failed write changes nothing, its audit entry included") { store in
            try await store.createAccount(account(1), audit: audit())
            let before = try await store.auditRecords().count
            try? await store.createAccount(
                AccountRecord(
                    id: AccountID(), role: .owner, emailIndex: "index-1", emailSealed: Data(), passwordHash: "x",
                    createdAt: t0), audit: audit())
            try await require(store.auditRecords().count == before, "no audit record for a failed write")
        },
        Case(description: "a set-up link works once, only before expiry, and only the newest") { store in
            try await store.replaceSetupLink(
                SetupLinkRecord(tokenHash: "old", createdAt: t0, expiresAt: t0 + 3600), audit: audit(.setupLinkIssued))
            try await store.replaceSetupLink(
                SetupLinkRecord(tokenHash: "new", createdAt: t0, expiresAt: t0 + 3600), audit: audit(.setupLinkIssued))
            try await requireThrows(.expired, "the replaced link") {
                try await store.redeemSetupLink(
                    tokenHash: "old", now: t0, creating: account(1, role: .operator), audit: [])
            }
            try await requireThrows(.expired, "after expiry") {
                try await store.redeemSetupLink(
                    tokenHash: "new", now: t0 + 3600, creating: account(1, role: .operator), audit: [])
            }
            try await require(!(store.hasOperator()), "nothing created by failed redemptions")
            try await store.redeemSetupLink(
                tokenHash: "new", now: t0 + 3599, creating: account(1, role: .operator), audit: [audit(.setupLinkUsed)])
            try await require(store.hasOperator(), "operator created")
            try await requireThrows(.expired, "second use") {
                try await store.redeemSetupLink(
                    tokenHash: "new", now: t0, creating: account(2, role: .operator), audit: [])
            }
        },
        Case(description: "sessions are found by token hash, deleted, and expired ones swept") { store in
            let a = account(1)
            try await store.createAccount(a, audit: audit())
            let s1 = SessionRecord(tokenHash: "s1", account: a.id, createdAt: t0, expiresAt: t0 + 60)
            let s2 = SessionRecord(tokenHash: "s2", account: a.id, createdAt: t0, expiresAt: t0 + 600)
            try await store.createSession(s1, audit: audit(.signIn))
            try await store.createSession(s2, audit: audit(.signIn))
            try await require(store.session(tokenHash: "s1") == s1, "found")
            try await require(store.deleteExpiredSessions(now: t0 + 61) == 1, "one expired")
            try await require(store.session(tokenHash: "s1") == nil, "swept")
            try await store.deleteSession(tokenHash: "s2", audit: audit(.signOut))
            try await require(store.session(tokenHash: "s2") == nil, "deleted")
        },
        Case(description: "models round-trip and ids are unique") { store in
            let models = ProductModel.demoModels()
            for m in models { try await store.createModel(m, at: t0, audit: audit(.modelCreated)) }
            try await require(store.models() == models.sorted { $0.id.rawValue < $1.id.rawValue }, "listed")
            try await require(store.model(models[0].id) == models[0], "found")
            try await requireThrows(.conflict, "duplicate id") {
                try await store.createModel(models[0], at: t0, audit: audit(.modelCreated))
            }
        },
        Case(description: "consents are recorded by the device's owner only, as a history, per owner") { store in
            let model = ProductModel.demoModels()[0]
            try await store.createModel(model, at: t0, audit: audit(.modelCreated))
            let (a, b) = (account(1), account(2))
            try await store.createAccount(a, audit: audit())
            try await store.createAccount(b, audit: audit())
            let d = device(model)
            try await store.addDevices([d], audit: audit(.devicesProvisioned))
            func choice(_ who: AccountID, _ granted: Bool, _ at: Date = t0) -> ConsentRecord {
                ConsentRecord(
                    serial: d.serial, owner: who, purpose: "comfort", granted: granted, noticeVersion: "v1", at: at)
            }
            let before = try await store.auditRecords().count
            try await require(
                !(store.recordConsents([choice(a.id, true)], audit: audit(.consentChanged))), "not before a claim")
            try await require(store.auditRecords().count == before, "a refused choice records nothing")
            _ = try await store.claimDevice(
                d.serial, owner: a.id, emailIndex: a.emailIndex, at: t0, audit: audit(.deviceClaimed))
            try await require(
                store.recordConsents([choice(a.id, true)], audit: audit(.consentChanged)), "the owner agrees")
            try await require(
                store.recordConsents([choice(a.id, false, t0 + 60)], audit: audit(.consentChanged)), "and withdraws")
            try await require(
                !(store.recordConsents([choice(b.id, true)], audit: audit(.consentChanged))), "not another account")
            let history = try await store.consents(d.serial, owner: a.id)
            try await require(
                history == [choice(a.id, true), choice(a.id, false, t0 + 60)], "history in order: \(history)")
            try await require(history.granted.isEmpty, "the latest choice counts")
            try await requireThrows(.invalidInput, "one device and owner per call") {
                _ = try await store.recordConsents(
                    [choice(a.id, true), choice(b.id, true)], audit: audit(.consentChanged))
            }
            _ = try await store.releaseDevice(
                ended(d.serial, a.id), reservation: nil, revoke: false, audit: audit(.deviceReleased))
            _ = try await store.claimDevice(
                d.serial, owner: b.id, emailIndex: b.emailIndex, at: t0, audit: audit(.deviceClaimed))
            try await require(store.consents(d.serial, owner: b.id).isEmpty, "a new owner starts with nothing agreed")
        },
        Case(description: "devices are claimed once, listed by owner, and released to unclaimed") { store in
            let model = ProductModel.demoModels()[0]
            try await store.createModel(model, at: t0, audit: audit(.modelCreated))
            let (a, b) = (account(1), account(2))
            try await store.createAccount(a, audit: audit())
            try await store.createAccount(b, audit: audit())
            let devices = (0..<3).map { _ in device(model) }
            try await store.addDevices(devices, audit: audit(.devicesProvisioned))
            try await require(store.deviceCount() == 3, "three devices")
            try await requireThrows(.conflict, "duplicate serial") {
                try await store.addDevices([devices[0]], audit: audit(.devicesProvisioned))
            }
            try await require(store.deviceCount() == 3, "batch with a duplicate added nothing")
            try await require(
                store.claimDevice(
                    devices[0].serial, owner: a.id, emailIndex: a.emailIndex, at: t0, audit: audit(.deviceClaimed)),
                "first claim")
            let audits = try await store.auditRecords().count
            try await require(
                !(store.claimDevice(
                    devices[0].serial, owner: b.id, emailIndex: b.emailIndex, at: t0, audit: audit(.deviceClaimed))),
                "second claim refused")
            try await require(store.auditRecords().count == audits, "a refused claim records nothing")
            try await require(store.devices(ownedBy: a.id).map(\.serial) == [devices[0].serial], "listed for its owner")
            try await require(store.devices(ownedBy: b.id).isEmpty, "not for another")
            let claimed = try await store.device(devices[0].serial)
            try await require(claimed?.owner == a.id && claimed?.claimedAt == t0, "owner and time stored")
            try await require(
                !(store.releaseDevice(
                    ended(devices[0].serial, b.id), reservation: nil, revoke: false, audit: audit(.deviceReleased))),
                "only its owner releases it")
            try await require(
                !(store.releaseDevice(
                    OwnershipRecord(
                        serial: devices[0].serial, owner: a.id, claimedAt: t0 - 1, releasedAt: t0 + 1,
                        reason: .unclaimed, historyKept: true),
                    reservation: nil, revoke: false, audit: audit(.deviceReleased))),
                "only the hold that is current (claimed at t0)")
            try await require(store.auditRecords().count == audits, "a refused release records nothing")
            try await require(store.ownerships(of: b.id).isEmpty, "and stores no history")
            _ = try await store.nameDevice(
                devices[0].serial, owner: a.id, nameSealed: Data([7]), audit: audit(.deviceNamed))
            try await require(
                store.releaseDevice(
                    ended(devices[0].serial, a.id), reservation: nil, revoke: false, audit: audit(.deviceReleased)),
                "released by its owner")
            let released = try await store.device(devices[0].serial)
            try await require(
                released?.owner == nil && released?.claimedAt == nil && released?.nameSealed == nil
                    && released?.revokedAt == nil && released?.setupCodeHash == devices[0].setupCodeHash,
                "released to its own code, the owner's name for it forgotten")
            try await require(store.ownerships(of: a.id) == [ended(devices[0].serial, a.id)], "in A's history")
            try await require(
                store.claimDevice(
                    devices[0].serial, owner: b.id, emailIndex: b.emailIndex, at: t0, audit: audit(.deviceClaimed)),
                "claimable again")
        },
        Case(description: "a transfer reserves the device for its recipient; disposal revokes; purges are tracked") {
            store in
            let model = ProductModel.demoModels()[0]
            try await store.createModel(model, at: t0, audit: audit(.modelCreated))
            let (a, b, c) = (account(1), account(2), account(3))
            for x in [a, b, c] { try await store.createAccount(x, audit: audit()) }
            let (d, e) = (device(model), device(model))
            try await store.addDevices([d, e], audit: audit(.devicesProvisioned))
            for x in [d, e] {
                _ = try await store.claimDevice(
                    x.serial, owner: a.id, emailIndex: a.emailIndex, at: t0, audit: audit(.deviceClaimed))
            }
            let until = t0 + 86_400
            try await require(
                store.releaseDevice(
                    ended(d.serial, a.id, kept: false, reason: .transferred),
                    reservation: DeviceReservation(emailIndex: b.emailIndex, until: until), revoke: false,
                    audit: audit(.deviceReleased)), "transferred")
            try await require(
                store.device(d.serial)?.reservation == DeviceReservation(emailIndex: b.emailIndex, until: until),
                "reserved")
            for x in [a, c] {
                try await require(
                    !(store.claimDevice(
                        d.serial, owner: x.id, emailIndex: x.emailIndex, at: t0 + 60, audit: audit(.deviceClaimed))),
                    "not claimable by anyone but the recipient meanwhile")
            }
            try await require(
                store.claimDevice(
                    d.serial, owner: b.id, emailIndex: b.emailIndex, at: t0 + 60, audit: audit(.deviceClaimed)),
                "the recipient claims it")
            try await require(store.device(d.serial)?.reservation == nil, "the reservation is spent")
            // An expired reservation binds nobody.
            _ = try await store.releaseDevice(
                OwnershipRecord(
                    serial: d.serial, owner: b.id, claimedAt: t0 + 60, releasedAt: t0 + 120, reason: .transferred,
                    historyKept: true),
                reservation: DeviceReservation(emailIndex: a.emailIndex, until: t0 + 180), revoke: false,
                audit: audit(.deviceReleased))
            try await require(
                !(store.claimDevice(
                    d.serial, owner: c.id, emailIndex: c.emailIndex, at: t0 + 179, audit: audit(.deviceClaimed))),
                "reserved until its end")
            try await require(
                store.claimDevice(
                    d.serial, owner: c.id, emailIndex: c.emailIndex, at: t0 + 180, audit: audit(.deviceClaimed)),
                "free after it")
            try await require(
                store.releaseDevice(
                    ended(e.serial, a.id, kept: false, reason: .disposed), reservation: nil, revoke: true,
                    audit: audit(.deviceReleased)), "disposed")
            try await require(store.device(e.serial)?.revokedAt == t0 + 3600, "revoked with the release")
            let pending = try await store.pendingPurges(limit: 10)
            try await require(
                Set(pending.map(\.serial)) == [d.serial, e.serial] && pending.allSatisfy { $0.owner == a.id },
                "histories not kept wait for deletion: \(pending)")
            try await store.markPurged(pending[0], at: t0 + 4000)
            try await require(store.pendingPurges(limit: 10).count == 1, "one done")
            try await require(
                store.ownerships(of: a.id).contains { $0.purgedAt == t0 + 4000 }, "when it was done is kept")
        },
        Case(description: "an owner names only their own device; the fleet pages in serial order with filters") {
            store in
            let models = ProductModel.demoModels()
            for m in models { try await store.createModel(m, at: t0, audit: audit(.modelCreated)) }
            let (a, b) = (account(1), account(2))
            try await store.createAccount(a, audit: audit())
            try await store.createAccount(b, audit: audit())
            let thermostats = (0..<7).map { _ in device(models[0]) }
            let locks = (0..<3).map { _ in device(models[1]) }
            try await store.addDevices(thermostats + locks, audit: audit(.devicesProvisioned))
            try await require(
                store.claimDevice(
                    thermostats[0].serial, owner: a.id, emailIndex: a.emailIndex, at: t0, audit: audit(.deviceClaimed)),
                "claimed")
            let before = try await store.auditRecords().count
            try await require(
                !(store.nameDevice(
                    thermostats[0].serial, owner: b.id, nameSealed: Data([9]), audit: audit(.deviceNamed))),
                "not B's to name")
            try await require(
                !(store.nameDevice(
                    thermostats[1].serial, owner: a.id, nameSealed: Data([9]), audit: audit(.deviceNamed))),
                "unclaimed: nobody's to name")
            try await require(store.auditRecords().count == before, "a refused name records nothing")
            try await require(
                store.nameDevice(
                    thermostats[0].serial, owner: a.id, nameSealed: Data([7, 7]), audit: audit(.deviceNamed)), "named")
            try await require(store.device(thermostats[0].serial)?.nameSealed == Data([7, 7]), "stored")
            try await require(
                store.nameDevice(thermostats[0].serial, owner: a.id, nameSealed: nil, audit: audit(.deviceNamed)),
                "cleared")
            try await require(store.device(thermostats[0].serial)?.nameSealed == nil, "cleared stored")
            // Paging: three at a time, each device once, in serial order.
            var seen: [DeviceSerial] = []
            var after: DeviceSerial?
            while true {
                let page = try await store.fleet(after: after, filter: FleetFilter(), limit: 3)
                seen += page.map(\.serial)
                guard page.count == 3 else { break }
                after = page.last?.serial
            }
            try await require(
                seen == (thermostats + locks).map(\.serial).sorted { $0.rawValue < $1.rawValue },
                "every device once, in order: \(seen.count)")
            try await require(store.fleetCount(FleetFilter()) == 10, "count")
            try await require(store.fleetCount(FleetFilter(model: models[1].id)) == 3, "by model")
            try await require(
                store.fleet(after: nil, filter: FleetFilter(model: models[1].id), limit: 10).allSatisfy {
                    $0.model == models[1].id
                }, "only that model")
            try await require(store.fleetCount(FleetFilter(claimed: true)) == 1, "claimed")
            try await require(store.fleetCount(FleetFilter(claimed: false)) == 9, "not claimed")
            let serial = thermostats[2].serial.rawValue
            try await require(
                store.fleet(after: nil, filter: FleetFilter(serialPrefix: serial), limit: 10).map(\.serial) == [
                    thermostats[2].serial
                ], "a whole serial as prefix")
            try await require(store.fleetCount(FleetFilter(serialPrefix: String(serial.prefix(3)))) >= 1, "a prefix")
            try await require(store.fleet(after: nil, filter: FleetFilter(), limit: -5).isEmpty, "no negative page")
            try await require(store.fleet(after: nil, filter: FleetFilter(), limit: 0).isEmpty, "no empty page")
        },
        Case(description: "a subject's audit records come newest first; an account's sessions end together") { store in
            let a = account(1)
            let b = account(2)
            try await store.createAccount(a, audit: audit())
            try await store.createAccount(b, audit: audit())
            for (i, subject) in ["S1", "S2", "S1", "S1"].enumerated() {
                try await store.appendAudit(AuditEntry(.commandSent, subject: subject, detail: "c\(i)", at: t0))
            }
            try await require(
                store.auditRecords(subject: "S1", limit: 2).map(\.detail) == ["c3", "c2"], "newest first, limited")
            try await require(store.auditRecords(subject: "none", limit: 5).isEmpty, "none")
            try await require(store.auditRecords(subject: "S1", limit: -1).isEmpty, "negative limit")
            for (hash, who) in [("a1", a), ("a2", a), ("b1", b)] {
                try await store.createSession(
                    SessionRecord(tokenHash: hash, account: who.id, createdAt: t0, expiresAt: t0 + 600),
                    audit: audit(.signIn))
            }
            try await require(Set(store.sessions(of: a.id).map(\.tokenHash)) == ["a1", "a2"], "A's sessions")
            try await require(store.deleteSessions(of: a.id, audit: audit(.signOutEverywhere)) == 2, "both ended")
            try await require(store.sessions(of: a.id).isEmpty, "A has none")
            try await require(store.session(tokenHash: "b1") != nil, "B's untouched")
        },
        Case(description: "every write appends one chained audit record, and the head follows") { store in
            try await store.appendAudit(AuditEntry(.serverStarted, detail: "one", at: t0))
            try await store.createAccount(account(1), audit: audit())
            let records = try await store.auditRecords()
            try await require(records.map(\.sequence) == [1, 2], "sequence")
            try await require(records[1].previousMAC == records[0].mac, "chained")
            try await require(store.auditHead()?.sequence == 2, "head")
            try await require(store.auditHead()?.mac == records[1].mac, "head mac")
        },
        Case(
            description:
                "vulnerability reports: stored sealed, found by id and status token, moved only along the workflow"
        ) { store in
            var rng = SystemRandomNumberGenerator()
            let id = ReportID.random(using: &rng)
            let received = ReportEvent(at: t0, state: .received, actor: nil, noteSealed: nil)
            let report = ReportRecord(
                id: id, receivedAt: t0, state: .received, statusTokenHash: "token-hash-1", sealed: Data([9, 9]),
                events: [received])
            try await store.createReport(report, audit: audit(.reportReceived))
            try await require(store.report(id) == report, "found by id")
            try await require(store.report(statusTokenHash: "token-hash-1") == report, "found by status token")
            try await require(store.report(statusTokenHash: "token-hash-2") == nil, "another token finds nothing")
            let ack = ReportEvent(
                at: t0.addingTimeInterval(60), state: .acknowledged, actor: "op", noteSealed: Data([7]))
            try await require(store.moveReport(id, from: .received, event: ack, audit: audit(.reportMoved)), "moved")
            try await require(
                !(store.moveReport(id, from: .received, event: ack, audit: audit(.reportMoved))),
                "a stale move changes nothing")
            let moved = try await store.report(id)
            try await require(moved?.state == .acknowledged && moved?.events == [received, ack], "state and history")
            let before = try await store.auditRecords().count
            _ = try await store.moveReport(id, from: .fixed, event: ack, audit: audit(.reportMoved))
            try await require(store.auditRecords().count == before, "no audit record for a move that did not happen")
            let other = ReportRecord(
                id: ReportID.random(using: &rng), receivedAt: t0.addingTimeInterval(10), state: .received,
                statusTokenHash: "token-hash-3", sealed: Data(), events: [received])
            try await store.createReport(other, audit: audit(.reportReceived))
            try await require(store.reports().map(\.id) == [other.id, id], "newest first")
        },
        Case(description: "publishing an advisory discloses its fixed report in the same transaction") { store in
            var rng = SystemRandomNumberGenerator()
            let id = ReportID.random(using: &rng)
            let received = ReportEvent(at: t0, state: .received, actor: nil, noteSealed: nil)
            try await store.createReport(
                ReportRecord(
                    id: id, receivedAt: t0, state: .fixed, statusTokenHash: "h", sealed: Data(), events: [received]),
                audit: audit(.reportReceived))
            let model = try ProductModelID("thermostat-t1")
            let advisory = AdvisoryRecord(
                id: "HEARTH-SA-1", reportID: id, publishedAt: t0, title: "t", severity: "low", models: [model],
                fixedVersion: "1.3", csaf: "{}", osv: "{}")
            let disclosed = ReportEvent(at: t0, state: .disclosed, actor: "op", noteSealed: nil)
            try await require(
                store.publishAdvisory(advisory, reportFrom: .fixed, event: disclosed, audit: audit(.advisoryPublished)),
                "published")
            try await require(store.advisories() == [advisory], "listed as stored")
            try await require(store.report(id)?.state == .disclosed, "the report is disclosed")
            let again = AdvisoryRecord(
                id: "HEARTH-SA-2", reportID: id, publishedAt: t0, title: "t", severity: "low", models: [model],
                fixedVersion: "1.3", csaf: "{}", osv: "{}")
            try await require(
                !(store.publishAdvisory(again, reportFrom: .fixed, event: disclosed, audit: audit(.advisoryPublished))),
                "not from a report no longer fixed")
            try await require(store.advisories().count == 1, "nothing added")
        },
        Case(description: "the security team is a grant on an account") { store in
            let a = account(1, role: .operator)
            try await store.createAccount(a, audit: audit())
            try await require(!(store.isSecurityTeam(a.id)), "not by default")
            try await store.setSecurityTeam(a.id, member: true, audit: audit(.securityTeamChanged))
            try await require(store.isSecurityTeam(a.id), "granted")
            try await store.setSecurityTeam(a.id, member: false, audit: audit(.securityTeamChanged))
            try await require(!(store.isSecurityTeam(a.id)), "withdrawn")
        },
        Case(description: "one data key per owner and one for the deployment; an account's goes with it") { store in
            let a = account(1)
            try await store.createAccount(a, audit: audit())
            try await require(store.dataKey(owner: a.id) == nil, "none until made")
            let first = DataKeyRecord(id: "k1", owner: a.id, wrapped: Data([1, 2, 3]), createdAt: t0)
            try await require(store.addDataKey(first) == first, "stored")
            let racing = DataKeyRecord(id: "k2", owner: a.id, wrapped: Data([4]), createdAt: t0)
            try await require(store.addDataKey(racing) == first, "a second key for the owner loses to the first")
            let deployment = DataKeyRecord(id: "k3", owner: nil, wrapped: Data([5]), createdAt: t0)
            try await require(store.addDataKey(deployment) == deployment, "the deployment's")
            try await require(store.dataKey(owner: nil) == deployment, "found")
            try await require(
                store.dataKeys(ids: ["k1", "k2", "k3", "k9"]).map(\.id).sorted() == ["k1", "k3"], "by id, only existing"
            )
            try await require(
                store.setDeletion(
                    a.id, DeletionRequest(requestedAt: t0, after: t0, receiptTokenHash: "t"),
                    audit: audit(.deletionRequested)),
                "deletion requested")
            try await require(store.deleteAccount(a.id, receipt: "{}", audit: audit(.accountDeleted)), "deleted")
            try await require(store.dataKey(owner: a.id) == nil, "the owner's key went with the account")
            try await require(store.dataKeys(ids: ["k1", "k3"]).map(\.id) == ["k3"], "the deployment's stays")
        },
        Case(description: "a pending certificate works beside the current one until promoted") { store in
            let model = ProductModel.demoModels()[0]
            try await store.createModel(model, at: t0, audit: audit(.modelCreated))
            let (d, revoked) = (device(model), device(model))
            try await store.addDevices([d, revoked], audit: audit(.devicesProvisioned))
            try await require(
                !(store.promoteCertificate(d.serial, pem: "NEW", audit: audit(.deviceCertificateReplaced))),
                "nothing pending")
            try await require(
                store.setPendingCertificate(d.serial, pem: "NEW", audit: audit(.deviceCertificateIssued)), "pending")
            try await require(store.device(d.serial)?.certificatePEM == "PEM", "the current one stays")
            try await require(
                !(store.promoteCertificate(d.serial, pem: "OTHER", audit: audit(.deviceCertificateReplaced))),
                "only the pending one")
            try await require(
                store.promoteCertificate(d.serial, pem: "NEW", audit: audit(.deviceCertificateReplaced)), "promoted")
            let after = try await store.device(d.serial)
            try await require(after?.certificatePEM == "NEW" && after?.pendingCertificatePEM == nil, "switched")
            _ = try await store.revokeDevice(revoked.serial, at: t0, audit: audit(.deviceRevoked))
            try await require(
                !(store.setPendingCertificate(revoked.serial, pem: "NEW", audit: audit(.deviceCertificateIssued))),
                "not for a revoked device")
            try await require(
                !(store.setPendingCertificate(device(model).serial, pem: "NEW", audit: audit(.deviceCertificateIssued))),
                "not for an unknown one")
        },
    ]
}

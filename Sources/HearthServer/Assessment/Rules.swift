import Foundation
import HearthCore

/// How Hearth answers one provision: who meets it (Hearth's server and device SDK, or the maker's
/// hardware and process, which only the maker's statement can show), the mechanism in words (the
/// IXIT text), the tests that prove the mechanism, the live checks it depends on, and what the
/// deployment's configuration shows (with the problem and its fix when it falls short).
struct ProvisionRule: Sendable {
    enum Party: String, Sendable {
        case hearth
        case maker
    }

    struct Problem: Sendable {
        let why: String
        let fix: String
        /// Hearth does not offer this; a maker who does (in their own app, say) may state how.
        var makerMayState = false
    }

    let party: Party
    let how: String
    let tests: [String]
    let checks: [LiveCheckID]
    let evidence: @Sendable (AssessmentInput) -> (seen: [String], problem: Problem?)

    init(
        _ party: Party, _ how: String, tests: [String] = [], checks: [LiveCheckID] = [],
        evidence: @escaping @Sendable (AssessmentInput) -> (seen: [String], problem: Problem?) = { _ in ([], nil) }
    ) {
        self.party = party
        self.how = how
        self.tests = tests
        self.checks = checks
        self.evidence = evidence
    }

    /// A provision only the maker's statement can show met: the maker's hardware or process.
    static func maker(_ what: String) -> ProvisionRule { ProvisionRule(.maker, what) }
}

extension ProvisionCondition {
    /// Whether the condition holds for this deployment; nil when only the maker can say.
    func holds(_ input: AssessmentInput) -> Bool? {
        switch self {
        // Owners sign in to the service with passwords; devices carry a setup code on their label.
        case .passwordsUsed, .preinstalledPasswords, .userAuthentication: true
        // Hearth devices speak TLS 1.2+ and verify signed updates: not constrained devices.
        case .notConstrained, .updateable, .networkUpdates, .automaticUpdates: true
        case .constrainedWithoutUpdates: false
        // Each unit's key and certificate are provisioned at the factory.
        case .hardCodedIdentity: true
        case .debugInterface: nil
        case .consent: input.models.contains { !$0.model.optionalPurposes.isEmpty }
        case .telemetry: input.models.contains { !$0.model.telemetry.isEmpty }
        }
    }

    /// Why it does not hold, in words (the justification 5.0-1 asks for).
    var whyNot: String {
        switch self {
        case .constrainedWithoutUpdates:
            "Every Hearth device takes signed updates over the network (TUF), so no device is one that cannot be updated."
        case .consent:
            "No model of this deployment declares an optional purpose: all processing is essential to the device's function."
        case .telemetry: "No model of this deployment declares telemetry."
        default: "The condition (\(text)) does not hold for this deployment."
        }
    }
}

extension ProvisionRule {
    static func listener(_ input: AssessmentInput, _ name: String) -> String {
        guard let l = input.serving?.listener(name) else { return "\(name): not running" }
        return "\(name) listener \(l.host):\(l.port) (\(l.security.rawValue))"
    }

    static func serving(_ input: AssessmentInput, _ body: (ServingRecord) -> [String]) -> [String] {
        input.serving.map(body) ?? ["No server is running on this data folder: its configuration could not be read."]
    }

    static let noServer = Problem(
        why: "no server is running on this data folder, so its configuration and listeners could not be checked",
        fix: "Start the server (`hearth serve --data DIR`) and assess again.")

    /// The models whose fields or commands say nothing of what their data is.
    static func undeclared(_ input: AssessmentInput) -> (seen: [String], problem: Problem?) {
        let seen = input.models.map { m in
            "\(m.model.id): \(m.model.telemetry.count) telemetry fields, \(m.model.commands.count) commands, \(m.model.purposes.count) purposes"
        }
        let missing = input.models.filter { !$0.undeclared.isEmpty }
        guard !missing.isEmpty else { return (seen, nil) }
        return (
            seen,
            Problem(
                why: missing.map {
                    "model \($0.model.id) declares nothing for \($0.undeclared.joined(separator: ", "))"
                }
                .joined(separator: "; "),
                fix:
                    "Give every telemetry field and command a \"data\" object (category, purpose, personal, recipients, retentionDays) in the model file and define it with `hearth model add FILE` (a model with a new id)."
            )
        )
    }

    /// The rule for each provision id of ``Provision/all``.
    static let rules: [String: ProvisionRule] = [
        "5.1-1": ProvisionRule(
            .hearth,
            "Owners choose their own password (15 to 256 characters, no composition rules, checked against 19,640 common and breached passwords and context words, NIST SP 800-63B). Devices have no password: each authenticates with its own certificate. The first operator account is created through a one-time set-up link; no account exists by default.",
            tests: [
                "AccountTests.nothingAcceptsADefaultCredential",
                "PasswordPolicyTests.commonPasswordsAndVariationsAreRefused",
                "AccountTests.theSetupLinkCreatesTheOperatorExactlyOnce",
            ], checks: [.commonPasswords]),
        "5.1-2": ProvisionRule(
            .hearth,
            "Each unit's setup code (on its label, used once to claim it) is 10 random digits from the system's CSPRNG, never derived from the serial; stored only as an scrypt hash; claim attempts are throttled per device and per account.",
            tests: [
                "SetupCodeTests.generatedCodesAreTenDigitsUnguessableAndSpread",
                "SecretsAtRestTests.tenThousandUnitsGetDistinctUnguessableCodesAndDeviceCACertificates",
                "ClaimTests.aThousandGuessesAreThrottledAndTheRightCodeStillWorksFromAnotherAccount",
            ]),
        "5.1-3": ProvisionRule(
            .hearth,
            "Passwords and setup codes are hashed with scrypt; sessions are 256-bit random tokens stored hashed; devices authenticate with P-256 certificates over mutual TLS.",
            tests: [
                "PKITests.verifiesOnlyTheRightSecretAndSaltsEachHash", "PKITests.tokensAreLongRandomAndStoredHashed",
            ],
            checks: [.listenersTLS]
        ) { input in
            (
                serving(input) {
                    [
                        "password and setup-code hash: \($0.passwordHash)",
                        "session lifetime: \($0.sessionLifetimeSeconds) s",
                    ]
                }, nil
            )
        },
        "5.1-4": ProvisionRule(
            .hearth,
            "An owner changes their password on the account page or through the API (the current one is required, every other session ends), and can reset it with a recovery code.",
            tests: [
                "CredentialTests.changingThePasswordNeedsTheCurrentOneAndEndsEveryOtherSession",
                "CredentialTests.ownersChangeAndRecoverThroughThePages",
            ]),
        "5.1-5": ProvisionRule(
            .hearth,
            "Sign-ins are throttled per account and per source (doubling delays), setup-code claims per device and per account, password hashing is bounded (503 beyond); the gateway refuses connects beyond its rate.",
            tests: [
                "SecurityDefectTests.parallelWrongSignInsFromOneSourceAreEvaluatedExactlyFiveTimes",
                "SecurityDefectTests.parallelWrongSetupCodesAreEvaluatedOnlyAsOftenAsAllowed",
                "ClusterTests.guessesSpreadOverTwoNodesAreThrottledAsOnOne",
            ]
        ) { input in
            (
                serving(input) {
                    [
                        "MQTT connects per second: \(Int($0.connectsPerSecond))",
                        "MQTT connections at most: \($0.maxConnections)",
                    ]
                }, nil
            )
        },
        "5.2-1": ProvisionRule(
            .hearth,
            "The server publishes /.well-known/security.txt (RFC 9116), a disclosure policy page with its timelines (acknowledgement within 5 days, fix and disclosure within 90), and a report form that needs no account.",
            tests: [
                "DisclosureTests.securityTxtFollowsRFC9116AndKeepsItsExpiryAhead",
                "DisclosureTests.policyFormAndStatusPageNeedNoAccount",
            ], checks: [.securityTxt]
        ) { input in
            (
                serving(input) {
                    ["security contacts: \((["the report form"] + $0.securityContacts).joined(separator: ", "))"]
                }, nil
            )
        },
        "5.2-2": ProvisionRule(
            .hearth,
            "Reports move through received → acknowledged → valid → fix in progress → fixed → disclosed; overdue ones are flagged to the security team; fixed ones are published as CSAF and OSV advisories and owners are notified.",
            tests: [
                "DisclosureTests.aReportWalksTheWholeWorkflowAndTheReporterFollowsIt",
                "DisclosureTests.overdueReportsAreFlaggedAtTheRightTime",
                "AdvisoryTests.aFixedReportIsPublishedAsCSAFAndOSVAndOwnersAreNotified",
            ]
        ) { input in
            let seen = ["vulnerability reports: \(input.reports), overdue: \(input.overdueReports)"]
            guard input.overdueReports > 0 else { return (seen, nil) }
            return (
                seen,
                Problem(
                    why: "\(input.overdueReports) vulnerability reports are overdue",
                    fix:
                        "Acknowledge and move the overdue reports: `hearth disclosure list --data DIR`, then `hearth disclosure move`."
                )
            )
        },
        "5.2-3": .maker(
            "Monitoring the device software and its components for vulnerabilities is the maker's process."),
        "5.3-1": ProvisionRule(
            .hearth,
            "The whole firmware image is the unit of update: every component on the device is replaced by a signed image (A/B slots).",
            tests: ["UpdateTests.anUpdateInstallsIntoTheOtherSlotRunsOnTrialAndCommits"]),
        "5.3-2": ProvisionRule(
            .hearth,
            "Updates follow The Update Framework (root, targets, snapshot, timestamp roles); devices install into the inactive slot, run on trial and commit or roll back.",
            tests: [
                "UpdateProcessTests.aRolloutUpdatesARunningThermostatWithABoundedSwitchOver",
                "UpdateProcessTests.powerLossAtAnyPointLeavesAVerifiedOldOrNewVersion",
            ], checks: [.updateRepository]),
        "5.3-3": ProvisionRule(
            .hearth,
            "Updates install by themselves in staged rollouts; the owner does nothing and sees the version and update state on the device page.",
            tests: ["UpdateProcessTests.aRolloutUpdatesARunningThermostatWithABoundedSwitchOver"]),
        "5.3-4": ProvisionRule(
            .hearth, "Devices install offered updates automatically.",
            tests: ["UpdateProcessTests.aRolloutUpdatesARunningThermostatWithABoundedSwitchOver"]),
        "5.3-5": ProvisionRule(
            .hearth,
            "Devices report their version at every connect (after initialisation) and the server offers updates then and whenever a rollout reaches them.",
            tests: ["UpdateServiceTests.aStageThatFinishesAdvancesAndTheLastCompletes"]),
        "5.3-6": ProvisionRule(
            .hearth, "Automatic updates are on from the first connection."
        ) { _ in
            (
                ["automatic updates: on by default"],
                Problem(
                    why: "owners cannot turn automatic updates off or on (Hearth offers no such setting)",
                    fix:
                        "State in maker-statements.json how your app lets owners configure updates, or justify why they cannot.",
                    makerMayState: true)
            )
        },
        "5.3-7": ProvisionRule(
            .hearth,
            "TUF metadata is signed with Ed25519 under a threshold; images are checked by length and SHA-256; online keys are sealed with the KEK.",
            tests: ["ClientTests.tooFewSignaturesAreRefused", "CanonicalJSONTests.pythonTUFAcceptsHearthsWholeChain"],
            checks: [.updateRepository]),
        "5.3-8": ProvisionRule(
            .hearth,
            "Each release carries its severity; the assessment checks that no device runs firmware older than a security release without a rollout offering it.",
            tests: ["UpdateServiceTests.aStagedRolloutPausesByItselfAtTheFailureThreshold"], checks: [.firmwareCurrent]),
        "5.3-9": ProvisionRule(
            .hearth,
            "The device SDK verifies metadata signatures, versions and expiry, and the image's length and hash before installing (TUF § 5).",
            tests: [
                "UpdateTests.arbitrarySoftwareIsRefused", "UpdateTests.rollbackOfMetadataIsRefused",
                "UpdateTests.freezeIsRefused", "UpdateTests.mixAndMatchIsRefused",
            ]),
        "5.3-10": ProvisionRule(
            .hearth,
            "Each device ships with the maker's TUF root (trusted on first use) and only follows root rotations signed by a threshold of the old and new keys.",
            tests: [
                "UpdateTests.aTargetsKeyRevokedByRootRotationIsRefused",
                "UpdateProcessTests.pythonTUFsUpdaterVerifiesTheRepositoryBeforeAndAfterARootRotation",
            ], checks: [.updateRepository]),
        "5.3-11": ProvisionRule(
            .hearth,
            "Every release carries plain-language notes (what it fixes, severity in words) that the owner's device page shows; owners are notified of advisories.",
            tests: ["FirmwareTests.releaseNotesRoundTripAndBadOnesAreRefused"]),
        "5.3-12": ProvisionRule(
            .hearth,
            "Every release declares whether the device keeps working while it installs and how long the switch-over takes; the owner's device page says so.",
            tests: ["UpdateProcessTests.aRolloutUpdatesARunningThermostatWithABoundedSwitchOver"]),
        "5.3-13": ProvisionRule(
            .hearth,
            "Each model's support end date is published on its public page and in every release; it can be extended, never shortened.",
            tests: [
                "UpdateServiceTests.theSupportPeriodIsPublishedExtendedAndNeverShortened",
                "HTTPConventionTests.operatorsDefineModelsThatArePublishedWithTheirSupportPeriod",
            ], checks: [.supportPeriods]
        ) { input in
            (input.models.map { "\($0.model.id): security updates until \($0.model.supportEnds)" }, nil)
        },
        "5.3-14": .maker("Not applicable to devices that take updates."),
        "5.3-15": .maker("Not applicable to devices that take updates."),
        "5.3-16": ProvisionRule(
            .hearth,
            "Every unit's label (made at provisioning) names the model and its model id beside the serial and setup code; the device page shows the model.",
            tests: ["ServerProcessTests.factoryBundlesAreCompleteAndPrivate"]
        ) { input in
            (input.models.map { "\($0.model.id): label names \"\($0.model.name)\"" }, nil)
        },
        "5.4-1": ProvisionRule(
            .hearth,
            "Server: every key is sealed with the key-encryption key (AES-GCM), key files 0600 in a 0700 folder, refused otherwise. Devices: the SDK seals the identity key under a device-unique key and refuses key files others can read.",
            tests: [
                "ServerProcessTests.aDataFolderOthersCanReadIsRefused", "SecretsAtRestTests.theDatabaseRevealsNoSecret",
                "KeyStoreTests.firstBootSealsTheFactoryKeyAndDeletesThePlainCopy",
            ]
        ) { input in
            (
                serving(input) {
                    [
                        "key-encryption key kept outside the data folder: \($0.kekOutsideDataFolder ? "yes" : "no (--kek-file recommended)")"
                    ]
                }, nil
            )
        },
        "5.4-2": .maker(
            "How the unit's identity key resists physical, electrical and software tampering is the device hardware's."),
        "5.4-3": ProvisionRule(
            .hearth,
            "No secret is in the source: each unit's key pair is made at provisioning (or on the device, signed from its CSR), each deployment's CAs and keys on first start.",
            tests: [
                "ServerProcessTests.aKeyMadeOnTheDeviceStaysSealedThereAndItsCertificateIsForIt",
                "AccountTests.nothingAcceptsADefaultCredential",
            ]),
        "5.4-4": ProvisionRule(
            .hearth,
            "Each unit has its own key and certificate from the deployment's device CA; update verification uses the maker's public TUF keys (no secret on the device).",
            tests: [
                "PKITests.deviceCertificatesChainToTheDeviceCAOnly",
                "RekeyTests.aRekeyedThermostatUsesItsNewKeyAndTheOldCertificateIsRefused",
            ]),
        "5.5-1": ProvisionRule(
            .hearth,
            "Every listener and client uses one TLS policy: TLS 1.2 at least, ECDHE with AES-GCM or ChaCha20-Poly1305, X25519MLKEM768/X25519/P-256/P-384.",
            tests: [
                "DeviceListenerTests.theDeviceListenerHoldsToTheTLSPolicy",
                "ServerProcessTests.theServerStartsOnAFreshFolderAndSpeaksOnlyHTTPS",
            ], checks: [.listenersTLS]
        ) { input in
            (serving(input) { $0.listeners.map { "\($0.name) \($0.host):\($0.port) \($0.security.rawValue)" } }, nil)
        },
        "5.5-2": ProvisionRule(
            .hearth,
            "TLS is BoringSSL (swift-nio-ssl); cryptography is swift-crypto (BoringSSL); certificates swift-certificates — widely reviewed implementations, none written for Hearth.",
            tests: ["ReferenceDeviceTests.theDeviceOffersTheHybridPostQuantumKeyExchange"]),
        "5.5-3": ProvisionRule(
            .hearth,
            "The TLS policy lives in one place (versions, suites, groups) and ships in server and firmware updates; the hybrid post-quantum group is already offered.",
            tests: ["DeviceListenerTests.theDeviceListenerServesTheHybridPostQuantumKeyExchange"]),
        "5.5-4": ProvisionRule(
            .hearth,
            "Devices reach the gateway only with a certificate of the device CA; owners reach devices only through the signed-in API.",
            tests: [
                "DeviceListenerTests.certificatesTheDeploymentDidNotIssueOrRevokedAreRefused",
                "DeviceListenerTests.identityComesFromTheCertificateNotTheClientIDOrUsername",
            ], checks: [.listenersTLS]),
        "5.5-5": ProvisionRule(
            .hearth,
            "Every change of configuration (models, rollouts, revocation, quarantine) needs an operator session and is recorded, with who made it, in the hash-chained audit log; commands need the owner's session.",
            tests: [
                "HTTPConventionTests.theOpenAPIDocumentMatchesTheRealRoutes",
                "PageTests.theConsoleIsForOperatorsAndPagesAFleetWithoutOwnersDetails",
                "SQLiteStoreTests.theAuditLogIsAppendOnlyAndTamperingIsDetected",
            ], checks: [.listenersTLS, .auditChain]),
        "5.5-6": ProvisionRule(
            .hearth, "Passwords, setup codes, tokens and keys travel only inside TLS.", checks: [.listenersTLS]),
        "5.5-7": ProvisionRule(
            .hearth,
            "Only TLS listeners face the network; plaintext is refused beyond loopback; a device's private key never leaves it (CSR).",
            tests: [
                "DevelopmentListenerTests.refusesToBindBeyondLoopback",
                "ServerProcessTests.signCSRKeepsTheKeyOnTheDevice",
            ],
            checks: [.listenersTLS]),
        "5.5-8": ProvisionRule(
            .hearth,
            "Keys are generated where used, sealed with the KEK, rotated (device rekey, server certificate renewed 30 days before expiry, TUF online roles renewed), revoked (device revocation) and destroyed (owner's data key on deletion).",
            tests: [
                "RekeyTests.aRekeyedThermostatUsesItsNewKeyAndTheOldCertificateIsRefused",
                "UpdateServiceTests.theOnlineRolesAreRenewedBeforeTheyExpire",
                "AccountDeletionTests.aDeletedAccountLeavesNoReadingOnDiskAndItsReceiptVerifies",
            ]),
        "5.6-1": ProvisionRule(
            .hearth,
            "The server listens only where it is told (HTTPS, MQTT devices, metrics on loopback); the development listener is off by default; the assessment compares the declared listeners with the process's sockets.",
            tests: ["DevelopmentListenerTests.refusesToBindBeyondLoopback"], checks: [.declaredPorts, .listenersTLS]),
        "5.6-2": ProvisionRule(
            .hearth,
            "No version banner; an unknown serial and a wrong setup code get the same answer; errors name the field, never internals; only the server's own host names are answered.",
            tests: [
                "ClaimTests.aWrongCodeAndAnUnknownSerialGetTheSameAnswer",
                "SecurityDefectTests.onlyTheServersOwnHostNamesAreAnswered",
                "HTTPConventionTests.everyResponseCarriesTheSecurityHeaders",
            ]),
        "5.6-3": .maker("Which physical interfaces the board exposes is the device hardware's."),
        "5.6-4": .maker(
            "Whether a debug interface (JTAG, SWD, UART console) is physically accessible, and that it is disabled in software, is the device's."
        ),
        "5.6-5": ProvisionRule(
            .hearth,
            "Only the services the deployment needs run: metrics stay on loopback unless configured, the development listener is off unless asked for.",
            checks: [.declaredPorts, .listenersTLS]),
        "5.6-6": .maker("Minimising the device firmware's code to what the product needs is the maker's."),
        "5.6-7": ProvisionRule(
            .hearth,
            "The server runs as an unprivileged user under a systemd unit with exposure 2 or lower; owners and operators have separate roles; devices are confined to their own topics.",
            tests: [
                "SystemdTests.theUnitPassesSystemdsChecksWithExposureTwoOrLower",
                "AccessPolicyTests.aDeviceWorksInItsOwnNamespace",
            ]),
        "5.6-8": .maker("Hardware memory access control (MPU/MMU) is the device hardware's."),
        "5.6-9": .maker(
            "Secure development of the device firmware is the maker's process (Hearth's own: tests as evidence, CI from a clean clone)."
        ),
        "5.7-1": ProvisionRule(
            .hearth,
            "At every boot the device SDK verifies the installed image against its signed targets entry and falls back to the other slot if it does not match.",
            tests: [
                "UpdateTests.aTamperedActiveSlotFallsBackAndBothTamperedIsAnIntegrityFailure",
                "UpdateProcessTests.tamperedSlotsFallBackOrStopWithOnlyTheAlertConnection",
            ]),
        "5.7-2": ProvisionRule(
            .hearth,
            "A device whose both slots fail verification connects only to report the integrity alert, which reaches the operator and the owner; the gateway quarantines high-severity alerts.",
            tests: [
                "UpdateProcessTests.tamperedSlotsFallBackOrStopWithOnlyTheAlertConnection",
                "AlertTests.highSeverityQuarantinesAndTheOperatorReleases",
            ]),
        "5.8-1": ProvisionRule(
            .hearth, "Readings and commands travel over mutual TLS and HTTPS only.", checks: [.listenersTLS]),
        "5.8-2": ProvisionRule(
            .hearth,
            "Personal data travels over TLS; readings are sealed at rest under each owner's data key.",
            tests: ["SQLiteStoreTests.sealedReadingsAreUnreadableWithoutTheirKey"], checks: [.listenersTLS]
        ) { input in
            (serving(input) { ["readings sealed per owner at rest: \($0.readingsSealed ? "yes" : "no")"] }, nil)
        },
        "5.8-3": ProvisionRule(
            .hearth,
            "Every telemetry field and command of a model declares what it is (category, purpose, personal or not, recipients, retention); the public privacy notice is made from these declarations.",
            tests: [
                "PrivacyTests.theNoticeIsPublicAndShowsEveryDeclaredFieldAndPurpose",
                "SchemaTests.aModelWithoutDataDeclarationsIsRefused",
            ], evidence: undeclared),
        "5.9-1": ProvisionRule(
            .hearth,
            "Devices queue readings offline and deliver them once back; several nodes share one PostgreSQL database and take over each other's devices.",
            tests: [
                "ClusterTests.aThousandDevicesLoseNothingAcknowledgedWhenTheirNodeIsKilled",
                "DatabaseRestartTests.aStoppedDatabaseLosesNothingAcknowledgedAndServiceResumesByItself",
            ]
        ) { input in (["storage: \(input.storage)"], nil) },
        "5.9-2": ProvisionRule(
            .hearth,
            "The reference devices keep regulating and locking offline, and their persistent queue survives power loss (torn tails cut off).",
            tests: [
                "ReferenceDeviceTests.thermostatRegulatesAnHourOfflineThenDeliversEveryReadingInOrderOnce",
                "OfflineQueueTests.aTornTailFromAPowerCutIsCutOffNotMisread",
            ]),
        "5.9-3": ProvisionRule(
            .hearth,
            "Devices reconnect with exponential backoff and full jitter and honour the server's hints; the gateway admits connects at a bounded rate.",
            tests: [
                "StormTests.aThousandDevicesComeBackSpreadOverTheWindow", "ReconnectTests.aFleetSpreadsItsReconnects",
            ]),
        "5.10-1": ProvisionRule(
            .hearth,
            "The gateway watches each device's telemetry and connections (floods, clones, churn, probes) and raises alerts to operator and owner.",
            tests: [
                "MisbehaviourTests.eachMisbehaviourRaisesItsAlertInSecondsAndHighSeverityQuarantines",
                "DeviceWatchTests.aWellBehavedDeviceIsNeverFlaggedOverADay",
            ]
        ) { input in
            guard let s = input.serving else { return ([], noServer) }
            return s.monitoring
                ? (["security monitoring: on"], nil)
                : (
                    ["security monitoring: off"],
                    Problem(
                        why: "security monitoring is off (--benchmark-monitoring-off)",
                        fix: "Restart `hearth serve` without --benchmark-monitoring-off.")
                )
        },
        "5.11-1": ProvisionRule(
            .hearth,
            "A factory reset on the device erases the owner's settings and queue and ends the claim on the server; an owner who removes a device resets it remotely.",
            tests: [
                "ReferenceDeviceTests.theFactoryResetCommandErasesWhatTheOwnerLeftAndKeepsTheIdentity",
                "FactoryResetTests.aResetThermostatForgetsItsOwnerAndTheServerReleasesIt",
            ]),
        "5.11-2": ProvisionRule(
            .hearth,
            "Owners delete their account (all readings become unreadable at once: the data key is destroyed) or remove a device with or without its history.",
            tests: [
                "AccountDeletionTests.aDeletedAccountLeavesNoReadingOnDiskAndItsReceiptVerifies",
                "OwnershipTests.removingADeviceDeletesOrKeepsItsHistoryAsTheOwnerChooses",
            ]),
        "5.11-3": ProvisionRule(
            .hearth,
            "The account, privacy and device pages say in words what deletion removes and when.",
            tests: ["OwnershipTests.theOwnerRemovesHandsOnOrDisposesFromTheDevicePage"]),
        "5.11-4": ProvisionRule(
            .hearth,
            "Deletion ends with a receipt signed by the deployment that the owner can verify with its public key.",
            tests: ["AccountDeletionTests.aDeletedAccountLeavesNoReadingOnDiskAndItsReceiptVerifies"]),
        "5.12-1": ProvisionRule(
            .hearth,
            "Set-up is one step for the owner: claim the unit with the serial and setup code from its label; the device needs no configuration.",
            tests: ["ClaimTests.anOwnerClaimsAnUnclaimedDeviceWithItsLabel"]),
        "5.12-2": ProvisionRule(
            .hearth,
            "The claim page and the label explain the set-up; the privacy page asks for the owner's choices at claim.",
            tests: ["BrowserTests.ownersOperatorsAndResearchersUseEveryPageInChromium"]),
        "5.12-3": ProvisionRule(
            .hearth,
            "The device page shows whether the unit is connected, its firmware and update state, and its alerts.",
            tests: ["PageTests.anOwnerSeesCardsReadingsChartsControlsAndTheLogbook"]),
        "5.13-1": ProvisionRule(
            .hearth,
            "Every value from the network is checked against a schema (bodies, forms, headers, ranges, MQTT packets, telemetry, commands) and refused with a clear error that changes nothing; fuzzed.",
            tests: [
                "InputValidationTests.everyBodyRouteRefusesBadInputAndChangesNothing",
                "HTTPFuzzTests.theServerSurvivesHostileRequestsAndFuzzing",
                "GatewayFuzzTests.hundredThousandHostilePacketsLeaveOtherClientsServedAndNothingLeaks",
            ]),
        "6-1": ProvisionRule(
            .hearth,
            "A public privacy notice per model, made from its declarations: what each field is, why, who receives it, how long it is kept.",
            tests: ["PrivacyTests.theNoticeIsPublicAndShowsEveryDeclaredFieldAndPurpose"], evidence: undeclared),
        "6-2": ProvisionRule(
            .hearth,
            "Optional purposes are off until the owner turns them on, on the device's privacy page; every choice is recorded with its time.",
            tests: ["PrivacyTests.consentIsTheOwnersRecordedWithdrawableAndBadInputChangesNothing"]),
        "6-3": ProvisionRule(
            .hearth,
            "The owner withdraws consent on the same page at any time; the gateway stops accepting those fields at once.",
            tests: ["ConsentTests.theThermostatSendsHumidityOnlyWhileTheOwnerAllowsIt"]),
        "6-4": ProvisionRule(
            .hearth,
            "Each field declares its retention; older readings are deleted; fields of refused purposes are never stored.",
            tests: [
                "OwnershipTests.readingsPastTheirPeriodAreDeletedAndTheOwnerIsTold",
                "DeviceListenerTests.fieldsTheOwnerRefusedAreRefusedWithAReasonAndNeverStored",
            ]
        ) { input in
            (
                input.models.map { m in
                    "\(m.model.id): retention \(m.model.telemetry.compactMap { $0.declaration.map { "\($0.retentionDays) d" } }.joined(separator: ", "))"
                }, nil
            )
        },
        "6-5": ProvisionRule(
            .hearth, "The privacy notice lists every telemetry field with its purpose, recipients and retention.",
            tests: ["PrivacyTests.theNoticeIsPublicAndShowsEveryDeclaredFieldAndPurpose"], evidence: undeclared),
    ]
}

import Foundation
import HearthCore

/// One provision of ETSI EN 303 645 V2.1.1 (clause 5 and 6), as its Annex B conformance table
/// states it: mandatory or recommended, perhaps under a condition. The requirement is paraphrased.
public struct Provision: Sendable {
    public enum Level: String, Sendable { case mandatory, recommended }

    public let id: String
    /// The Code of Practice guideline it belongs to (1–13).
    public let guideline: Int
    public let level: Level
    /// The condition under which it applies, if any.
    public let condition: ProvisionCondition?
    public let requirement: String
}

/// The conditions of EN 303 645's conditional provisions, each evaluated for a deployment: from what
/// Hearth is (devices take network updates; owners sign in with passwords) or from its data (a model
/// has optional purposes or telemetry). Those only the maker can know (a debug port on the board)
/// are answered in the maker's statements: a provision stated as not applying is not applicable, with
/// the maker's justification (5.0-1).
public enum ProvisionCondition: String, Sendable, CaseIterable {
    case passwordsUsed, preinstalledPasswords, userAuthentication, notConstrained, updateable, networkUpdates
    case automaticUpdates, constrainedWithoutUpdates, hardCodedIdentity, debugInterface, consent, telemetry

    public var text: String {
        switch self {
        case .passwordsUsed: "passwords are used"
        case .preinstalledPasswords: "pre-installed unique per-device passwords are used"
        case .userAuthentication: "a user can authenticate against the device or its service"
        case .notConstrained: "the device is not a constrained device"
        case .updateable: "software components are updateable"
        case .networkUpdates: "updates are delivered over a network interface"
        case .automaticUpdates: "automatic updates or update notifications are supported"
        case .constrainedWithoutUpdates: "the device is constrained and cannot have its software updated"
        case .hardCodedIdentity: "a hard-coded unique per-device identity is used for security"
        case .debugInterface: "a debug interface is physically accessible"
        case .consent: "personal data is processed on the basis of consent"
        case .telemetry: "telemetry data is collected"
        }
    }
}

extension Provision {
    /// Every provision of EN 303 645 V2.1.1 clauses 5 and 6 (the ids of `STANDARDS.md`).
    public static let all: [Provision] = {
        func p(_ id: String, _ g: Int, _ level: Level, _ c: ProvisionCondition? = nil, _ text: String) -> Provision {
            Provision(id: id, guideline: g, level: level, condition: c, requirement: text)
        }
        return [
            p(
                "5.1-1", 1, .mandatory, .passwordsUsed,
                "Passwords, in any state but factory default, are unique per device or set by the user."),
            p(
                "5.1-2", 1, .mandatory, .preinstalledPasswords,
                "Pre-installed unique passwords are generated so that they cannot be derived or guessed as a class."),
            p(
                "5.1-3", 1, .mandatory, nil,
                "Authentication of users uses best-practice cryptography suited to the technology and risk."),
            p(
                "5.1-4", 1, .mandatory, .userAuthentication,
                "The user has a simple way to change the authentication value."),
            p(
                "5.1-5", 1, .mandatory, .notConstrained,
                "Brute-force attacks on authentication over network interfaces are impracticable."),
            p(
                "5.2-1", 2, .mandatory, nil,
                "A vulnerability disclosure policy is published: a contact, and the timelines a reporter can expect."),
            p("5.2-2", 2, .recommended, nil, "Disclosed vulnerabilities are acted on in a timely manner."),
            p(
                "5.2-3", 2, .recommended, nil,
                "Vulnerabilities in the product's software are monitored, identified and fixed continually."),
            p("5.3-1", 3, .recommended, nil, "All software components are securely updateable."),
            p(
                "5.3-2", 3, .mandatory, .updateable,
                "There is an update mechanism for the secure installation of updates."),
            p("5.3-3", 3, .mandatory, .updateable, "An update is simple for the user to apply."),
            p("5.3-4", 3, .recommended, .updateable, "Software updates are installed automatically."),
            p(
                "5.3-5", 3, .recommended, .updateable,
                "The device checks for updates after initialisation and then periodically."),
            p(
                "5.3-6", 3, .recommended, .automaticUpdates,
                "Automatic updates and notifications are on after initialisation and the user can configure them."),
            p("5.3-7", 3, .mandatory, .updateable, "The update mechanism uses best-practice cryptography."),
            p("5.3-8", 3, .mandatory, .updateable, "Security updates are timely."),
            p("5.3-9", 3, .recommended, .updateable, "The device verifies the authenticity and integrity of updates."),
            p(
                "5.3-10", 3, .mandatory, .networkUpdates,
                "Updates delivered over a network are verified through a trust relationship before installation."),
            p(
                "5.3-11", 3, .recommended, .updateable,
                "The user is told, recognisably, that a security update is needed and what it mitigates."),
            p(
                "5.3-12", 3, .recommended, .updateable,
                "The user is told when applying an update disrupts the device's basic functioning."),
            p(
                "5.3-13", 3, .mandatory, nil,
                "The defined support period is published, accessibly, clearly and transparently."),
            p(
                "5.3-14", 3, .recommended, .constrainedWithoutUpdates,
                "For a device that cannot be updated, the rationale, the hardware replacement support period and method are published."
            ),
            p(
                "5.3-15", 3, .recommended, .constrainedWithoutUpdates,
                "A device that cannot be updated is isolable and its hardware replaceable."),
            p(
                "5.3-16", 3, .mandatory, nil,
                "The model designation is clearly recognisable, by labelling or a physical interface."),
            p("5.4-1", 4, .mandatory, nil, "Sensitive security parameters in persistent storage are stored securely."),
            p("5.4-2", 4, .mandatory, .hardCodedIdentity, "A hard-coded unique per-device identity resists tampering."),
            p(
                "5.4-3", 4, .mandatory, nil,
                "No hard-coded critical security parameters in the device software's source code."),
            p(
                "5.4-4", 4, .mandatory, nil,
                "Critical security parameters for updates and for communication with services are unique per device and resist attacks on classes of devices."
            ),
            p("5.5-1", 5, .mandatory, nil, "Communication is secured with best-practice cryptography."),
            p(
                "5.5-2", 5, .recommended, nil,
                "Reviewed or evaluated implementations are used for network and security functions."),
            p("5.5-3", 5, .recommended, nil, "Cryptographic algorithms and primitives are updateable."),
            p(
                "5.5-4", 5, .recommended, nil,
                "Device functionality over a network interface is reached only after authentication."),
            p(
                "5.5-5", 5, .mandatory, nil,
                "Security-relevant configuration changes over a network interface need authentication."),
            p("5.5-6", 5, .recommended, nil, "Critical security parameters are encrypted in transit."),
            p(
                "5.5-7", 5, .mandatory, nil,
                "The confidentiality of critical security parameters sent over remotely reachable interfaces is protected."
            ),
            p(
                "5.5-8", 5, .mandatory, nil,
                "Critical security parameters are managed by secure processes through their whole life."),
            p("5.6-1", 6, .mandatory, nil, "Unused network and logical interfaces are disabled."),
            p(
                "5.6-2", 6, .mandatory, nil,
                "Unauthenticated network interfaces disclose as little security-relevant information as possible."),
            p("5.6-3", 6, .recommended, nil, "Physical interfaces are not exposed unnecessarily."),
            p(
                "5.6-4", 6, .mandatory, .debugInterface,
                "A physically accessible debug interface is disabled in software."),
            p("5.6-5", 6, .recommended, nil, "Only the software services needed for the intended use are enabled."),
            p("5.6-6", 6, .recommended, nil, "Code is minimised to the functionality needed."),
            p("5.6-7", 6, .recommended, nil, "Software runs with least privilege."),
            p("5.6-8", 6, .recommended, nil, "Hardware-level access control for memory is used."),
            p("5.6-9", 6, .recommended, nil, "Secure development processes are followed."),
            p("5.7-1", 7, .recommended, nil, "The device verifies its software with secure boot mechanisms."),
            p(
                "5.7-2", 7, .recommended, nil,
                "An unauthorised software change alerts the user or administrator and the device connects to no wider network than needed to alert."
            ),
            p(
                "5.8-1", 8, .recommended, nil,
                "Personal data in transit between the device and services is protected with best-practice cryptography."
            ),
            p(
                "5.8-2", 8, .mandatory, nil,
                "Sensitive personal data between the device and services is kept confidential with suitable cryptography."
            ),
            p(
                "5.8-3", 8, .mandatory, nil,
                "All external sensing capabilities of the device are documented accessibly for the user."),
            p("5.9-1", 9, .recommended, nil, "Resilience to outages of data networks and power is built in."),
            p(
                "5.9-2", 9, .recommended, nil,
                "The device keeps working locally without the network and recovers cleanly after power loss."),
            p("5.9-3", 9, .recommended, nil, "The device connects to networks in an expected, stable and orderly way."),
            p("5.10-1", 10, .recommended, nil, "Collected telemetry is examined for security anomalies."),
            p("5.11-1", 11, .mandatory, nil, "The user can erase their data from the device simply."),
            p(
                "5.11-2", 11, .recommended, nil,
                "The consumer can remove their personal data from the associated services simply."),
            p("5.11-3", 11, .recommended, nil, "Users get clear instructions on how to delete their personal data."),
            p(
                "5.11-4", 11, .recommended, nil,
                "Users get clear confirmation that their personal data has been deleted."),
            p(
                "5.12-1", 12, .recommended, nil,
                "Installation and maintenance take minimal steps and follow security best practice."),
            p("5.12-2", 12, .recommended, nil, "The maker gives guidance on setting the device up securely."),
            p(
                "5.12-3", 12, .recommended, nil,
                "The maker gives guidance on checking that the device is set up securely."),
            p("5.13-1", 13, .mandatory, nil, "Input through user interfaces, APIs and networks is validated."),
            p(
                "6-1", 8, .mandatory, nil,
                "Consumers get clear, transparent information on what personal data is processed, how, by whom and why, per device and service."
            ),
            p("6-2", 8, .mandatory, .consent, "Consent for processing is obtained in a valid way."),
            p("6-3", 8, .mandatory, .consent, "Consent can be withdrawn at any time."),
            p(
                "6-4", 8, .recommended, .telemetry,
                "Processing of personal data in telemetry is kept to the minimum needed."),
            p(
                "6-5", 8, .mandatory, .telemetry,
                "Consumers are told what telemetry is collected, how it is used, by whom and why."),
        ]
    }()
}

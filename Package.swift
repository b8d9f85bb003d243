// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny")
]

let package = Package(
    name: "hearth",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "hearth", targets: ["hearth"]),
        .executable(name: "hearth-device", targets: ["hearth-device"]),
        .library(name: "HearthDevice", targets: ["HearthDevice"]),
        .library(name: "HearthCore", targets: ["HearthCore"]),
        .library(name: "HearthCrypto", targets: ["HearthCrypto"]),
        .library(name: "HearthMQTT", targets: ["HearthMQTT"]),
        .library(name: "HearthStorage", targets: ["HearthStorage"]),
        .library(name: "HearthSQLite", targets: ["HearthSQLite"]),
        .library(name: "HearthPostgres", targets: ["HearthPostgres"]),
        .library(name: "HearthServer", targets: ["HearthServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(
            url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: ["FullFoundation"]),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        // Domain types, validation, policies and state machines. No I/O.
        .target(name: "HearthCore", swiftSettings: swiftSettings),
        // Keys, certificates, envelope encryption, password and code hashing, the TLS settings.
        .target(
            name: "HearthCrypto",
            dependencies: [
                "HearthCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // MQTT 3.1.1 and 5.0 packets: a pure parser and serialiser on NIOCore only.
        .target(
            name: "HearthMQTT", dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings),
        // Security monitoring without I/O: per-device detectors with an injected clock.
        .target(name: "HearthMonitor", dependencies: ["HearthCore"], swiftSettings: swiftSettings),
        // The metrics every part exposes on /metrics, named in one place (swift-prometheus's registry).
        .target(
            name: "HearthMetrics", dependencies: [.product(name: "Prometheus", package: "swift-prometheus")],
            swiftSettings: swiftSettings),
        // The broker's logic without I/O: subscription matching and who may publish or subscribe where.
        .target(name: "HearthBroker", dependencies: ["HearthCore", "HearthMQTT"], swiftSettings: swiftSettings),
        // The MQTT gateway's network side: listeners and connections over the broker logic.
        .target(
            name: "HearthGateway",
            dependencies: [
                "HearthBroker", "HearthMQTT", "HearthCore", "HearthCrypto", "HearthStorage", "HearthMonitor",
                "HearthMetrics",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // The device SDK: identity store, MQTT client over mutual TLS, reconnect policy, offline queue.
        .target(
            name: "HearthDevice",
            dependencies: [
                "HearthCore", "HearthCrypto", "HearthMQTT", "HearthUpdate",
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // The Update Framework's metadata: canonical JSON, Ed25519 signatures, role thresholds. No I/O.
        .target(
            name: "HearthUpdate",
            dependencies: ["HearthCore", "HearthCrypto", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
        // The reference thermostat and lock, on the SDK's public API only.
        .target(
            name: "HearthReferenceDevices", dependencies: ["HearthDevice", "HearthCore", "HearthUpdate"],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "hearth-device",
            dependencies: [
                "HearthReferenceDevices", "HearthDevice", "HearthCore", "HearthUpdate",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // A deployment made in code for gateway and device tests (CAs, stores, devices, bundles).
        .target(
            name: "HearthFixtures",
            dependencies: [
                "HearthGateway", "HearthCore", "HearthDevice", "HearthUpdate", "HearthCrypto", "HearthStorage",
                "HearthSQLite", "HearthPostgres", "HearthTestSupport",
                .product(name: "Logging", package: "swift-log"), .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
            ],
            swiftSettings: swiftSettings
        ),
        // Helpers for tests that run real programs (hearth, curl, mosquitto's clients).
        .target(
            name: "HearthTestSupport", path: "Sources/HearthTestSupport", resources: [.copy("Scripts")],
            swiftSettings: swiftSettings),
        // Storage protocols: what the server needs from a database. No I/O.
        .target(name: "HearthStorage", dependencies: ["HearthCore"], swiftSettings: swiftSettings),
        // The embedded SQLite driver (GRDB, WAL, string-named migrations).
        .target(
            name: "HearthSQLite",
            dependencies: ["HearthStorage", "HearthCore", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: swiftSettings
        ),
        // The PostgreSQL driver (postgres-nio): the same storage protocols for a deployment of several nodes.
        .target(
            name: "HearthPostgres",
            dependencies: [
                "HearthStorage", "HearthCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The behaviour every storage driver must show, framework-free: each driver's tests run it.
        .target(
            name: "HearthStorageContracts", dependencies: ["HearthStorage", "HearthCore"],
            path: "Tests/HearthStorageContracts", swiftSettings: swiftSettings),
        // The HTTPS API and web pages, the data folder, provisioning and the audit log.
        .target(
            name: "HearthServer",
            dependencies: [
                "HearthCore", "HearthCrypto", "HearthStorage", "HearthUpdate", "HearthMonitor", "HearthMetrics",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [
                .copy("Resources/common-passwords.txt"), .copy("Resources/password-dictionary.txt"),
                .copy("Resources/Templates"), .copy("Resources/Static"), .copy("Resources/assessment.schema.json"),
            ],
            swiftSettings: swiftSettings
        ),
        // The one executable; the only place that picks concrete storage.
        .executableTarget(
            name: "hearth",
            dependencies: [
                "HearthCore", "HearthCrypto", "HearthStorage", "HearthSQLite", "HearthPostgres", "HearthServer",
                "HearthGateway", "HearthMetrics",
                "HearthMQTT",
                "HearthDevice", "HearthReferenceDevices", "HearthUpdate",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "HearthCoreTests", dependencies: ["HearthCore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "HearthMonitorTests", dependencies: ["HearthMonitor", "HearthCore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "HearthMQTTTests",
            dependencies: [
                "HearthMQTT", "HearthTestSupport", "HearthCore", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "HearthBrokerTests",
            dependencies: [
                "HearthBroker", "HearthCore", "HearthMQTT", .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "HearthGatewayTests",
            dependencies: [
                "HearthGateway", "HearthBroker", "HearthMQTT", "HearthTestSupport", "HearthCore", "HearthCrypto",
                "HearthStorage", "HearthSQLite", "HearthFixtures", "HearthUpdate", "HearthMonitor",
                .product(name: "Logging", package: "swift-log"), .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "HearthDeviceTests",
            dependencies: [
                "HearthDevice", "HearthReferenceDevices", "HearthGateway", "HearthMQTT", "HearthCore", "HearthCrypto",
                "HearthStorage", "HearthSQLite", "HearthServer",
                "HearthTestSupport", "HearthFixtures", "hearth-device", "HearthUpdate",
                .product(name: "Logging", package: "swift-log"), .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "HearthUpdateTests",
            dependencies: [
                "HearthUpdate", "HearthCore", "HearthTestSupport", .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "HearthCryptoTests",
            dependencies: [
                "HearthCrypto", "HearthCore", .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ], swiftSettings: swiftSettings),
        .testTarget(
            name: "HearthStorageTests",
            dependencies: [
                "HearthSQLite", "HearthPostgres", "HearthStorageContracts", "HearthStorage", "HearthCore",
                "HearthCrypto", "HearthTestSupport", "HearthFixtures",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "HearthServerTests",
            dependencies: [
                "HearthServer", "HearthSQLite", "HearthStorage", "HearthCrypto", "HearthCore", "HearthTestSupport",
                "hearth", "HearthUpdate", "HearthFixtures", "HearthPostgres",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)

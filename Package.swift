// swift-tools-version: 6.2
import PackageDescription

/// Swift settings shared by every target of ours.
let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "vde-supervisor",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vde-supervisor", targets: ["vde-supervisor"]),
        .executable(name: "vde-networker", targets: ["vde-networker"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // The acceptance tests' process runner (the executables spawn with Shared/OS/ChildSpawn).
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2", traits: []),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        .systemLibrary(
            name: "CSystemd", pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]),
        .systemLibrary(
            name: "CVDEPlug",
            providers: [.apt(["libvdeplug-dev"])]),
        .systemLibrary(name: "CLinux"),
        // Declarations only: the capture command dlopens libpcap (see its module map).
        .systemLibrary(name: "CPcap", providers: [.apt(["libpcap-dev"])]),
        .target(
            name: "Shared",
            dependencies: [
                "CLinux",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "vde-supervisor",
            dependencies: [
                "Shared", "CSystemd", "CLinux", "CPcap",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "vde-networker",
            dependencies: [
                "Shared", "CVDEPlug", "CLinux",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict,
            // One worker runs per network: as a position-independent executable each one dirtied
            // about 0.5 MiB of the binary with load-time relocations (docs/benchmarks.md); linked
            // at a fixed address those pages stay clean and are shared by all workers.
            // linker/static-cxx makes the runtime's -lstdc++ and -lgcc_s the static archives, for
            // the same reason: libstdc++.so.6 cost each worker about 60 KiB of relocated pages.
            // `-z now` binds every PLT entry when the fork server starts, so that a forked worker
            // writes no GOT entry of its own at its first call of a libc function.
            linkerSettings: [
                .unsafeFlags([
                    "-Xlinker", "-no-pie", "-Xlinker", "-z", "-Xlinker", "now",
                    "-L", Context.packageDirectory + "/linker/static-cxx",
                ])
            ]),
        .testTarget(name: "SharedTests", dependencies: ["Shared"], swiftSettings: strict),
        .testTarget(name: "SupervisorTests", dependencies: ["vde-supervisor", "Shared"], swiftSettings: strict),
        // Root-free unit tests of the worker (fakes, parsers); `scripts/test --unit` runs them.
        .testTarget(name: "NetworkerTests", dependencies: ["vde-networker", "Shared"], swiftSettings: strict),
        // The built vde-networker with real vde_switch, vde_plug2tap, taps and namespaces (root).
        .testTarget(
            name: "NetworkerIntegrationTests", dependencies: ["vde-networker", "Shared"], swiftSettings: strict),
        .testTarget(
            name: "AcceptanceTests",
            dependencies: [
                "Shared",
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict),
    ]
)

// swift-tools-version: 6.1
import PackageDescription

// Release builds drop the dynamic exclusivity checks (a lock-like call on every class property
// access of the message path); debug builds, which run the tests, keep them.
let strict: [SwiftSetting] = [.swiftLanguageMode(.v6), .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "vfio-user-swift",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vfio-user-server", targets: ["vfio-user-server"]),
        .executable(name: "vfio-user-bench", targets: ["vfio-user-bench"]),
        .library(name: "VfioUserProto", targets: ["VfioUserProto"]),
        .library(name: "RegionEmulation", targets: ["RegionEmulation"]),
        .library(name: "VfioUserServer", targets: ["VfioUserServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        // json-c (Debian libjson-c-dev): the capabilities JSON of VERSION and the management protocol.
        .systemLibrary(
            name: "CJSONC",
            pkgConfig: "json-c",
            providers: [.apt(["libjson-c-dev"])]
        ),
        // Linux interfaces the Glibc module lacks (eventfd, memfd, CMSG macros), as inline wrappers.
        .target(name: "CLinux"),
        // PNG through libpng's simplified API (Debian libpng-dev): screenshots of display devices.
        .target(name: "CPNG", linkerSettings: [.linkedLibrary("png16")]),
        // A lock ThreadSanitizer can see (Synchronization.Mutex otherwise): for every target with state
        // shared between threads.
        .target(name: "Locking", dependencies: ["CLinux"], swiftSettings: strict),
        // Bytes, messages, sockets, fds. Knows nothing of devices.
        .target(
            name: "VfioUserProto",
            dependencies: ["CJSONC", "CLinux", "Locking", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict
        ),
        // PCI semantics: config space, capabilities, BARs, interrupts, the DMA space.
        .target(name: "RegionEmulation", dependencies: ["VfioUserProto", "CLinux", "Locking", .product(name: "SystemPackage", package: "swift-system")],
                swiftSettings: strict),
        // Device models: PCI semantics from RegionEmulation, and from VfioUserProto only its value
        // types (byte reader/writer, fds, threads); never a socket or a message.
        .target(name: "MttyDevice", dependencies: ["RegionEmulation", "VfioUserProto", "Locking"], swiftSettings: strict),
        .target(name: "VirtioNetDevice", dependencies: ["RegionEmulation", "VfioUserProto", "CLinux", "Locking",
                                                       .product(name: "SystemPackage", package: "swift-system")],
                swiftSettings: strict),
        .target(name: "MbochsDevice", dependencies: ["RegionEmulation", "VfioUserProto", "CLinux", "Locking",
                                                    .product(name: "SystemPackage", package: "swift-system")],
                swiftSettings: strict),
        // Endpoints, sessions, device life cycle: between the protocol and the command line.
        .target(
            name: "VfioUserServer",
            dependencies: ["VfioUserProto", "RegionEmulation", "CPNG", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "vfio-user-server",
            dependencies: [
                "VfioUserServer", "MttyDevice", "VirtioNetDevice", "MbochsDevice",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        // Helpers shared by the test targets: threads, temporary directories, memfd-backed memory.
        .target(name: "TestSupport", dependencies: ["VfioUserServer", "RegionEmulation", "MttyDevice", "VfioUserProto", "CLinux", "Locking"],
                path: "Tests/TestSupport", swiftSettings: strict),
        // Benchmarks that print figures beside a reference measured in the same run; the allocation
        // counter interposes malloc in the benchmark process only.
        .target(name: "CAllocationCounter"),
        .executableTarget(
            name: "vfio-user-bench",
            dependencies: [
                "VfioUserServer", "RegionEmulation", "CLinux", "VirtioNetDevice", "VirtioNetTestDriver", "TestSupport", "MttyDevice", "CAllocationCounter",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        // examples/: a custom device in a few dozen lines, built with the package so it stays true.
        .executableTarget(name: "example-counter-device", dependencies: ["VfioUserServer", "RegionEmulation"],
                          path: "examples/CounterDevice", swiftSettings: strict),
        // A virtio-net driver over the client, playing the guest: for tests and benchmarks.
        .target(name: "VirtioNetTestDriver", dependencies: ["VfioUserProto", "TestSupport", "CLinux"],
                path: "Tests/VirtioNetTestDriver", swiftSettings: strict),
        // Fuzzing (scripts/fuzz.sh builds these with -DFUZZING -sanitize=fuzzer); a plain build replays
        // inputs and writes the seed corpus, and FuzzCorpusTests replays the corpus in `swift test`.
        .target(name: "FuzzHarness", dependencies: ["VfioUserServer", "MttyDevice", "VfioUserProto", "RegionEmulation", "TestSupport", "CLinux"],
                path: "Tests/Fuzz/Harness", swiftSettings: strict),
        .executableTarget(name: "fuzz-decoder", dependencies: ["FuzzHarness"], path: "Tests/Fuzz/Decoder", swiftSettings: strict),
        .executableTarget(name: "fuzz-session", dependencies: ["FuzzHarness"], path: "Tests/Fuzz/Session", swiftSettings: strict),
        .testTarget(name: "VirtioNetDeviceTests", dependencies: ["VirtioNetDevice", "VirtioNetTestDriver", "VfioUserServer", "TestSupport", "Locking"],
                    swiftSettings: strict),
        .testTarget(name: "VfioUserProtoTests", dependencies: ["VfioUserProto", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "RegionEmulationTests", dependencies: ["RegionEmulation", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "MttyDeviceTests", dependencies: ["MttyDevice"], swiftSettings: strict),
        .testTarget(
            name: "ServerConformanceTests",
            dependencies: ["VfioUserServer", "MttyDevice", "VirtioNetDevice", "MbochsDevice", "VirtioNetTestDriver", "TestSupport", "FuzzHarness",
                           "Locking", "CPNG"],
            swiftSettings: strict
        ),
    ]
)

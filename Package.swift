// swift-tools-version: 6.1
import PackageDescription

// No unsafe flags anywhere, so that a device author's package can depend on this one by version.
let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]
let system = Target.Dependency.product(name: "SystemPackage", package: "swift-system")
let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")

let package = Package(
    name: "vfio-user-swift",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vfio-user-server", targets: ["vfio-user-server"]),
        .executable(name: "vfio-user-bench", targets: ["vfio-user-bench"]),
        // What a device author imports: one module (see examples/).
        .library(name: "VfioUser", targets: ["VfioUser"]),
        .library(name: "VfioUserProto", targets: ["VfioUserProto"]),
        .library(name: "RegionEmulation", targets: ["RegionEmulation"]),
        .library(name: "VfioUserServer", targets: ["VfioUserServer"]),
        .library(name: "VirtioDriver", targets: ["VirtioDriver"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        // json-c (Debian libjson-c-dev): the capabilities JSON of VERSION and the management protocol.
        .systemLibrary(name: "CJSONC", pkgConfig: "json-c", providers: [.apt(["libjson-c-dev"])]),
        // Linux interfaces the Glibc module lacks (eventfd, memfd, seals, CMSG macros), as inline wrappers.
        .target(name: "CLinux"),
        // seccomp filters through libseccomp (Debian libseccomp-dev): the isolated workers' sandbox.
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),
        // PNG through libpng's simplified API (Debian libpng-dev): screenshots of display devices.
        .target(name: "CPNG", linkerSettings: [.linkedLibrary("png16")]),

        // Threads, locks, owned fds, errno names, whole-file reads: what every layer uses.
        .target(name: "Support", dependencies: ["CLinux", system], swiftSettings: strict),
        // Bytes, messages, sockets, fds; the client. Knows nothing of devices.
        .target(name: "VfioUserProto", dependencies: ["CJSONC", "CLinux", "Support", system], swiftSettings: strict),
        // PCI semantics: config space, capabilities, BARs, interrupts, the DMA space; the device
        // model protocol and the types a model registers.
        .target(name: "RegionEmulation", dependencies: ["VfioUserProto", "CLinux", "Support", system], swiftSettings: strict),

        // Device models: PCI semantics from RegionEmulation, and from VfioUserProto only its value
        // types (byte reader and writer); never a socket or a message.
        .target(name: "MttyDevice", dependencies: ["RegionEmulation", "VfioUserProto", "Support"], swiftSettings: strict),
        .target(name: "VirtioNetDevice", dependencies: ["RegionEmulation", "VfioUserProto", "CLinux", "Support", system], swiftSettings: strict),
        .target(name: "MbochsDevice", dependencies: ["RegionEmulation", "VfioUserProto", "CLinux", "Support", system], swiftSettings: strict),

        // What an isolated worker drops before it serves: user, capabilities, system calls.
        .target(name: "WorkerSandbox", dependencies: ["CSeccomp", "CLinux", "Support", system], swiftSettings: strict),

        // Endpoints, sessions, device life cycle, the control socket: between the protocol and the command line.
        .target(name: "VfioUserServer", dependencies: ["VfioUserProto", "RegionEmulation", "CPNG", "CLinux", "Support", system], swiftSettings: strict),
        // The device author's one import: the model protocol and PCI building blocks, and serving.
        .target(name: "VfioUser", dependencies: ["RegionEmulation", "VfioUserServer", "VfioUserProto", "Support", system], swiftSettings: strict),
        // A virtio-net driver over the vfio-user client, written from the virtio specification:
        // plays the guest in tests and benchmarks.
        .target(name: "VirtioDriver", dependencies: ["VfioUserProto", "CLinux", "Support", system], swiftSettings: strict),

        .executableTarget(
            name: "vfio-user-server",
            dependencies: ["VfioUserServer", "VfioUserProto", "RegionEmulation", "MttyDevice", "VirtioNetDevice", "MbochsDevice",
                           "WorkerSandbox", "CLinux", "Support", system, argumentParser],
            swiftSettings: strict),
        // Benchmarks that print figures beside a reference measured in the same run; the allocation
        // counter interposes malloc in the benchmark process only.
        .target(name: "CAllocationCounter"),
        .executableTarget(
            name: "vfio-user-bench",
            dependencies: ["VfioUserServer", "VfioUserProto", "RegionEmulation", "MttyDevice", "VirtioNetDevice", "VirtioDriver",
                           "CLinux", "CAllocationCounter", "Support", system, argumentParser],
            swiftSettings: strict),
        // The benchmarks' reference: a vfio-user peer that answers without doing any work.
        .executableTarget(name: "vfio-user-echo", path: "Sources/vfio-user-echo"),
        // examples/: a custom device in a few dozen lines, built with the package so it stays true.
        .executableTarget(name: "example-counter-device", dependencies: ["VfioUser"], path: "examples/CounterDevice", swiftSettings: strict),

        // Helpers shared by the test targets: test servers, server processes, threads, temporary directories.
        .target(name: "TestSupport", dependencies: ["VfioUserServer", "RegionEmulation", "MttyDevice", "VfioUserProto", "CLinux", "Support", system],
                path: "Tests/TestSupport", swiftSettings: strict),
        // Fuzzing (scripts/fuzz.sh builds these with -DFUZZING -sanitize=fuzzer); a plain build replays
        // inputs and writes the seed corpus, and FuzzCorpusTests replays the corpus in `swift test`.
        .target(name: "FuzzHarness", dependencies: ["VfioUserServer", "MttyDevice", "VirtioNetDevice", "MbochsDevice", "VfioUserProto", "RegionEmulation", "TestSupport",
                                                    "CLinux", "Support"],
                path: "Tests/Fuzz/Harness", swiftSettings: strict),
        .executableTarget(name: "fuzz-decoder", dependencies: ["FuzzHarness"], path: "Tests/Fuzz/Decoder", swiftSettings: strict),
        .executableTarget(name: "fuzz-session", dependencies: ["FuzzHarness"], path: "Tests/Fuzz/Session", swiftSettings: strict),
        .executableTarget(name: "fuzz-virtqueue", dependencies: ["FuzzHarness"], path: "Tests/Fuzz/Virtqueue", swiftSettings: strict),
        .executableTarget(name: "fuzz-mbochs", dependencies: ["FuzzHarness"], path: "Tests/Fuzz/Mbochs", swiftSettings: strict),
        .testTarget(name: "VfioUserProtoTests", dependencies: ["VfioUserProto", "TestSupport", "Support", "CLinux", system], swiftSettings: strict),
        .testTarget(name: "RegionEmulationTests", dependencies: ["RegionEmulation", "VfioUserProto", "TestSupport", "Support", system], swiftSettings: strict),
        .testTarget(name: "MttyDeviceTests", dependencies: ["MttyDevice", "RegionEmulation"], swiftSettings: strict),
        .testTarget(name: "VirtioNetDeviceTests", dependencies: ["VirtioNetDevice", "VirtioDriver", "VfioUserServer", "VfioUserProto", "RegionEmulation",
                                                              "TestSupport", "Support", system], swiftSettings: strict),
        .testTarget(
            name: "ServerConformanceTests",
            dependencies: ["VfioUserServer", "VfioUserProto", "RegionEmulation", "MttyDevice", "VirtioNetDevice", "MbochsDevice", "VirtioDriver",
                           "TestSupport", "FuzzHarness", "WorkerSandbox", "Support", "CPNG", system],
            swiftSettings: strict),
    ]
)

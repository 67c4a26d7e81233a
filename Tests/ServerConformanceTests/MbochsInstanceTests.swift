import Support
import MbochsDevice
import RegionEmulation
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

/// mbochs as the mdev core serves it: its types and their memory pool, migration of the whole
/// display, a client that cannot receive fds, and fds over many attaches.
@Suite("mbochs instances")
struct MbochsInstanceTests {
    @Test func theThreeTypesShareTheMemoryPoolInMiB() throws {
        let server = try ManagedServer()
        #expect(try server.available().filter { $0.key.hasPrefix("mbochs") } == ["mbochs-small": 64, "mbochs-medium": 16, "mbochs-large": 4])
        let medium = try server.start("mbochs-medium")
        #expect(try server.available().filter { $0.key.hasPrefix("mbochs") } == ["mbochs-small": 60, "mbochs-medium": 15, "mbochs-large": 3])
        let large = try server.start("mbochs-large", ["mmap": "off", "resolution": "2560x1600"])
        #expect(try server.available()["mbochs-large"] == 2, "256 - 16 - 64 = 176 MiB left")
        expectManagementError(.invalidArgument) { try server.start("mbochs-small", ["resolution": "1024x768"]) } // past 800x600
        expectManagementError(.invalidArgument) { try server.start("mbochs-medium", ["resolution": "1920x2000"]) } // past 1440 lines
        expectManagementError(.invalidArgument) { try server.start("mbochs-medium", ["resolution": "wide"]) }
        expectManagementError(.invalidArgument) { try server.start("mbochs-medium", ["mmap": "maybe"]) }
        expectManagementError(.invalidArgument) { try server.start("mbochs-medium", ["colour": "red"]) }
        for uuid in [medium.uuid, large.uuid] { try server.send(.stop(uuid: uuid, force: false, timeoutMilliseconds: nil)) }
        #expect(try server.available()["mbochs-small"] == 64)
        let pooled = try ManagedServer(pools: ["mbochs-memory": 32])
        #expect(try pooled.available()["mbochs-large"] == 0 && pooled.available()["mbochs-medium"] == 2)
    }

    /// The registers, the EDID and every byte of the framebuffer travel in STOP_COPY; PRE_COPY
    /// offers the header only (nothing of client-mapped memory can be tracked as dirty).
    @Test func theWholeDisplayMigrates() throws {
        let source = try TestServer(model: try MbochsDevice(memorySize: 16 << 20, width: 1280, height: 1024))
        let destination = try TestServer(model: try MbochsDevice(memorySize: 16 << 20, width: 1024, height: 768))
        let from = try source.attach(), to = try destination.attach()
        try MbochsTests.setMode(from, width: 640, height: 480)
        var random: UInt64 = 0x9E37_79B9_7F4A_7C15
        var pattern = [UInt8](repeating: 0, count: 16 << 20)
        for i in pattern.indices {
            random ^= random << 13; random ^= random >> 7; random ^= random << 17
            pattern[i] = UInt8(truncatingIfNeeded: random)
        }
        for chunk in stride(from: 0, to: pattern.count, by: 1 << 20) {
            try from.write(.bar0, offset: UInt64(chunk), data: Array(pattern[chunk ..< chunk + (1 << 20)]))
        }
        let report = try MigrationDriver(chunkSize: 1 << 20).migrate(from: from, to: to)
        #expect(report.preCopyBytes < 256, "PRE_COPY: the headers only")
        #expect(report.stopCopyBytes > 16 << 20, "STOP_COPY: the framebuffer and more")
        var arrived: [UInt8] = []
        for chunk in stride(from: 0, to: pattern.count, by: 1 << 20) { arrived += try to.read(.bar0, offset: UInt64(chunk), count: 1 << 20) }
        #expect(arrived == pattern, "every byte of the framebuffer")
        #expect(try MbochsTests.dispi(to, .xres) == 640 && MbochsTests.dispi(to, .enable) == 0x41)
        let edid = try (54..<72).map { try to.read(.bar2, offset: UInt64($0), as: UInt8.self) }
        #expect(Int(edid[2]) | Int(edid[4] >> 4) << 8 == 1280, "the source's EDID")
        let shown = try #require(destination.device.model as? MbochsDevice).capturePicture()
        #expect(shown == (try #require(source.device.model as? MbochsDevice).capturePicture()), "the same picture")
    }

    @Test func aStreamForAnotherFramebufferSizeIsRefusedAtItsHeader() throws {
        let source = try TestServer(model: try MbochsDevice(memorySize: 4 << 20, width: 800, height: 600))
        let destination = try TestServer(model: try MbochsDevice(memorySize: 16 << 20, width: 1024, height: 768))
        let from = try source.attach(), to = try destination.attach()
        try from.setMigrationState(.preCopy)
        let headers = try from.migrationDataRead(size: 4096)
        try to.setMigrationState(.resuming)
        expectErrno(.invalidArgument) { try to.migrationDataWrite(headers) }
        try to.reset()
        #expect(try MbochsTests.dispi(to, .videoMemory64K) == 256)
    }

    /// A client whose fds do not get through (socat passes none) still gets a device it can use:
    /// the region info says MMAP, but no fd comes, so it reads and writes the framebuffer with
    /// REGION_READ/WRITE (QEMU does the same: its mmap of the missing fd fails, it warns that
    /// performance may be slow and traps the BAR).
    @Test func aClientBehindSocatUsesTheFramebufferByMessages() throws {
        let server = try TestServer(model: try MbochsDevice(memorySize: 4 << 20, width: 800, height: 600))
        let relay = server.directory.path + "/socat.sock"
        let socat = try ServerProcess(arguments: ["UNIX-LISTEN:\(relay)", "UNIX-CONNECT:\(server.path)"],
                                      serverOptions: false, waitFor: relay, program: "socat")
        let client = try VfioUserClient(path: relay)
        try client.negotiate()
        let (info, fd) = try client.regionInfo(.bar0)
        #expect(info.flags.contains(.mmap) && fd == nil, "the fd did not get through socat")
        try MbochsTests.setMode(client, width: 64, height: 64)
        let row = (0..<64).flatMap { x in withUnsafeBytes(of: MbochsTests.patternPixel(x: x, y: 0).littleEndian) { Array($0) } }
        for y in 0..<64 { try client.write(.bar0, offset: UInt64(y * 256), data: row) }
        #expect(try client.read(.bar0, offset: 63 * 256, count: 256) == row)
        let picture = try #require(server.device.model as? DisplayDevice).capturePicture()
        #expect(picture.pixel(x: 63, y: 63) == MbochsTests.patternPixel(x: 63, y: 0))
        UnixSocket.shutdown(client.socket)
        #expect(socat.waitForExit(milliseconds: 5000) == 0)
    }

    /// 1,000 clients that each take BAR0's fd, set a mode and go: the server holds exactly the fds
    /// it held before the first.
    @Test func aThousandAttachesTakingTheFramebufferFdLeaveTheFdsFlat() throws {
        let server = try ServerProcess(arguments: ["--type", "mbochs-small"])
        let baseline = server.openFDCount
        #expect(baseline > 0)
        for _ in 0..<1000 {
            let client = try FaultTests.attachWhenFree(server.path)
            let (_, fd) = try client.regionInfo(.bar0)
            #expect(fd != nil)
            try MbochsTests.setDispi(client, .xres, 640)
            UnixSocket.shutdown(client.socket)
        }
        #expect(server.waitForFDCount(baseline) == baseline)
        #expect(server.terminate() == 0)
    }

    /// The screenshot subcommand against a server process: an mbochs-small from the config file,
    /// then the first device given by --type; no mode is ENODATA and no file, a mode is a PNG.
    @Test func theScreenshotCommandWritesThePNGOrSaysWhyNot() throws {
        let uuid = "6c1e2b7a-0d4f-4b9e-8a51-3f2e9c7d1a01"
        let directory = TemporaryDirectory()
        let config = directory.path + "/devices.json"
        let text = #"{"devices": [{"uuid": "\#(uuid)", "type": "mbochs-small", "params": {"resolution": "640x480"}}]}"#
        let fd = open(config, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        _ = text.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        let server = try ServerProcess(arguments: ["--config", config], firstDevice: false)
        let output = directory.path + "/screen.png"
        let none = try ServerProcess.run(["screenshot", "--uuid", uuid, "--control", server.controlPath, "--output", output])
        #expect(none.status != 0 && none.errors.contains("ENODATA") && none.errors.contains("disabled"), "\(none.errors)")
        #expect(access(output, F_OK) != 0, "no file for no picture")

        let client = try VfioUserClient(path: server.directory.path + "/\(uuid).sock")
        try client.negotiate()
        let edid = try (54..<72).map { try client.read(.bar2, offset: UInt64($0), as: UInt8.self) }
        #expect(Int(edid[2]) | Int(edid[4] >> 4) << 8 == 640, "the resolution parameter made it to the EDID")
        try MbochsTests.setMode(client, width: 64, height: 64)
        for y in 0..<64 {
            let row = (0..<64).flatMap { x in withUnsafeBytes(of: MbochsTests.patternPixel(x: x, y: y).littleEndian) { Array($0) } }
            try client.write(.bar0, offset: UInt64(y * 256), data: row)
        }
        let taken = try ServerProcess.run(["screenshot", "--uuid", uuid, "--control", server.controlPath, "--output", output])
        #expect(taken.status == 0, "\(taken.errors)")
        #expect(taken.output.hasSuffix(": 64x64 (\(readBytes(output)?.count ?? -1) bytes)\n"), "\(taken.output)")
        let picture = try MbochsTests.decodePNG(try #require(readBytes(output)))
        #expect((0..<64).allSatisfy { y in (0..<64).allSatisfy { x in picture.pixel(x: x, y: y) == MbochsTests.patternPixel(x: x, y: y) } })
        #expect(server.terminate() == 0)
    }
}

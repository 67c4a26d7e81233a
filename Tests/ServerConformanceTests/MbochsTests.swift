import CPNG
import MbochsDevice
import RegionEmulation
import Support
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

/// The mbochs display over a real socket, seen as the guest's bochs driver and QEMU see it: the
/// offsets, IDs and layouts below are those of the PCI spec, VFIO's region info, QEMU's stdvga
/// (docs/specs/standard-vga.rst) and VESA's EDID, written out here rather than taken from the model.
@Suite("mbochs display")
struct MbochsTests {
    static let megabytes = 16
    static let memory = megabytes << 20
    static func device(mappable: Bool = true) throws -> MbochsDevice {
        try MbochsDevice(memorySize: memory, width: 1024, height: 768, mappable: mappable)
    }

    // BAR2 offsets of the stdvga MMIO layout.
    static let dispiBase: UInt64 = 0x500
    enum Dispi: UInt64 { case id = 0, xres, yres, bpp, enable, bank, virtWidth, virtHeight, xOffset, yOffset, videoMemory64K }

    static func setDispi(_ client: VfioUserClient, _ register: Dispi, _ value: UInt16) throws {
        try client.write(.bar2, offset: dispiBase + 2 * register.rawValue, value: value)
    }

    static func dispi(_ client: VfioUserClient, _ register: Dispi) throws -> UInt16 {
        try client.read(.bar2, offset: dispiBase + 2 * register.rawValue, as: UInt16.self)
    }

    /// What the bochs driver writes for a mode (bochs_hw_setmode, then the base at 0, 0).
    static func setMode(_ client: VfioUserClient, width: UInt16, height: UInt16, virtualWidth: UInt16? = nil,
                        xOffset: UInt16 = 0, yOffset: UInt16 = 0) throws {
        try client.write(.bar2, offset: 0x400, value: UInt8(0x20)) // 0x3c0: unblank
        try setDispi(client, .enable, 0)
        try setDispi(client, .bpp, 32)
        try setDispi(client, .xres, width)
        try setDispi(client, .yres, height)
        try setDispi(client, .bank, 0)
        try setDispi(client, .virtWidth, virtualWidth ?? width)
        try setDispi(client, .virtHeight, UInt16(clamping: memory / (Int(virtualWidth ?? width) * 4)))
        try setDispi(client, .xOffset, xOffset)
        try setDispi(client, .yOffset, yOffset)
        try setDispi(client, .enable, 0x41) // ENABLED | LFB_ENABLED
    }

    /// An XRGB8888 pattern no two neighbouring pixels share: red from x, green from y, blue mixed.
    static func patternPixel(x: Int, y: Int) -> UInt32 {
        UInt32(x & 0xFF) << 16 | UInt32(y & 0xFF) << 8 | UInt32((x * 7 + y * 13) & 0xFF)
    }

    // MARK: Identity and regions

    @Test func configSpaceIsTheSamplesDisplay() throws {
        let server = try TestServer(model: try Self.device())
        let client = try server.attach()
        let config = try client.read(.config, offset: 0, count: 64)
        #expect(Array(config[0..<4]) == [0x34, 0x12, 0x11, 0x11], "vendor 1234, device 1111")
        #expect(Array(config[8..<12]) == [0x01, 0x00, 0x80, 0x03], "revision 1, class 03/80/00: display, other")
        #expect(Array(config[0x2C..<0x30]) == [0xF4, 0x1A, 0x00, 0x11], "subsystem 1af4:1100")
        #expect(config[0x10] & 0x0F == 0x08, "BAR0: memory, 32-bit, prefetchable")
        #expect(config[0x18] & 0x0F == 0x00, "BAR2: memory, 32-bit, not prefetchable")
        try client.write(.config, offset: 0x10, value: UInt32.max)
        #expect(try client.read(.config, offset: 0x10, as: UInt32.self) == ~UInt32(Self.memory - 1) | 0x08, "BAR0 sizes to 16 MiB")
        try client.write(.config, offset: 0x18, value: UInt32.max)
        #expect(try client.read(.config, offset: 0x18, as: UInt32.self) == 0xFFFF_F000, "BAR2 sizes to 4 KiB")
        for index: IRQIndex in [.intx, .msi, .msix] { #expect(try client.irqInfo(index).count == 0, "no \(index): the sample has none") }
    }

    /// GET_REGION_INFO for BAR0 as QEMU asks it: first with argsz 32 (the MMAP flag, the size it
    /// needs, no capability, no fd), then with that size: CAPS, a sparse-mmap capability (id 1,
    /// version 1) with one area over the whole BAR, and the fd. Parsed from the bytes.
    @Test func theFramebufferIsOfferedForMmapWithItsFd() throws {
        let server = try TestServer(model: try Self.device())
        let client = try server.attach()
        func ask(_ argsz: UInt32) throws -> ClientReply {
            let reply = try #require(try client.request(.deviceGetRegionInfo, payload: le(argsz) + le(UInt32(0)) + le(UInt32(0)) + le(UInt32(0)) + [UInt8](repeating: 0, count: 16)))
            return ClientReply(payload: Array(reply.payload), fds: reply.fds)
        }
        let first = try ask(32)
        #expect(first.payload.count == 32 && first.fds.isEmpty)
        #expect(first.u32(4) == 0x7, "READ|WRITE|MMAP, no CAPS yet")
        let needed = first.u32(0)
        #expect(needed == 32 + 32, "the struct and a sparse-mmap capability with one area")
        #expect(first.u64(16) == UInt64(Self.memory))
        let second = try ask(needed)
        #expect(second.payload.count == Int(needed))
        #expect(second.u32(4) == 0xF, "READ|WRITE|MMAP|CAPS")
        #expect(second.u32(12) == 32, "cap_offset")
        #expect(second.u16(32) == 1 && second.u16(34) == 1 && second.u32(36) == 0, "SPARSE_MMAP v1, last in the chain")
        #expect(second.u32(40) == 1, "one area")
        #expect(second.u64(48) == 0 && second.u64(56) == UInt64(Self.memory), "the whole BAR")
        let fd = try #require(second.fds.first, "the region's fd")
        var status = stat()
        #expect(fstat(fd.rawValue, &status) == 0 && Int(status.st_size) == Self.memory)
        // BAR2 stays trapped.
        let registers = try client.regionInfo(.bar2)
        #expect(registers.info.flags == [.read, .write] && registers.info.size == 4096 && registers.fd == nil)
    }

    struct ClientReply {
        let payload: [UInt8]
        let fds: [OwnedFileDescriptor]
        func u16(_ at: Int) -> UInt16 { UInt16(payload[at]) | UInt16(payload[at + 1]) << 8 }
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(payload[at + $1]) << (8 * $1) } }
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(payload[at + $1]) << (8 * $1) } }
    }

    @Test func mmapOffIsTheSameBARTrapped() throws {
        let server = try TestServer(model: try Self.device(mappable: false))
        let client = try server.attach()
        let (info, fd) = try client.regionInfo(.bar0)
        #expect(info.flags == [.read, .write] && info.capabilities.isEmpty && fd == nil)
        try client.write(.bar0, offset: 0x1000, value: UInt64(0x1122_3344_5566_7788))
        #expect(try client.read(.bar0, offset: 0x1000, as: UInt64.self) == 0x1122_3344_5566_7788)
    }

    // MARK: The mapping and the messages agree

    @Test func theMappedFramebufferAndRegionAccessesSeeTheSameBytes() throws {
        let server = try TestServer(model: try Self.device())
        let client = try server.attach()
        let (info, received) = try client.regionInfo(.bar0)
        let fd = try #require(received)
        let mapped = try #require(mmap(nil, Int(info.size), PROT_READ | PROT_WRITE, MAP_SHARED, fd.rawValue, off_t(info.offset)))
        try #require(mapped != MAP_FAILED)
        defer { munmap(mapped, Int(info.size)) }
        // Through the mapping, read back by REGION_READ.
        for i in 0..<4096 { mapped.storeBytes(of: UInt8(truncatingIfNeeded: i * 37 + 5), toByteOffset: 0x20000 + i, as: UInt8.self) }
        #expect(try client.read(.bar0, offset: 0x20000, count: 4096) == (0..<4096).map { UInt8(truncatingIfNeeded: $0 * 37 + 5) })
        // By REGION_WRITE, seen in the mapping; at the last bytes of the BAR too.
        try client.write(.bar0, offset: UInt64(Self.memory - 8), data: [1, 2, 3, 4, 5, 6, 7, 8])
        #expect((0..<8).map { mapped.load(fromByteOffset: Self.memory - 8 + $0, as: UInt8.self) } == [1, 2, 3, 4, 5, 6, 7, 8])
        expectErrno(.invalidArgument) { try client.read(.bar0, offset: UInt64(Self.memory - 4), count: 8) }
        expectErrno(.invalidArgument) { try client.write(.bar0, offset: UInt64(Self.memory), data: [0]) }
    }

    // MARK: Registers

    @Test func dispiRegistersAreThe16BitOnesOfTheStandardVGA() throws {
        let server = try TestServer(model: try Self.device())
        let client = try server.attach()
        #expect(try Self.dispi(client, .id) == 0xB0C5)
        #expect(try Self.dispi(client, .videoMemory64K) == UInt16(Self.memory / 65536))
        #expect(try Self.dispi(client, .enable) == 0)
        // Only 16-bit accesses reach them: a 4-byte read is 0, a byte write is ignored.
        #expect(try client.read(.bar2, offset: Self.dispiBase, as: UInt32.self) == 0)
        try client.write(.bar2, offset: Self.dispiBase + 2, value: UInt8(0x44))
        #expect(try Self.dispi(client, .xres) == 0)
        // The ID takes a VBE ID only; the memory size cannot be written.
        try Self.setDispi(client, .id, 0x1234)
        #expect(try Self.dispi(client, .id) == 0xB0C5)
        try Self.setDispi(client, .id, 0xB0C0)
        #expect(try Self.dispi(client, .id) == 0xB0C0)
        try Self.setDispi(client, .videoMemory64K, 1)
        #expect(try Self.dispi(client, .videoMemory64K) == 256)
        // QEMU's extended registers: 8 bytes of them, the framebuffer little-endian.
        #expect(try client.read(.bar2, offset: 0x600, as: UInt32.self) == 8)
        #expect(try client.read(.bar2, offset: 0x604, as: UInt32.self) == 0x1E1E_1E1E)
        // Past the registers, inside the BAR: nothing decodes there.
        #expect(try client.read(.bar2, offset: 0xFF8, as: UInt64.self) == 0)
        expectErrno(.invalidArgument) { try client.read(.bar2, offset: 0x1000, as: UInt8.self) }
        // Reset: power-on registers.
        try Self.setMode(client, width: 640, height: 480)
        try client.reset()
        #expect(try [Dispi.id, .xres, .enable, .videoMemory64K].map { try Self.dispi(client, $0) } == [0xB0C5, 0, 0, 256])
    }

    /// The EDID block at BAR2 0x000, read a byte at a time as the bochs driver does: a valid EDID
    /// 1.4 base block (header, checksum) whose first detailed timing, the preferred mode, is the
    /// instance's resolution (VESA E-EDID 1.4, 3.10.2).
    @Test(arguments: [(1024, 768), (800, 600), (1920, 1080)])
    func theEDIDNamesThePreferredMode(width: Int, height: Int) throws {
        let server = try TestServer(model: try MbochsDevice(memorySize: Self.memory, width: width, height: height))
        let client = try server.attach()
        let edid = try (0..<128).map { try client.read(.bar2, offset: UInt64($0), as: UInt8.self) }
        #expect(Array(edid[0..<8]) == [0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00])
        #expect(edid.reduce(0) { $0 &+ $1 } == 0, "the 128 bytes sum to 0 mod 256")
        #expect(edid[18] == 1 && edid[19] == 4, "EDID 1.4")
        #expect(edid[24] & 0x02 == 0x02, "the first detailed timing is the preferred mode")
        let timing = Array(edid[54..<72])
        #expect(timing[0] != 0 || timing[1] != 0, "a detailed timing, not a display descriptor")
        #expect(Int(timing[2]) | Int(timing[4] >> 4) << 8 == width)
        #expect(Int(timing[5]) | Int(timing[7] >> 4) << 8 == height)
        #expect(edid[126] == 0, "no extension block")
        #expect(try client.read(.bar2, offset: 0x80, as: UInt32.self) == 0, "nothing past the block")
    }

    // MARK: Screenshots

    @Test func aScreenshotShowsThePatternAtTheModeTheDriverSet() throws {
        let server = try ManagedServer()
        let (uuid, socket) = try server.start("mbochs-medium")
        let client = try VfioUserClient(path: socket)
        try client.negotiate()
        let (info, received) = try client.regionInfo(.bar0)
        let fd = try #require(received)
        let mapped = try #require(mmap(nil, Int(info.size), PROT_READ | PROT_WRITE, MAP_SHARED, fd.rawValue, 0))
        try #require(mapped != MAP_FAILED)
        defer { munmap(mapped, Int(info.size)) }
        // A mode with a wider virtual screen and a panned origin, as a double-buffering driver sets it.
        let (width, height, virtualWidth, x, y) = (320, 200, 400, 8, 300)
        try Self.setMode(client, width: UInt16(width), height: UInt16(height), virtualWidth: UInt16(virtualWidth),
                         xOffset: UInt16(x), yOffset: UInt16(y))
        for row in 0..<height {
            for column in 0..<width {
                let at = (y + row) * virtualWidth * 4 + (x + column) * 4
                mapped.storeBytes(of: Self.patternPixel(x: column, y: row).littleEndian, toByteOffset: at, as: UInt32.self)
            }
        }
        let reply = try server.send(.screenshot(uuid: uuid))
        #expect(reply["width"] == .int(Int64(width)) && reply["height"] == .int(Int64(height)))
        let png = try #require(reply["png"]?.stringValue.flatMap(Base64.decode))
        let picture = try Self.decodePNG(png)
        #expect(picture.width == width && picture.height == height)
        var mismatches = 0
        for row in 0..<height { for column in 0..<width where picture.pixel(x: column, y: row) != Self.patternPixel(x: column, y: row) { mismatches += 1 } }
        #expect(mismatches == 0, "every pixel of the pattern")
    }

    /// Modes the hardware cannot show give no picture, with the reason; the device goes on.
    @Test func noModeOrAModeTheFramebufferCannotHoldIsNoPicture() throws {
        let server = try ManagedServer()
        let (uuid, socket) = try server.start("mbochs-small")
        let client = try VfioUserClient(path: socket)
        try client.negotiate()
        func refusal() -> String? {
            do { _ = try server.send(.screenshot(uuid: uuid)); return nil } catch let error as ManagementError {
                return error.errno == .noData ? error.message : "\(error.errno.name): \(error.message)"
            } catch { return "\(error)" }
        }
        #expect(refusal()?.contains("disabled") == true, "no mode set yet")
        try Self.setMode(client, width: 4000, height: 4000)
        #expect(refusal()?.contains("bytes of a 4194304-byte framebuffer") == true, "larger than 4 MiB")
        try Self.setMode(client, width: 800, height: 600, virtualWidth: 65535)
        #expect(refusal() != nil, "an absurd virtual width")
        try Self.setMode(client, width: 800, height: 600, yOffset: 65535)
        #expect(refusal() != nil, "an absurd offset")
        try Self.setMode(client, width: 32, height: 32)
        #expect(refusal()?.contains("below 64x64") == true)
        try Self.setMode(client, width: 800, height: 600)
        try Self.setDispi(client, .bpp, 16)
        #expect(refusal()?.contains("16 bits per pixel") == true)
        try Self.setMode(client, width: 800, height: 600)
        #expect(refusal() == nil, "a mode that fits: a picture")
        expectManagementError(.notSupported) {
            let serial = try server.start("mtty-1")
            _ = try server.send(.screenshot(uuid: serial.uuid))
        }
    }

    static func decodePNG(_ png: [UInt8]) throws -> Picture {
        var rgb: UnsafeMutablePointer<UInt8>?
        var width: UInt32 = 0, height: UInt32 = 0
        var message = [CChar](repeating: 0, count: 256)
        let status = png.withUnsafeBufferPointer { cpng_decode_rgb($0.baseAddress, $0.count, &rgb, &width, &height, &message) }
        let pixels = try #require(status == 0 ? rgb : nil, "libpng: \(textUpToNUL(message))")
        defer { free(pixels) }
        return Picture(width: Int(width), height: Int(height), rgb: Array(UnsafeBufferPointer(start: pixels, count: Int(width * height * 3))))
    }
}

import RegionEmulation
import Support
import SystemPackage
import VfioUserProto

/// The kernel's mbochs sample (samples/vfio-mdev/mbochs.c) as a vfio-user device model: enough of
/// QEMU's standard VGA for the guest's bochs DRM driver, without legacy VGA.
///
/// - BAR0: the framebuffer, 32-bit prefetchable memory backed by a memfd the client may map
///   (GET_REGION_INFO with MMAP, a sparse-mmap area over the whole BAR and the fd), unless the
///   instance was made with `mmap=off`; REGION_READ/WRITE reach the same bytes either way.
/// - BAR2: 4 KiB of registers: the EDID block at 0x000, the VGA ports 0x3c0-0x3df at 0x400, the
///   DISPI registers at 0x500 (16-bit accesses only, as the sample), QEMU's extended registers at
///   0x600 (their size, then the framebuffer's byte order).
///
/// No interrupts (the sample has none); ERR and REQ as every device of this server.
public final class MbochsDevice: DeviceModel, DisplayDevice {
    /// QEMU's stdvga IDs and the sample's subsystem (Red Hat / QEMU), class display-other, rev 1.
    public static let identity = PCIIdentity(vendorID: 0x1234, deviceID: 0x1111, subsystemVendorID: 0x1AF4,
                                             subsystemID: 0x1100, revision: 1, classCode: 0x03_80_00)
    public static let framebufferBAR = 0, registersBAR = 2
    public static let registersSize: UInt64 = 4096

    /// BAR2 layout.
    enum Register {
        static let edid = 0x000 ..< 0x400
        static let vga = 0x400 ..< 0x420
        static let dispi = 0x500 ..< 0x500 + 2 * BochsDispi.Index.allCases.count
        static let extendedSize = 0x600
        static let extendedByteOrder = 0x604
    }

    /// QEMU's extended registers: 8 bytes (size, byte order); the byte-order word's two values.
    static let extendedRegistersSize: UInt64 = 8
    static let littleEndian: UInt32 = 0x1E1E_1E1E, bigEndian: UInt32 = 0xBEBE_BEBE

    public let function: PCIFunction
    /// Framebuffer bytes (BAR0's size).
    public let memorySize: Int
    /// Whether the client may map BAR0.
    public let mappable: Bool
    /// The preferred mode the EDID names.
    public let preferredWidth: Int, preferredHeight: Int
    let framebuffer: Framebuffer
    let registers: Locked<Registers>

    struct Registers: Equatable {
        var dispi: BochsDispi
        /// The guest asked for a big-endian framebuffer (QEMU extended register 0x604).
        var bigEndian = false
        /// The EDID block at BAR2 0x000: made from the preferred mode, or migrated in.
        var edid: [UInt8]
    }

    /// `memorySize`: a power of two of at least 64 KiB (the framebuffer BAR); `width` × `height`:
    /// the EDID's preferred mode; `mappable` false offers BAR0 trapped only. Throws with the errno
    /// of the framebuffer's memfd when it cannot be made.
    public init(memorySize: Int, width: Int, height: Int, mappable: Bool = true, name: String = "mbochs") throws(DeviceCreationError) {
        precondition(memorySize >= 65536 && memorySize.nonzeroBitCount == 1)
        self.memorySize = memorySize
        self.mappable = mappable
        preferredWidth = width
        preferredHeight = height
        do throws(Errno) { framebuffer = try Framebuffer(size: memorySize, name: name) } catch {
            throw DeviceCreationError("mbochs: cannot make its \(memorySize >> 20) MiB framebuffer: \(error.name)", errno: error)
        }
        registers = Locked(Registers(dispi: BochsDispi(framebufferSize: memorySize), edid: EDID.block(width: width, height: height)))
        var description = PCIFunctionDescription(
            identity: Self.identity,
            bars: [.memory(size: UInt64(memorySize), prefetchable: true), nil, .memory(size: Self.registersSize)],
            hasINTx: false)
        description.configSize = ConfigSpace.conventionalSize
        function = try! PCIFunction(description) // a fixed, valid description: cannot fail
    }

    // MARK: DeviceModel

    public func mmapBacking(bar: Int) -> RegionMmap? {
        guard bar == Self.framebufferBAR, mappable else { return nil }
        return RegionMmap(fd: framebuffer.fd, areas: [SparseMmapArea(offset: 0, size: UInt64(memorySize))])
    }

    public func readBAR(_ bar: Int, offset: UInt64, size: Int) -> UInt64 {
        switch bar {
        case Self.framebufferBAR: return framebuffer.load(Int(offset), size)
        case Self.registersBAR: return readRegister(Int(offset), size: size)
        default: return 0
        }
    }

    public func writeBAR(_ bar: Int, offset: UInt64, size: Int, value: UInt64) {
        switch bar {
        case Self.framebufferBAR: framebuffer.store(Int(offset), size, value)
        case Self.registersBAR: writeRegister(Int(offset), size: size, value: value)
        default: break
        }
    }

    /// What the sample does on reset: the DISPI registers back to power-on. The framebuffer keeps
    /// its contents, as video memory does.
    public func reset(_ reason: ResetReason) {
        registers.withLock {
            $0.dispi = BochsDispi(framebufferSize: memorySize)
            $0.bigEndian = false
        }
    }

    // MARK: Registers (BAR2)

    /// Reads the hardware does not decode return 0, as do DISPI accesses of any size but 2.
    private func readRegister(_ offset: Int, size: Int) -> UInt64 {
        switch offset {
        case Register.edid:
            return registers.withLock { r in
                var value: UInt64 = 0
                for i in 0..<size where offset + i < r.edid.count { value |= UInt64(r.edid[offset + i]) << (8 * i) }
                return value
            }
        case Register.dispi where size == 2 && offset % 2 == 0:
            return UInt64(registers.withLock { $0.dispi.read((offset - Register.dispi.lowerBound) / 2) })
        case Register.extendedSize where size == 4:
            return Self.extendedRegistersSize
        case Register.extendedByteOrder where size == 4:
            return UInt64(registers.withLock { $0.bigEndian } ? Self.bigEndian : Self.littleEndian)
        default:
            return 0
        }
    }

    /// Writes the hardware ignores are ignored: DISPI accesses of any size but 2, the EDID (read
    /// only), the VGA ports (no legacy VGA; the driver's unblank needs no effect), a byte order
    /// that is neither value.
    private func writeRegister(_ offset: Int, size: Int, value: UInt64) {
        switch offset {
        case Register.dispi where size == 2 && offset % 2 == 0:
            registers.withLock { $0.dispi.write((offset - Register.dispi.lowerBound) / 2, UInt16(truncatingIfNeeded: value)) }
        case Register.extendedByteOrder where size == 4:
            let order = UInt32(truncatingIfNeeded: value)
            if order == Self.littleEndian || order == Self.bigEndian {
                registers.withLock { $0.bigEndian = order == Self.bigEndian }
            }
        default:
            break
        }
    }

    /// The DISPI registers now (tests, inspection).
    public var dispi: BochsDispi { registers.withLock { $0.dispi } }

    /// The EDID block the guest reads.
    public var edid: [UInt8] { registers.withLock { $0.edid } }

    // MARK: DisplayDevice

    /// The mode the registers set, if the framebuffer holds it, and its pixels.
    public func currentMode() throws(DisplayError) -> DisplayMode {
        try registers.withLock { $0.dispi }.mode(framebufferSize: memorySize)
    }

    public func capturePicture() throws(DisplayError) -> Picture {
        let (dispi, bigEndian) = registers.withLock { ($0.dispi, $0.bigEndian) }
        return framebuffer.picture(try dispi.mode(framebufferSize: memorySize), bigEndian: bigEndian)
    }
}

import RegionEmulation

/// The VBE DISPI registers of QEMU's standard VGA ("bochs"), which the guest's bochs DRM driver
/// programs: eleven 16-bit registers, reached in BAR2 at 0x500 + 2 × index (QEMU's
/// docs/specs/standard-vga.rst; the kernel's mbochs sample).
///
/// Like the hardware: the ID register takes only the IDs a VBE DISPI implements, VIDEO_MEMORY_64K
/// cannot be written, and a mode the framebuffer cannot hold shows no picture.
public struct BochsDispi: Sendable, Equatable {
    public enum Index: Int, Sendable, CaseIterable {
        case id = 0, xResolution, yResolution, bitsPerPixel, enable, bank, virtualWidth, virtualHeight, xOffset, yOffset
        case videoMemory64K
    }

    /// The ID the sample and QEMU report: VBE_DISPI_ID5. A guest may write ID0 to ID5.
    public static let id5: UInt16 = 0xB0C5
    public static let validIDs: ClosedRange<UInt16> = 0xB0C0...0xB0C5
    /// ENABLE bits.
    public static let enabled: UInt16 = 0x01
    public static let linearFramebufferEnabled: UInt16 = 0x40

    public private(set) var registers: [UInt16]
    private let videoMemory64K: UInt16

    /// Power-on: every register 0 but the ID and the framebuffer size (in 64 KiB units).
    public init(framebufferSize: Int) {
        videoMemory64K = UInt16(clamping: framebufferSize / 65536)
        registers = Array(repeating: 0, count: Index.allCases.count)
        registers[Index.id.rawValue] = Self.id5
        registers[Index.videoMemory64K.rawValue] = videoMemory64K
    }

    /// The register at `index`; 0 past the last one.
    public func read(_ index: Int) -> UInt16 {
        registers.indices.contains(index) ? registers[index] : 0
    }

    /// Writes the register at `index`; what the hardware ignores is ignored.
    public mutating func write(_ index: Int, _ value: UInt16) {
        guard let register = Index(rawValue: index) else { return }
        switch register {
        case .id:
            if Self.validIDs.contains(value) { registers[index] = value }
        case .videoMemory64K:
            return
        default:
            registers[index] = value
        }
    }

    public subscript(_ index: Index) -> UInt16 { registers[index.rawValue] }

    /// Loads registers saved by `registers` (migration); false if they cannot be this device's.
    public mutating func restore(_ saved: [UInt16]) -> Bool {
        guard saved.count == registers.count, saved[Index.videoMemory64K.rawValue] == videoMemory64K,
              Self.validIDs.contains(saved[Index.id.rawValue]) else { return false }
        registers = saved
        return true
    }

    /// The picture the registers describe in a framebuffer of `framebufferSize` bytes, as the
    /// sample's `mbochs_check_framebuffer` finds it: enabled, 32 bits per pixel (XRGB8888), at
    /// least 64 × 64, a stride from the larger of the virtual and the visible width, and
    /// `offset + stride × height` inside the framebuffer. Otherwise the screen shows nothing, and
    /// the error says why.
    public func mode(framebufferSize: Int) throws(DisplayError) -> DisplayMode {
        guard self[.enable] & Self.enabled != 0 else { throw .noPicture("the display is disabled (DISPI ENABLE is 0)") }
        guard self[.bitsPerPixel] == 32 else { throw .noPicture("\(self[.bitsPerPixel]) bits per pixel; only 32 (XRGB8888) is shown") }
        let width = Int(self[.xResolution]), height = Int(self[.yResolution])
        guard width >= 64 && height >= 64 else { throw .noPicture("a mode of \(width)x\(height) is below 64x64") }
        let stride = max(Int(self[.virtualWidth]), width) * 4
        let mode = DisplayMode(width: width, height: height, stride: stride, offset: Int(self[.yOffset]) * stride + Int(self[.xOffset]) * 4)
        // Every register is 16 bits: none of these products can overflow.
        guard mode.offset + stride * height <= framebufferSize else {
            throw .noPicture("the mode (\(mode)) needs \(mode.offset + stride * height) bytes of a \(framebufferSize)-byte framebuffer")
        }
        return mode
    }
}

/// A visible picture in the framebuffer: XRGB8888 pixels, `stride` bytes from one row to the next.
public struct DisplayMode: Sendable, Equatable, CustomStringConvertible {
    public var width: Int
    public var height: Int
    public var stride: Int
    /// Where the first visible pixel is, in bytes from the framebuffer's start.
    public var offset: Int

    public init(width: Int, height: Int, stride: Int, offset: Int) {
        self.width = width
        self.height = height
        self.stride = stride
        self.offset = offset
    }

    public var description: String { "\(width)x\(height), stride \(stride), offset \(offset)" }
}

import MbochsDevice
import RegionEmulation

extension FuzzHarness {
    /// The mbochs display driven by a guest's register accesses: each 12 bytes of the input are one
    /// access (byte 0: bit 0 a read, bit 1 BAR2 (the registers) rather than BAR0 (the framebuffer),
    /// bits 2-3 the size, 1 to 8 bytes; bytes 1-2 the offset inside the BAR, little-endian; bytes 4-11
    /// the value). Then the screen is read as a screenshot would, the device state saved and loaded
    /// into a second device, and the device reset.
    ///
    /// What must hold: no crash and no read outside the framebuffer, whatever mode the registers
    /// describe; a picture only for a mode the framebuffer holds; the state a device loads is the
    /// state it was given.
    public final class Mbochs: @unchecked Sendable { // Used by one thread at a time, as libFuzzer does.
        static let memorySize = 1 << 20 // small: migration copies it twice per input
        let device = try! MbochsDevice(memorySize: Mbochs.memorySize, width: 800, height: 600, mappable: false)
        let twin = try! MbochsDevice(memorySize: Mbochs.memorySize, width: 800, height: 600, mappable: false)

        public init() {}

        /// The mode the registers set at the end (nil: no picture), and how many bytes it showed.
        public struct Outcome: Equatable, Sendable {
            public var mode: DisplayMode?
            public var pictureBytes = 0
            public init(mode: DisplayMode? = nil, pictureBytes: Int = 0) {
                self.mode = mode
                self.pictureBytes = pictureBytes
            }
        }

        @discardableResult
        public func run(_ data: UnsafeRawBufferPointer) -> Outcome {
            defer {
                device.reset(.deviceReset)
                twin.reset(.deviceReset)
            }
            var at = 0
            while at + 12 <= data.count {
                let op = data[at], size = 1 << Int((op >> 2) & 3)
                let bar = op & 2 != 0 ? MbochsDevice.registersBAR : MbochsDevice.framebufferBAR
                let barSize = bar == MbochsDevice.registersBAR ? Int(MbochsDevice.registersSize) : Self.memorySize
                // The region layer passes accesses inside the BAR only.
                let offset = UInt64((Int(data[at + 1]) | Int(data[at + 2]) << 8) % (barSize - size + 1))
                var value: UInt64 = 0
                for i in 0..<8 { value |= UInt64(data[at + 4 + i]) << (8 * UInt64(i)) }
                if op & 1 != 0 { _ = device.readBAR(bar, offset: offset, size: size) } else { device.writeBAR(bar, offset: offset, size: size, value: value) }
                at += 12
            }
            var outcome = Outcome()
            if let picture = try? device.capturePicture() {
                let mode = try! device.currentMode()
                precondition(mode.offset + mode.stride * mode.height <= Self.memorySize, "a picture from outside the framebuffer")
                precondition(picture.rgb.count == mode.width * mode.height * 3)
                outcome = Outcome(mode: mode, pictureBytes: picture.rgb.count)
            }
            let state = try! device.saveMigrationState()
            try! twin.loadMigrationState(state)
            precondition(twin.dispi.registers == device.dispi.registers, "the loaded registers differ from the saved ones")
            return outcome
        }
    }

    /// Seeds for the mbochs fuzzer: the mode set the guest's bochs driver makes (320x240 at 32 bits
    /// per pixel), one too large for the 1 MiB framebuffer, and stores into the framebuffer.
    public static var mbochsSeeds: [(name: String, bytes: [UInt8])] {
        // A 2-byte DISPI write: BAR2 (2) | size 2 (1 << 2), at 0x500 + 2 × index.
        func dispi(_ index: Int, _ value: UInt16) -> [UInt8] {
            let offset = 0x500 + 2 * index
            return [2 | 4, UInt8(offset & 0xFF), UInt8(offset >> 8), 0, UInt8(value & 0xFF), UInt8(value >> 8), 0, 0, 0, 0, 0, 0]
        }
        func mode(_ width: UInt16, _ height: UInt16) -> [UInt8] {
            dispi(4, 0) + dispi(1, width) + dispi(2, height) + dispi(3, 32) + dispi(6, width) + dispi(7, height)
                + dispi(8, 0) + dispi(9, 0) + dispi(4, 0x41)
        }
        // An 8-byte framebuffer store (size 8: 3 << 2) at 0x100.
        let store: [UInt8] = [3 << 2, 0x00, 0x01, 0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        return [
            ("mode-320x240", mode(320, 240)),
            ("mode-too-large", mode(1920, 1080)),
            ("mode-and-stores", mode(320, 240) + store + [store[0] | 1] + Array(store[1...])),
        ]
    }
}

/// PCI configuration space: 256 bytes (conventional) or 4096 (PCI Express), with per-byte masks
/// that say which bits a write may change and which are write-one-to-clear.
///
/// Everything the header and the capabilities need follows from the masks: read-only fields
/// (IDs, class, header type, capability headers) have a zero writable mask, and BAR sizing falls
/// out of a BAR's mask `~(size - 1)`: writing all-ones reads back the size mask with the type bits,
/// exactly what a driver's probe expects. An absent BAR or ROM BAR has mask 0 and reads 0.
public struct ConfigSpace: Sendable {
    /// Conventional PCI.
    public static let conventionalSize = 256
    /// PCI Express: room for extended capabilities from 0x100.
    public static let expressSize = 4096

    /// 256 or 4096.
    public let size: Int
    private(set) var bytes: [UInt8]
    private(set) var writable: [UInt8]
    private(set) var writeOneToClear: [UInt8]
    /// The power-on contents, restored by reset.
    private var powerOn: [UInt8] = []

    /// All zeros, nothing writable.
    public init(size: Int) {
        precondition(size == Self.conventionalSize || size == Self.expressSize, "config space is 256 or 4096 bytes")
        self.size = size
        bytes = Array(repeating: 0, count: size)
        writable = Array(repeating: 0, count: size)
        writeOneToClear = Array(repeating: 0, count: size)
    }

    // MARK: Guest (client) access

    /// Reads `buffer.count` bytes at `offset`; the caller has checked the range.
    public func read(offset: Int, into buffer: UnsafeMutableRawBufferPointer) {
        bytes.withUnsafeBytes { raw in
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[offset ..< offset + buffer.count]))
        }
    }

    /// Writes through the masks: writable bits take the new value, write-one-to-clear bits are
    /// cleared where a 1 is written, everything else keeps its value.
    public mutating func write(offset: Int, data: UnsafeRawBufferPointer) {
        for (i, value) in data.enumerated() {
            let at = offset + i
            let keep = bytes[at] & ~writable[at]
            var new = keep | (value & writable[at])
            new &= ~(value & writeOneToClear[at])
            bytes[at] = new
        }
    }

    // MARK: Building (device construction, not client input)

    /// The byte at `offset`.
    public func byte(_ offset: Int) -> UInt8 { bytes[offset] }

    /// The little-endian field of `T`'s size at `offset`.
    public func value<T: FixedWidthInteger>(at offset: Int, as: T.Type = T.self) -> T {
        var result: T = 0
        for i in 0..<MemoryLayout<T>.size { result |= T(bytes[offset + i]) << (8 * i) }
        return result
    }

    /// Sets bytes directly (power-on values and device-owned fields), bypassing the masks.
    public mutating func set<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        for i in 0..<MemoryLayout<T>.size { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }

    /// Sets a run of bytes directly, bypassing the masks.
    public mutating func set(bytes values: [UInt8], at offset: Int) {
        for (i, value) in values.enumerated() { bytes[offset + i] = value }
    }

    /// Which bits of the field at `offset` a client write may change.
    public mutating func setWritable<T: FixedWidthInteger>(_ mask: T, at offset: Int) {
        for i in 0..<MemoryLayout<T>.size { writable[offset + i] = UInt8(truncatingIfNeeded: mask >> (8 * i)) }
    }

    /// Which bits of the field at `offset` are cleared by writing 1 (status bits).
    public mutating func setWriteOneToClear<T: FixedWidthInteger>(_ mask: T, at offset: Int) {
        for i in 0..<MemoryLayout<T>.size { writeOneToClear[offset + i] = UInt8(truncatingIfNeeded: mask >> (8 * i)) }
    }

    /// The writable bits of the field at `offset`.
    public func writableMask<T: FixedWidthInteger>(at offset: Int, as: T.Type = T.self) -> T {
        var result: T = 0
        for i in 0..<MemoryLayout<T>.size { result |= T(writable[offset + i]) << (8 * i) }
        return result
    }

    /// Records the current contents as the power-on state.
    public mutating func sealPowerOnState() { powerOn = bytes }

    /// Back to power-on contents (device reset, FLR, lost connection).
    public mutating func reset() {
        if !powerOn.isEmpty { bytes = powerOn }
    }
}

/// Offsets and bits of the type-0 header (PCI Local Bus spec, `<linux/pci_regs.h>` names).
public enum PCIConfig {
    public static let vendorID = 0x00
    public static let deviceID = 0x02
    public static let command = 0x04
    public static let status = 0x06
    public static let revisionID = 0x08
    public static let classProgIF = 0x09
    public static let classSubclass = 0x0A
    public static let classBase = 0x0B
    public static let cacheLineSize = 0x0C
    public static let latencyTimer = 0x0D
    public static let headerType = 0x0E
    public static let bist = 0x0F
    public static let bar0 = 0x10
    public static let cardbusCIS = 0x28
    public static let subsystemVendorID = 0x2C
    public static let subsystemID = 0x2E
    public static let romAddress = 0x30
    public static let capabilityPointer = 0x34
    public static let interruptLine = 0x3C
    public static let interruptPin = 0x3D
    public static let headerSize = 0x40
    public static let extendedStart = 0x100

    /// The offset of BAR `bar` (0 to 5).
    public static func barOffset(_ bar: Int) -> Int { bar0 + 4 * bar }

    // Command register bits.
    public static let commandIO: UInt16 = 1 << 0
    public static let commandMemory: UInt16 = 1 << 1
    public static let commandBusMaster: UInt16 = 1 << 2
    public static let commandParity: UInt16 = 1 << 6
    public static let commandSERR: UInt16 = 1 << 8
    public static let commandINTxDisable: UInt16 = 1 << 10
    public static let commandWritable: UInt16 = commandIO | commandMemory | commandBusMaster | commandParity | commandSERR | commandINTxDisable

    // Status register bits.
    public static let statusInterrupt: UInt16 = 1 << 3
    public static let statusCapabilityList: UInt16 = 1 << 4
    /// Master data parity error, signalled/received target/master abort, SERR, parity error: RW1C.
    public static let statusWriteOneToClear: UInt16 = 0xF900
    /// DEVSEL timing "medium", as the kernel's mtty reports.
    public static let statusDevselMedium: UInt16 = 0x0200
}

/// What a PCI function says it is: the read-only identity fields of the type-0 header.
public struct PCIIdentity: Sendable, Equatable {
    /// The PCI-SIG vendor ID (0x1B36 is Red Hat's, which QEMU's own devices use).
    public var vendorID: UInt16
    /// The device ID, the vendor's to assign; guest drivers bind by vendor and device ID.
    public var deviceID: UInt16
    /// The subsystem (board) vendor ID.
    public var subsystemVendorID: UInt16
    /// The subsystem ID.
    public var subsystemID: UInt16
    /// The revision ID.
    public var revision: UInt8
    /// Base class, subclass, programming interface (e.g. 0x07_00_02: serial controller, 16550).
    public var classCode: UInt32

    /// The identity fields, as they appear in config space.
    public init(vendorID: UInt16, deviceID: UInt16, subsystemVendorID: UInt16, subsystemID: UInt16,
                revision: UInt8, classCode: UInt32) {
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.subsystemVendorID = subsystemVendorID
        self.subsystemID = subsystemID
        self.revision = revision
        self.classCode = classCode
    }
}

/// One base address register: what kind of space it decodes and how much.
public struct BARDefinition: Sendable, Equatable {
    /// The address space a BAR decodes.
    public enum Kind: Sendable, Equatable {
        /// I/O ports (x86 `in`/`out`).
        case io
        /// Memory below 4 GiB.
        case memory32
        /// Occupies this BAR slot and the next one.
        case memory64
    }

    /// I/O, 32-bit or 64-bit memory.
    public var kind: Kind
    /// Bytes decoded: a power of two, at least 4 for I/O and 16 for memory (QEMU asserts powers of two).
    public var size: UInt64
    /// Memory without read side effects, which the host may prefetch and merge (a framebuffer, not registers).
    public var prefetchable: Bool
    /// Largest single register access the device model handles; larger client accesses are split
    /// into naturally aligned pieces no bigger than this (the kernel's mtty splits to 4/2/1).
    public var maxAccessSize: Int

    /// A BAR of `size` bytes; traps on sizes the PCI spec does not allow.
    public init(kind: Kind, size: UInt64, prefetchable: Bool = false, maxAccessSize: Int = 8) {
        precondition(size.nonzeroBitCount == 1, "a BAR's size must be a power of two")
        precondition(size >= (kind == .io ? 4 : 16), "BAR too small")
        precondition(kind != .io || !prefetchable, "I/O BARs cannot be prefetchable")
        precondition([1, 2, 4, 8].contains(maxAccessSize))
        self.kind = kind
        self.size = size
        self.prefetchable = prefetchable
        self.maxAccessSize = maxAccessSize
    }

    /// An I/O BAR (accesses of at most 4 bytes, as x86 port I/O).
    public static func io(size: UInt64, maxAccessSize: Int = 4) -> BARDefinition {
        BARDefinition(kind: .io, size: size, maxAccessSize: maxAccessSize)
    }

    /// A memory BAR, 32- or 64-bit.
    public static func memory(size: UInt64, is64Bit: Bool = false, prefetchable: Bool = false,
                              maxAccessSize: Int = 8) -> BARDefinition {
        BARDefinition(kind: is64Bit ? .memory64 : .memory32, size: size, prefetchable: prefetchable,
                      maxAccessSize: maxAccessSize)
    }

    /// The low bits of the BAR register: I/O space bit, memory type, prefetchable.
    var typeBits: UInt32 {
        switch kind {
        case .io: 0x1
        case .memory32: prefetchable ? 0x8 : 0x0
        case .memory64: 0x4 | (prefetchable ? 0x8 : 0x0)
        }
    }
}

extension ConfigSpace {
    /// Lays out a type-0 header: identity, BARs with their sizing masks, no ROM, the interrupt pin,
    /// and the writable command/status/line fields.
    mutating func buildHeader(identity: PCIIdentity, bars: [BARDefinition?], interruptPin: UInt8) {
        set(identity.vendorID, at: PCIConfig.vendorID)
        set(identity.deviceID, at: PCIConfig.deviceID)
        set(identity.revision, at: PCIConfig.revisionID)
        set(UInt8(identity.classCode & 0xFF), at: PCIConfig.classProgIF)
        set(UInt8((identity.classCode >> 8) & 0xFF), at: PCIConfig.classSubclass)
        set(UInt8((identity.classCode >> 16) & 0xFF), at: PCIConfig.classBase)
        set(identity.subsystemVendorID, at: PCIConfig.subsystemVendorID)
        set(identity.subsystemID, at: PCIConfig.subsystemID)
        set(PCIConfig.statusDevselMedium, at: PCIConfig.status)
        setWritable(PCIConfig.commandWritable, at: PCIConfig.command)
        setWriteOneToClear(PCIConfig.statusWriteOneToClear, at: PCIConfig.status)
        setWritable(UInt8(0xFF), at: PCIConfig.cacheLineSize)
        setWritable(UInt8(0xFF), at: PCIConfig.latencyTimer)
        setWritable(UInt8(0xFF), at: PCIConfig.interruptLine)
        set(interruptPin, at: PCIConfig.interruptPin)

        var slot = 0
        while slot < 6 {
            defer { slot += 1 }
            guard slot < bars.count, let bar = bars[slot] else { continue }
            let offset = PCIConfig.barOffset(slot)
            set(bar.typeBits, at: offset)
            let low = UInt32(truncatingIfNeeded: ~(bar.size - 1))
            setWritable(low & (bar.kind == .io ? 0xFFFF_FFFC : 0xFFFF_FFF0), at: offset)
            if bar.kind == .memory64 {
                precondition(slot < 5, "a 64-bit BAR needs the next slot")
                setWritable(UInt32(truncatingIfNeeded: ~(bar.size - 1) >> 32), at: offset + 4)
                slot += 1
            }
        }
    }
}

/// A capability in the standard list (PCI Local Bus 3.0 §6.7, capability IDs from `<linux/pci_regs.h>`).
///
/// A device declares the capabilities it has; `CapabilityBuilder` places them, links the list and
/// sets each structure's read-only and writable bits. Headers (ID and next pointer) are never writable.
public enum PCICapability: Sendable, Equatable {
    /// ID 0x01, PCI Power Management 1.2: D0 and D3hot, No_Soft_Reset set.
    case powerManagement
    /// ID 0x05: `vectors` is 1, 2, 4, 8, 16 or 32.
    case msi(vectors: Int, is64Bit: Bool, perVectorMasking: Bool)
    /// ID 0x11: the table and PBA live in BARs of the function.
    case msix(MSIXLayout)
    /// ID 0x10, version 2, 60 bytes.
    case pciExpress(PCIExpressDeviceType, functionLevelReset: Bool)
    /// ID 0x09: the bytes after the length byte; the length byte is computed. `writableMask`, if given,
    /// covers the same bytes (virtio's PCI_CFG window is writable, its other caps are not).
    case vendorSpecific(payload: [UInt8], writableMask: [UInt8]? = nil)

    /// The capability ID.
    public var id: UInt8 {
        switch self {
        case .powerManagement: 0x01
        case .msi: 0x05
        case .msix: 0x11
        case .pciExpress: 0x10
        case .vendorSpecific: 0x09
        }
    }

    /// Bytes the structure occupies.
    public var length: Int {
        switch self {
        case .powerManagement: 8
        case let .msi(_, is64Bit, perVectorMasking): (is64Bit ? 14 : 10) + (perVectorMasking ? 10 : 0)
        case .msix: 12
        case .pciExpress: 60
        case let .vendorSpecific(payload, _): 3 + payload.count
        }
    }
}

/// Device/port type of a PCI Express capability (the ones QEMU accepts for an assigned device).
public enum PCIExpressDeviceType: UInt16, Sendable {
    /// A PCI Express endpoint.
    case endpoint = 0
    /// A legacy endpoint (may use I/O space).
    case legacyEndpoint = 1
    /// An endpoint integrated in the root complex (no link registers).
    case rootComplexIntegratedEndpoint = 9
}

/// Where an MSI-X table and its Pending Bit Array live.
public struct MSIXLayout: Sendable, Equatable {
    /// Table entries: 1 to 2048.
    public var vectors: Int
    /// The BAR holding the table.
    public var tableBAR: Int
    /// The table's offset in that BAR, 8-byte aligned.
    public var tableOffset: UInt32
    /// The BAR holding the Pending Bit Array.
    public var pbaBAR: Int
    /// The PBA's offset in that BAR, 8-byte aligned.
    public var pbaOffset: UInt32

    /// A layout; traps on a vector count or alignment MSI-X does not allow.
    public init(vectors: Int, tableBAR: Int, tableOffset: UInt32, pbaBAR: Int, pbaOffset: UInt32) {
        precondition((1...2048).contains(vectors), "MSI-X has 1 to 2048 vectors")
        precondition(tableOffset % 8 == 0 && pbaOffset % 8 == 0, "MSI-X table and PBA offsets are QWORD aligned")
        self.vectors = vectors
        self.tableBAR = tableBAR
        self.tableOffset = tableOffset
        self.pbaBAR = pbaBAR
        self.pbaOffset = pbaOffset
    }

    /// Bytes per table entry: address, data, vector control.
    public static let entrySize = 16
    /// Bytes the table takes.
    public var tableSize: Int { vectors * Self.entrySize }
    /// One bit per vector, in whole QWORDs.
    public var pbaSize: Int { (vectors + 63) / 64 * 8 }
}

/// An extended capability (PCI Express Base spec §7.6), in the space from 0x100.
public enum PCIExtendedCapability: Sendable, Equatable {
    /// ID 0x0003: a read-only 64-bit serial number.
    case deviceSerialNumber(UInt64)
    /// ID 0x000B: vendor-specific extended capability with its VSEC id and revision.
    case vendorSpecific(vsecID: UInt16, revision: UInt8, body: [UInt8])

    /// The extended capability ID.
    public var id: UInt16 {
        switch self {
        case .deviceSerialNumber: 0x0003
        case .vendorSpecific: 0x000B
        }
    }

    /// Bytes the structure occupies.
    public var length: Int {
        switch self {
        case .deviceSerialNumber: 12
        case let .vendorSpecific(_, _, body): 8 + body.count
        }
    }
}

/// Where the builder put each capability.
public struct CapabilityLayout: Sendable, Equatable {
    /// A standard capability and its offset.
    public struct Entry: Sendable, Equatable {
        /// The capability as declared.
        public var capability: PCICapability
        /// Its first byte in config space.
        public var offset: Int
    }

    /// An extended capability and its offset.
    public struct ExtendedEntry: Sendable, Equatable {
        /// The capability as declared.
        public var capability: PCIExtendedCapability
        /// Its first byte in config space (0x100 or above).
        public var offset: Int
    }

    /// Standard capabilities in list order.
    public var standard: [Entry] = []
    /// Extended capabilities in list order.
    public var extended: [ExtendedEntry] = []

    /// The offset of the first capability with `id`.
    public func offset(of id: UInt8) -> Int? { standard.first { $0.capability.id == id }?.offset }
    /// The offset of the first extended capability with `id`.
    public func extendedOffset(of id: UInt16) -> Int? { extended.first { $0.capability.id == id }?.offset }

    /// Where the MSI capability is.
    public var msiOffset: Int? { offset(of: 0x05) }
    /// Where the MSI-X capability is.
    public var msixOffset: Int? { offset(of: 0x11) }
    /// Where the power management capability is.
    public var powerManagementOffset: Int? { offset(of: 0x01) }
    /// Where the PCI Express capability is.
    public var expressOffset: Int? { offset(of: 0x10) }

    /// The MSI-X table and PBA placement, when the function has MSI-X.
    public var msix: MSIXLayout? {
        for entry in standard { if case let .msix(layout) = entry.capability { return layout } }
        return nil
    }

    /// The MSI capability's offset and shape, when the function has MSI.
    public var msi: (offset: Int, vectors: Int, is64Bit: Bool, perVectorMasking: Bool)? {
        for entry in standard {
            if case let .msi(vectors, is64Bit, masking) = entry.capability { return (entry.offset, vectors, is64Bit, masking) }
        }
        return nil
    }
}

/// Places capabilities in config space and writes their structures and masks.
public enum CapabilityBuilder {
    /// Standard capabilities start after the 64-byte header, DWORD aligned.
    public static let firstOffset = 0x40

    /// Why the capabilities do not fit the function.
    public enum Failure: Error, Equatable, CustomStringConvertible {
        case doesNotFit(String)
        case needsExpressConfigSpace

        public var description: String {
            switch self {
            case let .doesNotFit(what): "capabilities do not fit: \(what)"
            case .needsExpressConfigSpace: "extended capabilities need a 4096-byte config space"
            }
        }
    }

    /// Places the capabilities, links both lists and writes each structure with its masks.
    public static func build(_ capabilities: [PCICapability], extended: [PCIExtendedCapability],
                             into config: inout ConfigSpace) throws(Failure) -> CapabilityLayout {
        var layout = CapabilityLayout()
        var offset = firstOffset
        for capability in capabilities {
            guard offset + capability.length <= ConfigSpace.conventionalSize else {
                throw .doesNotFit("capability 0x\(String(capability.id, radix: 16)) at 0x\(String(offset, radix: 16))")
            }
            layout.standard.append(.init(capability: capability, offset: offset))
            offset += (capability.length + 3) & ~3
        }
        for (i, entry) in layout.standard.enumerated() {
            let next = i + 1 < layout.standard.count ? layout.standard[i + 1].offset : 0
            write(entry.capability, at: entry.offset, next: next, into: &config)
        }
        if let first = layout.standard.first {
            config.set(UInt8(first.offset), at: PCIConfig.capabilityPointer)
            let status: UInt16 = config.value(at: PCIConfig.status)
            config.set(status | PCIConfig.statusCapabilityList, at: PCIConfig.status)
        }

        guard !extended.isEmpty else { return layout }
        guard config.size == ConfigSpace.expressSize else { throw .needsExpressConfigSpace }
        offset = PCIConfig.extendedStart
        for capability in extended {
            guard offset + capability.length <= ConfigSpace.expressSize else {
                throw .doesNotFit("extended capability 0x\(String(capability.id, radix: 16))")
            }
            layout.extended.append(.init(capability: capability, offset: offset))
            offset += (capability.length + 3) & ~3
        }
        for (i, entry) in layout.extended.enumerated() {
            let next = i + 1 < layout.extended.count ? layout.extended[i + 1].offset : 0
            writeExtended(entry.capability, at: entry.offset, next: next, into: &config)
        }
        return layout
    }

    private static func write(_ capability: PCICapability, at base: Int, next: Int, into config: inout ConfigSpace) {
        config.set(capability.id, at: base)
        config.set(UInt8(next), at: base + 1)
        switch capability {
        case .powerManagement:
            config.set(UInt16(0x0003), at: base + 2) // PMC: version 3 (PM 1.2), no D1/D2, no PME
            config.set(UInt16(0x0008), at: base + 4) // PMCSR: D0, No_Soft_Reset
            config.setWritable(UInt16(0x0003), at: base + 4)
        case let .msi(vectors, is64Bit, perVectorMasking):
            precondition([1, 2, 4, 8, 16, 32].contains(vectors), "MSI has 1 to 32 vectors, a power of two")
            let capable = UInt16(vectors.trailingZeroBitCount) << 1
            let control = capable | (is64Bit ? 0x80 : 0) | (perVectorMasking ? 0x100 : 0)
            config.set(control, at: base + 2)
            config.setWritable(UInt16(0x0071), at: base + 2) // enable, multiple message enable
            config.setWritable(UInt32(0xFFFF_FFFC), at: base + 4)
            var next = base + 8
            if is64Bit {
                config.setWritable(UInt32(0xFFFF_FFFF), at: next)
                next += 4
            }
            config.setWritable(UInt16(0xFFFF), at: next)
            if perVectorMasking {
                let mask = vectors == 32 ? UInt32.max : (UInt32(1) << vectors) - 1
                config.setWritable(mask, at: next + 4) // mask bits; pending bits at +8 stay read-only
            }
        case let .msix(layout):
            config.set(UInt16(layout.vectors - 1), at: base + 2)
            config.setWritable(UInt16(0xC000), at: base + 2) // enable, function mask
            config.set(layout.tableOffset | UInt32(layout.tableBAR), at: base + 4)
            config.set(layout.pbaOffset | UInt32(layout.pbaBAR), at: base + 8)
        case let .pciExpress(type, flr):
            config.set(UInt16(0x0002) | (type.rawValue << 4), at: base + 2)     // version 2, device type
            config.set(UInt32(0x0000_8000) | (flr ? 1 << 28 : 0), at: base + 4) // role-based errors, FLR
            config.set(UInt16(0x2810), at: base + 8)                             // max read 512, relaxed ordering, no snoop
            config.setWritable(UInt16(0xFFFF), at: base + 8)                     // bit 15 starts FLR, reads back 0
            config.setWriteOneToClear(UInt16(0x000F), at: base + 10)             // error detected bits
            config.set(UInt32(0x0000_0011), at: base + 12)                       // x1, 2.5 GT/s
            config.setWritable(UInt16(0x00C3), at: base + 16)                    // ASPM, common clock, extended synch
            config.set(UInt16(0x0011), at: base + 18)                            // link up at x1, 2.5 GT/s
            config.setWritable(UInt16(0x001F), at: base + 0x28)                  // device control 2
            config.set(UInt32(0x0000_0002), at: base + 0x2C)                     // supported speeds: 2.5 GT/s
            config.set(UInt16(0x0001), at: base + 0x30)                          // target link speed
        case let .vendorSpecific(payload, writableMask):
            config.set(UInt8(3 + payload.count), at: base + 2)
            config.set(bytes: payload, at: base + 3)
            if let writableMask {
                for (i, mask) in writableMask.enumerated() { config.setWritable(mask, at: base + 3 + i) }
            }
        }
    }

    private static func writeExtended(_ capability: PCIExtendedCapability, at base: Int, next: Int,
                                      into config: inout ConfigSpace) {
        let version: UInt32 = 1
        config.set(UInt32(capability.id) | version << 16 | UInt32(next) << 20, at: base)
        switch capability {
        case let .deviceSerialNumber(serial):
            config.set(serial, at: base + 4)
        case let .vendorSpecific(vsecID, revision, body):
            config.set(UInt32(vsecID) | UInt32(revision & 0xF) << 16 | UInt32(8 + body.count) << 20, at: base + 4)
            config.set(bytes: body, at: base + 8)
        }
    }
}

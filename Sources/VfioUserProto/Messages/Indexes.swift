/// A region index (`VFIO_PCI_*_REGION_INDEX` in <linux/vfio.h>): 0-5 the BARs, 6 the expansion ROM,
/// 7 config space, 8 VGA, 9 and up device-specific regions.
public struct RegionIndex: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// BAR 0 (the BARs are regions 0 to 5).
    @inlinable public static var bar0: RegionIndex { RegionIndex(rawValue: 0) }
    @inlinable public static var bar1: RegionIndex { RegionIndex(rawValue: 1) }
    @inlinable public static var bar2: RegionIndex { RegionIndex(rawValue: 2) }
    @inlinable public static var bar3: RegionIndex { RegionIndex(rawValue: 3) }
    @inlinable public static var bar4: RegionIndex { RegionIndex(rawValue: 4) }
    @inlinable public static var bar5: RegionIndex { RegionIndex(rawValue: 5) }
    /// The expansion ROM.
    @inlinable public static var rom: RegionIndex { RegionIndex(rawValue: 6) }
    /// Config space.
    @inlinable public static var config: RegionIndex { RegionIndex(rawValue: 7) }
    /// Legacy VGA ranges.
    @inlinable public static var vga: RegionIndex { RegionIndex(rawValue: 8) }
    /// `VFIO_PCI_NUM_REGIONS`: the standard PCI regions every device reports.
    public static let pciRegionCount: UInt32 = 9

    /// The region of BAR `n`.
    public static func bar(_ n: Int) -> RegionIndex { RegionIndex(rawValue: UInt32(n)) }

    /// The BAR number, when this index is a BAR.
    public var barNumber: Int? { rawValue < 6 ? Int(rawValue) : nil }

    public static func < (a: RegionIndex, b: RegionIndex) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch rawValue {
        case 0...5: "bar\(rawValue)"
        case 6: "rom"
        case 7: "config"
        case 8: "vga"
        default: "region\(rawValue)"
        }
    }

    public init?(name: String) {
        for i in UInt32(0)..<9 where RegionIndex(rawValue: i).description == name {
            self.init(rawValue: i)
            return
        }
        guard name.hasPrefix("region"), let n = UInt32(name.dropFirst(6)) else { return nil }
        self.init(rawValue: n)
    }
}

/// An interrupt index (`VFIO_PCI_*_IRQ_INDEX`).
public struct IRQIndex: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// INTx (INTA#): one level-triggered vector.
    @inlinable public static var intx: IRQIndex { IRQIndex(rawValue: 0) }
    /// MSI: up to 32 vectors.
    @inlinable public static var msi: IRQIndex { IRQIndex(rawValue: 1) }
    /// MSI-X: up to 2048 vectors, each with its own mask.
    @inlinable public static var msix: IRQIndex { IRQIndex(rawValue: 2) }
    /// AER error notification: QEMU stops the VM when it fires.
    @inlinable public static var err: IRQIndex { IRQIndex(rawValue: 3) }
    /// Device release request: the server asks the client to let go of the device.
    @inlinable public static var req: IRQIndex { IRQIndex(rawValue: 4) }
    /// `VFIO_PCI_NUM_IRQS`.
    public static let count: UInt32 = 5
    /// The five indexes in order.
    public static let all: [IRQIndex] = [.intx, .msi, .msix, .err, .req]

    public var description: String {
        switch rawValue {
        case 0: "intx"
        case 1: "msi"
        case 2: "msix"
        case 3: "err"
        case 4: "req"
        default: "irq\(rawValue)"
        }
    }

    public init?(name: String) {
        guard let hit = IRQIndex.all.first(where: { $0.description == name }) else { return nil }
        self = hit
    }
}

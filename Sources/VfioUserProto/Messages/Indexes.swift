/// A region index (`VFIO_PCI_*_REGION_INDEX` in <linux/vfio.h>): 0-5 the BARs, 6 the expansion ROM,
/// 7 config space, 8 VGA, 9 and up device-specific regions.
public struct RegionIndex: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let bar0 = RegionIndex(rawValue: 0)
    public static let bar1 = RegionIndex(rawValue: 1)
    public static let bar2 = RegionIndex(rawValue: 2)
    public static let bar3 = RegionIndex(rawValue: 3)
    public static let bar4 = RegionIndex(rawValue: 4)
    public static let bar5 = RegionIndex(rawValue: 5)
    public static let rom = RegionIndex(rawValue: 6)
    public static let config = RegionIndex(rawValue: 7)
    public static let vga = RegionIndex(rawValue: 8)
    /// `VFIO_PCI_NUM_REGIONS`: the standard PCI regions every device reports.
    public static let pciRegionCount: UInt32 = 9

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
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let intx = IRQIndex(rawValue: 0)
    public static let msi = IRQIndex(rawValue: 1)
    public static let msix = IRQIndex(rawValue: 2)
    /// AER error notification: QEMU stops the VM when it fires.
    public static let err = IRQIndex(rawValue: 3)
    /// Device release request: the server asks the client to let go of the device.
    public static let req = IRQIndex(rawValue: 4)
    /// `VFIO_PCI_NUM_IRQS`.
    public static let count: UInt32 = 5
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

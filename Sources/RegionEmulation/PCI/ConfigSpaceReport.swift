import Support
import VfioUserProto

/// Reads a config space as `lspci -vvv` would describe it: identity, command and status, BARs,
/// the interrupt pin, and the capability lists walked from their pointers. Used on bytes read from
/// a device over the socket, so nothing in them is trusted: walks are bounded and every field is
/// bounds-checked.
public struct ConfigSpaceReport: Sendable {
    public struct Capability: Sendable, Equatable {
        public var offset: Int
        public var id: UInt16
        public var extended: Bool
        public var name: String
        /// Decoded fields, one line each.
        public var details: [String]
    }

    public let bytes: [UInt8]
    public private(set) var capabilities: [Capability] = []
    /// Problems met on the walk (a loop, a pointer out of range).
    public private(set) var problems: [String] = []

    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
        walk()
    }

    // MARK: Fields

    func u8(_ offset: Int) -> UInt8 { offset < bytes.count ? bytes[offset] : 0 }
    func u16(_ offset: Int) -> UInt16 { UInt16(u8(offset)) | UInt16(u8(offset + 1)) << 8 }
    func u32(_ offset: Int) -> UInt32 { UInt32(u16(offset)) | UInt32(u16(offset + 2)) << 16 }

    public var vendorID: UInt16 { u16(PCIConfig.vendorID) }
    public var deviceID: UInt16 { u16(PCIConfig.deviceID) }
    public var command: UInt16 { u16(PCIConfig.command) }
    public var status: UInt16 { u16(PCIConfig.status) }
    public var revision: UInt8 { u8(PCIConfig.revisionID) }
    public var classCode: UInt32 { u32(PCIConfig.revisionID) >> 8 }
    public var headerType: UInt8 { u8(PCIConfig.headerType) }
    public var subsystemVendorID: UInt16 { u16(PCIConfig.subsystemVendorID) }
    public var subsystemID: UInt16 { u16(PCIConfig.subsystemID) }
    public var interruptPin: UInt8 { u8(PCIConfig.interruptPin) }
    public var interruptLine: UInt8 { u8(PCIConfig.interruptLine) }

    /// PCI class names of the base classes (PCI Code and ID Assignment spec).
    static let classNames: [UInt8: String] = [
        0x00: "Unclassified device", 0x01: "Mass storage controller", 0x02: "Network controller", 0x03: "Display controller",
        0x04: "Multimedia controller", 0x05: "Memory controller", 0x06: "Bridge", 0x07: "Communication controller",
        0x08: "Generic system peripheral", 0x09: "Input device controller", 0x0C: "Serial bus controller", 0xFF: "Unassigned class",
    ]

    /// The sub-classes this project's devices use, named as lspci names them.
    static let subclassNames: [UInt16: String] = [0x0700: "Serial controller", 0x0200: "Ethernet controller", 0x0780: "Communication controller"]

    public var className: String {
        let base = UInt8(classCode >> 16), sub = UInt16(classCode >> 8)
        return Self.subclassNames[sub] ?? Self.classNames[base] ?? "Class \(hexText(base, digits: 2))"
    }

    // MARK: The capability walk

    private mutating func walk() {
        if status & PCIConfig.statusCapabilityList != 0 {
            follow("capability", from: Int(u8(PCIConfig.capabilityPointer) & 0xFC),
                   within: PCIConfig.headerSize ..< min(bytes.count, ConfigSpace.conventionalSize), entrySize: 2, digits: 2,
                   outside: "the capability area") { report, offset in
                let id = report.u8(offset)
                report.capabilities.append(report.standard(id: id, at: offset))
                return Int(report.u8(offset + 1) & 0xFC)
            }
        }
        guard bytes.count > PCIConfig.extendedStart, u32(PCIConfig.extendedStart) != 0, u32(PCIConfig.extendedStart) != 0xFFFF_FFFF else { return }
        follow("extended capability", from: PCIConfig.extendedStart, within: PCIConfig.extendedStart ..< bytes.count,
               entrySize: 4, digits: 3, outside: "config space") { report, offset in
            let header = report.u32(offset)
            report.capabilities.append(report.extended(id: UInt16(header & 0xFFFF), version: UInt8((header >> 16) & 0xF), at: offset))
            return Int(header >> 20) & 0xFFC
        }
    }

    /// Follows one capability list from `start` until a next pointer of 0. An entry must lie in
    /// `area` (its `entrySize` bytes included) and not come round again; either fault ends the walk
    /// with a problem. `visit` records the entry and returns the next offset.
    private mutating func follow(_ list: String, from start: Int, within area: Range<Int>, entrySize: Int, digits: Int,
                                 outside areaName: String, _ visit: (inout ConfigSpaceReport, Int) -> Int) {
        var offset = start
        var seen = Set<Int>()
        while offset != 0 {
            guard offset >= area.lowerBound, offset + entrySize <= area.upperBound else {
                problems.append("\(list) pointer \(hexText(offset, digits: digits)) is outside \(areaName)")
                return
            }
            guard seen.insert(offset).inserted else {
                problems.append("the \(list) list loops at \(hexText(offset, digits: digits))")
                return
            }
            offset = visit(&self, offset)
        }
    }

    private func standard(id: UInt8, at offset: Int) -> Capability {
        var capability = Capability(offset: offset, id: UInt16(id), extended: false, name: "ID \(hexText(id, digits: 2))", details: [])
        switch id {
        case 0x01:
            let pmc = u16(offset + 2), control = u16(offset + 4)
            capability.name = "Power Management version \(pmc & 7)"
            capability.details = ["Status: D\(control & 3) NoSoftRst\(flag(control & 0x8 != 0)) PME-Enable\(flag(control & 0x100 != 0))"]
        case 0x05:
            let control = u16(offset + 2)
            let is64 = control & 0x80 != 0, maskable = control & 0x100 != 0
            capability.name = "MSI: Enable\(flag(control & 1 != 0)) Count=\(1 << ((control >> 4) & 7))/\(1 << ((control >> 1) & 7)) Maskable\(flag(maskable)) 64bit\(flag(is64))"
            let address = is64 ? UInt64(u32(offset + 4)) | UInt64(u32(offset + 8)) << 32 : UInt64(u32(offset + 4))
            capability.details = ["Address: \(hexText(address, digits: 16))  Data: \(hexText(u16(offset + (is64 ? 12 : 8)), digits: 4))"]
            if maskable {
                let masks = offset + (is64 ? 16 : 12)
                capability.details.append("Masking: \(hexText(u32(masks), digits: 8))  Pending: \(hexText(u32(masks + 4), digits: 8))")
            }
        case 0x09:
            capability.name = "Vendor Specific Information: Len=\(hexText(u8(offset + 2), digits: 2))"
        case 0x10:
            let flags = u16(offset + 2)
            let types: [UInt16: String] = [0: "Endpoint", 1: "Legacy Endpoint", 9: "Root Complex Integrated Endpoint"]
            capability.name = "Express (v\(flags & 0xF)) \(types[(flags >> 4) & 0xF] ?? "type \((flags >> 4) & 0xF)")"
            let capabilities = u32(offset + 4), control = u16(offset + 8)
            capability.details = [
                "DevCap: MaxPayload \(128 << (capabilities & 7)) bytes FLReset\(flag(capabilities & (1 << 28) != 0))",
                "DevCtl: MaxPayload \(128 << ((control >> 5) & 7)) bytes MaxReadReq \(128 << ((control >> 12) & 7)) bytes",
            ]
        case 0x11:
            let control = u16(offset + 2), table = u32(offset + 4), pba = u32(offset + 8)
            capability.name = "MSI-X: Enable\(flag(control & 0x8000 != 0)) Count=\((control & 0x7FF) + 1) Masked\(flag(control & 0x4000 != 0))"
            capability.details = ["Vector table: BAR=\(table & 7) offset=\(hexText(table & ~7, digits: 8))", "PBA: BAR=\(pba & 7) offset=\(hexText(pba & ~7, digits: 8))"]
        default:
            break
        }
        return capability
    }

    private func extended(id: UInt16, version: UInt8, at offset: Int) -> Capability {
        var capability = Capability(offset: offset, id: id, extended: true, name: "Extended ID \(hexText(id, digits: 4)) v\(version)", details: [])
        switch id {
        case 0x0003:
            let serial = UInt64(u32(offset + 4)) | UInt64(u32(offset + 8)) << 32
            let octets = (0..<8).reversed().map { hexText(UInt8(truncatingIfNeeded: serial >> (8 * UInt64($0))), digits: 2, prefix: false) }
            capability.name = "Device Serial Number \(octets.joined(separator: "-"))"
        case 0x000B:
            let header = u32(offset + 4)
            capability.name = "Vendor Specific Information: ID=\(hexText(header & 0xFFFF, digits: 4)) Rev=\((header >> 16) & 0xF) Len=\(hexText(header >> 20, digits: 3))"
        default:
            break
        }
        return capability
    }

    // MARK: Text

    /// `lspci -vvv`-style lines. `barSizes` (from GET_REGION_INFO) gives each BAR's size.
    public func lines(barSizes: [Int: UInt64] = [:]) -> [String] {
        var lines = ["\(className) [\(hexText(classCode >> 8, digits: 4, prefix: false))]: Device \(hexText(vendorID, digits: 4, prefix: false)):\(hexText(deviceID, digits: 4, prefix: false))"
                     + " (rev \(hexText(revision, digits: 2, prefix: false)))" + (classCode & 0xFF != 0 ? " (prog-if \(hexText(classCode & 0xFF, digits: 2, prefix: false)))" : "")]
        lines.append("\tSubsystem: Device \(hexText(subsystemVendorID, digits: 4, prefix: false)):\(hexText(subsystemID, digits: 4, prefix: false))")
        let c = command
        lines.append("\tControl: I/O\(flag(c & 1 != 0)) Mem\(flag(c & 2 != 0)) BusMaster\(flag(c & 4 != 0)) ParErr\(flag(c & 0x40 != 0))"
                     + " SERR\(flag(c & 0x100 != 0)) DisINTx\(flag(c & 0x400 != 0))")
        let s = status
        lines.append("\tStatus: Cap\(flag(s & 0x10 != 0)) INTx\(flag(s & 0x8 != 0)) DEVSEL=\(["fast", "medium", "slow", "?"][Int((s >> 9) & 3)])")
        if interruptPin != 0 {
            lines.append("\tInterrupt: pin \(Character(UnicodeScalar(UInt8(64) + min(interruptPin, 4)))) routed to IRQ \(interruptLine)")
        }
        var bar = 0
        while bar < 6 {
            let value = u32(PCIConfig.barOffset(bar))
            let size = barSizes[bar] ?? 0
            if value == 0 && size == 0 {
                bar += 1
                continue
            }
            let sizeText = size == 0 ? "" : " [size=\(Self.sizeText(size))]"
            if value & 1 == 1 {
                lines.append("\tRegion \(bar): I/O ports at \(value & ~3 == 0 ? "<unassigned>" : hexText(value & ~3, digits: 4, prefix: false))\(sizeText)")
                bar += 1
            } else {
                let is64 = (value >> 1) & 3 == 2
                let address = UInt64(value & ~0xF) | (is64 ? UInt64(u32(PCIConfig.barOffset(bar + 1))) << 32 : 0)
                lines.append("\tRegion \(bar): Memory at \(address == 0 ? "<unassigned>" : hexText(address, digits: 8, prefix: false)) (\(is64 ? "64" : "32")-bit, "
                             + "\(value & 8 != 0 ? "" : "non-")prefetchable)\(sizeText)")
                bar += is64 ? 2 : 1
            }
        }
        for capability in capabilities {
            let at = capability.extended ? "[\(hexText(capability.offset, digits: 3, prefix: false)) v\((u32(capability.offset) >> 16) & 0xF)]"
                                         : "[\(hexText(capability.offset, digits: 2, prefix: false))]"
            lines.append("\tCapabilities: \(at) \(capability.name)")
            lines += capability.details.map { "\t\t\($0)" }
        }
        lines += problems.map { "\tProblem: \($0)" }
        return lines
    }

    /// `lspci -xxx`-style hex dump of `bytes`.
    public static func hexdump(_ bytes: [UInt8], lineWidth: Int = 16) -> [String] {
        stride(from: 0, to: bytes.count, by: lineWidth).map { start in
            hexText(start, digits: 3, prefix: false) + ": " + bytes[start..<min(start + lineWidth, bytes.count)].map { hexText($0, digits: 2, prefix: false) }.joined(separator: " ")
        }
    }

    static func sizeText(_ size: UInt64) -> String {
        if size >= 1 << 30 && size % (1 << 30) == 0 { return "\(size >> 30)G" }
        if size >= 1 << 20 && size % (1 << 20) == 0 { return "\(size >> 20)M" }
        if size >= 1 << 10 && size % (1 << 10) == 0 { return "\(size >> 10)K" }
        return "\(size)"
    }

    func flag(_ set: Bool) -> String { set ? "+" : "-" }
}

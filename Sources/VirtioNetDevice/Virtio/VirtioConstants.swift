import VfioUserProto

/// Feature bits (virtio 1.x §6 and §5.1.3), as a 64-bit set.
public struct VirtioFeatures: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }
    static func bit(_ n: UInt64) -> VirtioFeatures { VirtioFeatures(rawValue: 1 << n) }

    // Device-independent.
    public static let ringIndirectDescriptors = bit(28)
    public static let ringEventIndex = bit(29)
    public static let version1 = bit(32)
    public static let accessPlatform = bit(33)
    public static let ringPacked = bit(34)

    // virtio-net.
    public static let netChecksum = bit(0)
    public static let netGuestChecksum = bit(1)
    public static let netControlGuestOffloads = bit(2)
    public static let netMTU = bit(3)
    public static let netMAC = bit(5)
    public static let netGuestTSO4 = bit(7)
    public static let netGuestTSO6 = bit(8)
    public static let netGuestECN = bit(9)
    public static let netGuestUFO = bit(10)
    public static let netHostTSO4 = bit(11)
    public static let netHostTSO6 = bit(12)
    public static let netHostECN = bit(13)
    public static let netHostUFO = bit(14)
    public static let netMergeableRxBuffers = bit(15)
    public static let netStatus = bit(16)
    public static let netControlQueue = bit(17)
    public static let netControlRx = bit(18)
    public static let netControlVLAN = bit(19)
    public static let netGuestAnnounce = bit(21)
    public static let netMultiqueue = bit(22)
    public static let netControlMACAddress = bit(23)

    static let names: [(VirtioFeatures, String)] = [
        (.netChecksum, "CSUM"), (.netGuestChecksum, "GUEST_CSUM"), (.netMTU, "MTU"), (.netMAC, "MAC"),
        (.netGuestTSO4, "GUEST_TSO4"), (.netGuestTSO6, "GUEST_TSO6"), (.netGuestECN, "GUEST_ECN"),
        (.netHostTSO4, "HOST_TSO4"), (.netHostTSO6, "HOST_TSO6"), (.netHostECN, "HOST_ECN"),
        (.netMergeableRxBuffers, "MRG_RXBUF"), (.netStatus, "STATUS"), (.netControlQueue, "CTRL_VQ"),
        (.netControlRx, "CTRL_RX"), (.netControlMACAddress, "CTRL_MAC_ADDR"),
        (.ringIndirectDescriptors, "INDIRECT_DESC"), (.ringEventIndex, "EVENT_IDX"), (.version1, "VERSION_1"),
    ]

    public var description: String {
        var parts = Self.names.filter { contains($0.0) }.map(\.1)
        let unnamed = rawValue & ~Self.names.reduce(0) { $0 | $1.0.rawValue }
        if unnamed != 0 { parts.append("0x" + String(unnamed, radix: 16)) }
        return parts.joined(separator: "|")
    }
}

/// The device status byte (virtio 1.x §2.1).
public struct VirtioStatus: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    @inlinable public static var acknowledge: VirtioStatus { VirtioStatus(rawValue: 1) }
    @inlinable public static var driver: VirtioStatus { VirtioStatus(rawValue: 2) }
    @inlinable public static var driverOK: VirtioStatus { VirtioStatus(rawValue: 4) }
    @inlinable public static var featuresOK: VirtioStatus { VirtioStatus(rawValue: 8) }
    @inlinable public static var needsReset: VirtioStatus { VirtioStatus(rawValue: 0x40) }
    @inlinable public static var failed: VirtioStatus { VirtioStatus(rawValue: 0x80) }
}

/// `cfg_type` of a virtio PCI capability (virtio 1.x §4.1.4).
public enum VirtioPCICapabilityType: UInt8, Sendable {
    case common = 1
    case notify = 2
    case isr = 3
    case device = 4
    case pciConfig = 5
}

/// No MSI-X vector (virtio 1.x §4.1.5.1.2).
public let virtioNoVector: UInt16 = 0xFFFF

/// The 12-byte `virtio_net_hdr_v1` that starts every frame (virtio 1.x §5.1.6); with VERSION_1 it
/// always includes `num_buffers`.
public struct VirtioNetHeader: Equatable, Sendable {
    public static let size = 12
    public static let flagNeedsChecksum: UInt8 = 1
    public static let flagDataValid: UInt8 = 2
    public static let gsoNone: UInt8 = 0

    public var flags: UInt8 = 0
    public var gsoType: UInt8 = 0
    public var headerLength: UInt16 = 0
    public var gsoSize: UInt16 = 0
    public var checksumStart: UInt16 = 0
    public var checksumOffset: UInt16 = 0
    public var bufferCount: UInt16 = 0

    public init() {}

    public init(_ bytes: UnsafeRawBufferPointer) {
        flags = bytes[0]
        gsoType = bytes[1]
        headerLength = bytes.littleEndian(at: 2)
        gsoSize = bytes.littleEndian(at: 4)
        checksumStart = bytes.littleEndian(at: 6)
        checksumOffset = bytes.littleEndian(at: 8)
        bufferCount = bytes.littleEndian(at: 10)
    }

    public func store(into bytes: UnsafeMutableRawBufferPointer) {
        bytes[0] = flags
        bytes[1] = gsoType
        bytes.storeBytes(of: headerLength.littleEndian, toByteOffset: 2, as: UInt16.self)
        bytes.storeBytes(of: gsoSize.littleEndian, toByteOffset: 4, as: UInt16.self)
        bytes.storeBytes(of: checksumStart.littleEndian, toByteOffset: 6, as: UInt16.self)
        bytes.storeBytes(of: checksumOffset.littleEndian, toByteOffset: 8, as: UInt16.self)
        bytes.storeBytes(of: bufferCount.littleEndian, toByteOffset: 10, as: UInt16.self)
    }
}

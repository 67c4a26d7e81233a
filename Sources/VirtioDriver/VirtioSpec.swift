/// What a driver knows of virtio 1.x, written from the specification (virtio v1.2: §2.1 status,
/// §2.7 split virtqueues, §4.1.4 PCI capabilities, §5.1 the network device), never taken from the
/// device model: where the device gets a bit, an offset or a rule wrong, it disagrees with this.
public enum VirtioSpec {
    /// Feature bits (§6 reserved bits, §5.1.3 network device bits).
    public struct Features: OptionSet, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: UInt64
        public init(rawValue: UInt64) { self.rawValue = rawValue }
        private init(bit: Int) { rawValue = 1 << UInt64(bit) }

        public static let netChecksum = Features(bit: 0)
        public static let netGuestChecksum = Features(bit: 1)
        public static let netControlGuestOffloads = Features(bit: 2)
        public static let netMTU = Features(bit: 3)
        public static let netMAC = Features(bit: 5)
        public static let netGuestTSO4 = Features(bit: 7)
        public static let netGuestTSO6 = Features(bit: 8)
        public static let netGuestECN = Features(bit: 9)
        public static let netGuestUFO = Features(bit: 10)
        public static let netHostTSO4 = Features(bit: 11)
        public static let netHostTSO6 = Features(bit: 12)
        public static let netHostECN = Features(bit: 13)
        public static let netHostUFO = Features(bit: 14)
        public static let netMergeableRxBuffers = Features(bit: 15)
        public static let netStatus = Features(bit: 16)
        public static let netControlQueue = Features(bit: 17)
        public static let netControlRx = Features(bit: 18)
        public static let netControlVLAN = Features(bit: 19)
        public static let netGuestAnnounce = Features(bit: 21)
        public static let netMultiqueue = Features(bit: 22)
        public static let netControlMACAddress = Features(bit: 23)
        public static let ringIndirectDescriptors = Features(bit: 28)
        public static let ringEventIndex = Features(bit: 29)
        public static let version1 = Features(bit: 32)
        public static let accessPlatform = Features(bit: 33)
        public static let ringPacked = Features(bit: 34)

        public var description: String { "0x" + String(rawValue, radix: 16) }
    }

    /// The device status field (§2.1).
    public struct Status: OptionSet, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let acknowledge = Status(rawValue: 1)
        public static let driver = Status(rawValue: 2)
        public static let driverOK = Status(rawValue: 4)
        public static let featuresOK = Status(rawValue: 8)
        public static let needsReset = Status(rawValue: 0x40)
        public static let failed = Status(rawValue: 0x80)
    }

    /// `cfg_type` of a virtio PCI capability (§4.1.4).
    public enum PCICapability: UInt8 {
        case common = 1, notify = 2, isr = 3, device = 4, pciConfig = 5
    }

    /// "No vector" in the MSI-X vector registers (§4.1.5.1.2).
    public static let noVector: UInt16 = 0xFFFF

    /// A split virtqueue descriptor, 16 bytes (§2.7.5).
    public struct Descriptor: Sendable, Equatable {
        public static let next: UInt16 = 1
        public static let write: UInt16 = 2
        public static let indirect: UInt16 = 4

        public var address: UInt64
        public var length: UInt32
        public var flags: UInt16
        public var next: UInt16

        public init(address: UInt64, length: UInt32, flags: UInt16, next: UInt16 = 0) {
            self.address = address
            self.length = length
            self.flags = flags
            self.next = next
        }
    }

    /// Bytes of a split virtqueue's three parts for `size` entries (§2.7): descriptor table, driver
    /// (available) ring with `used_event`, device (used) ring with `avail_event`.
    public static func splitRingSizes(_ size: UInt16) -> (descriptors: Int, available: Int, used: Int) {
        (16 * Int(size), 6 + 2 * Int(size), 6 + 8 * Int(size))
    }

    /// `vring_need_event` (§2.7.10): whether moving an index from `old` to `new` passes the
    /// other side's event index `event`, so it wants a notification.
    public static func needsEvent(event: UInt16, new: UInt16, old: UInt16) -> Bool {
        new &- event &- 1 < new &- old
    }

    /// `struct virtio_net_hdr_v1`, 12 bytes (§5.1.6).
    public struct NetHeader: Sendable, Equatable {
        public static let size = 12

        public var flags: UInt8 = 0
        public var gsoType: UInt8 = 0
        public var headerLength: UInt16 = 0
        public var gsoSize: UInt16 = 0
        public var checksumStart: UInt16 = 0
        public var checksumOffset: UInt16 = 0
        /// How many buffers a received frame spans (with MRG_RXBUF).
        public var bufferCount: UInt16 = 0

        public init() {}

        /// Reads the first 12 bytes of `bytes` (little-endian fields).
        public init(_ bytes: [UInt8]) {
            func u16(_ at: Int) -> UInt16 { UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8 }
            flags = bytes[0]
            gsoType = bytes[1]
            headerLength = u16(2)
            gsoSize = u16(4)
            checksumStart = u16(6)
            checksumOffset = u16(8)
            bufferCount = u16(10)
        }

        public var bytes: [UInt8] {
            [flags, gsoType] + [headerLength, gsoSize, checksumStart, checksumOffset, bufferCount].flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        }
    }
}

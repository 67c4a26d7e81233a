/// The command field of the header (spec "Commands"). A struct rather than an enum so that an unknown
/// number from a client is still representable (and answered with EINVAL).
public struct Command: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let version = Command(rawValue: 1)
    public static let dmaMap = Command(rawValue: 2)
    public static let dmaUnmap = Command(rawValue: 3)
    public static let deviceGetInfo = Command(rawValue: 4)
    public static let deviceGetRegionInfo = Command(rawValue: 5)
    public static let deviceGetRegionIOFDs = Command(rawValue: 6)
    public static let deviceGetIRQInfo = Command(rawValue: 7)
    public static let deviceSetIRQs = Command(rawValue: 8)
    public static let regionRead = Command(rawValue: 9)
    public static let regionWrite = Command(rawValue: 10)
    public static let dmaRead = Command(rawValue: 11)
    public static let dmaWrite = Command(rawValue: 12)
    public static let deviceReset = Command(rawValue: 13)
    /// Migration v1's dirty-page command: still in QEMU's enum, gone from the spec.
    public static let dirtyPages = Command(rawValue: 14)
    public static let regionWriteMulti = Command(rawValue: 15)
    public static let deviceFeature = Command(rawValue: 16)
    public static let migDataRead = Command(rawValue: 17)
    public static let migDataWrite = Command(rawValue: 18)

    public var name: String {
        switch self {
        case .version: "VERSION"
        case .dmaMap: "DMA_MAP"
        case .dmaUnmap: "DMA_UNMAP"
        case .deviceGetInfo: "DEVICE_GET_INFO"
        case .deviceGetRegionInfo: "DEVICE_GET_REGION_INFO"
        case .deviceGetRegionIOFDs: "DEVICE_GET_REGION_IO_FDS"
        case .deviceGetIRQInfo: "DEVICE_GET_IRQ_INFO"
        case .deviceSetIRQs: "DEVICE_SET_IRQS"
        case .regionRead: "REGION_READ"
        case .regionWrite: "REGION_WRITE"
        case .dmaRead: "DMA_READ"
        case .dmaWrite: "DMA_WRITE"
        case .deviceReset: "DEVICE_RESET"
        case .dirtyPages: "DIRTY_PAGES"
        case .regionWriteMulti: "REGION_WRITE_MULTI"
        case .deviceFeature: "DEVICE_FEATURE"
        case .migDataRead: "MIG_DATA_READ"
        case .migDataWrite: "MIG_DATA_WRITE"
        default: "COMMAND_\(rawValue)"
        }
    }

    public var description: String { name }

    /// Every command the spec defines, in number order.
    public static let all: [Command] = (1...18).map { Command(rawValue: $0) }

    public init?(name: String) {
        guard let hit = Command.all.first(where: { $0.name == name }) else { return nil }
        self = hit
    }
}

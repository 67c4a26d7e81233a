/// The command field of the header (spec "Commands"). A struct rather than an enum so that an unknown
/// number from a client is still representable (and answered with EINVAL).
///
/// The named values here and in the other message types are inlinable computed properties: a
/// stored `static let` is a lazily initialised global that other modules reach through a call on
/// every use, on the hot path too; these fold to constants where they are used.
import Support
public struct Command: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }

    @inlinable public static var version: Command { Command(rawValue: 1) }
    @inlinable public static var dmaMap: Command { Command(rawValue: 2) }
    @inlinable public static var dmaUnmap: Command { Command(rawValue: 3) }
    @inlinable public static var deviceGetInfo: Command { Command(rawValue: 4) }
    @inlinable public static var deviceGetRegionInfo: Command { Command(rawValue: 5) }
    @inlinable public static var deviceGetRegionIOFDs: Command { Command(rawValue: 6) }
    @inlinable public static var deviceGetIRQInfo: Command { Command(rawValue: 7) }
    @inlinable public static var deviceSetIRQs: Command { Command(rawValue: 8) }
    @inlinable public static var regionRead: Command { Command(rawValue: 9) }
    @inlinable public static var regionWrite: Command { Command(rawValue: 10) }
    @inlinable public static var dmaRead: Command { Command(rawValue: 11) }
    @inlinable public static var dmaWrite: Command { Command(rawValue: 12) }
    @inlinable public static var deviceReset: Command { Command(rawValue: 13) }
    /// Migration v1's dirty-page command: still in QEMU's enum, gone from the spec.
    @inlinable public static var dirtyPages: Command { Command(rawValue: 14) }
    @inlinable public static var regionWriteMulti: Command { Command(rawValue: 15) }
    @inlinable public static var deviceFeature: Command { Command(rawValue: 16) }
    @inlinable public static var migDataRead: Command { Command(rawValue: 17) }
    @inlinable public static var migDataWrite: Command { Command(rawValue: 18) }

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

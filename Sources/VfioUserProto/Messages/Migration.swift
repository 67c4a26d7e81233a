/// `enum vfio_device_mig_state` (linux/vfio.h), the states of migration v2 (spec "Migration").
public enum MigrationState: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    /// Failed; only DEVICE_RESET leaves it.
    case error = 0
    /// Stopped: no interrupts, no DMA, no change of internal state.
    case stop = 1
    case running = 2
    /// Stopped, its state being read out (MIG_DATA_READ).
    case stopCopy = 3
    /// Stopped, a state being loaded (MIG_DATA_WRITE).
    case resuming = 4
    /// Running, but no peer-to-peer DMA.
    case runningP2P = 5
    /// Running, its state being read out while it runs.
    case preCopy = 6
    case preCopyP2P = 7

    public var description: String {
        switch self {
        case .error: "ERROR"
        case .stop: "STOP"
        case .running: "RUNNING"
        case .stopCopy: "STOP_COPY"
        case .resuming: "RESUMING"
        case .runningP2P: "RUNNING_P2P"
        case .preCopy: "PRE_COPY"
        case .preCopyP2P: "PRE_COPY_P2P"
        }
    }

    /// The device runs (it may change state, raise interrupts and do DMA).
    public var isRunning: Bool { self == .running || self == .runningP2P || self == .preCopy || self == .preCopyP2P }
    /// MIG_DATA_READ has data to give.
    public var isSaving: Bool { self == .stopCopy || self == .preCopy || self == .preCopyP2P }
}

/// The GET reply of DEVICE_FEATURE MIGRATION: `VFIO_MIGRATION_*`.
public struct MigrationCapabilities: OptionSet, Sendable, Hashable {
    public let rawValue: UInt64
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// `VFIO_MIGRATION_STOP_COPY`: RUNNING, STOP, STOP_COPY, RESUMING; every migratable device.
    @inlinable public static var stopCopy: MigrationCapabilities { MigrationCapabilities(rawValue: 1 << 0) }
    /// `VFIO_MIGRATION_P2P`: RUNNING_P2P, where DMA stops but the device still answers accesses.
    @inlinable public static var p2p: MigrationCapabilities { MigrationCapabilities(rawValue: 1 << 1) }
    /// `VFIO_MIGRATION_PRE_COPY`: PRE_COPY, data sent while the device runs.
    @inlinable public static var preCopy: MigrationCapabilities { MigrationCapabilities(rawValue: 1 << 2) }
}

/// DEVICE_FEATURE MIG_DEVICE_STATE data: device_state u32, data_fd u32. vfio-user carries the
/// data in MIG_DATA messages, so `data_fd` is unused (the spec); the server answers -1.
public struct MigrationDeviceState: Equatable, Sendable {
    public static let size = 8
    public var rawState: UInt32
    public var dataFD: UInt32

    public init(state: MigrationState, dataFD: UInt32 = UInt32.max) {
        rawState = state.rawValue
        self.dataFD = dataFD
    }

    public init(decoding reader: inout ByteReader) throws(ProtocolError) {
        rawState = try reader.read()
        dataFD = try reader.read()
    }

    public var state: MigrationState? { MigrationState(rawValue: rawState) }

    public func encode(into writer: inout ByteWriter) {
        writer.write(rawState)
        writer.write(dataFD)
    }
}

/// A range of client memory (iova, length), as DMA_LOGGING_START lists them.
public struct DMARange: Equatable, Sendable {
    public var iova: UInt64
    public var length: UInt64

    public init(iova: UInt64, length: UInt64) {
        self.iova = iova
        self.length = length
    }
}

/// DEVICE_FEATURE DMA_LOGGING_START data: page_size u64, num_ranges u32, reserved u32, then
/// num_ranges × {iova u64, length u64} (`struct vfio_device_feature_dma_logging_control`; the
/// kernel's `ranges` pointer becomes the array that follows).
public struct DMALoggingStart: Equatable, Sendable {
    public var pageSize: UInt64
    public var ranges: [DMARange]

    public init(pageSize: UInt64, ranges: [DMARange]) {
        self.pageSize = pageSize
        self.ranges = ranges
    }

    public init(decoding reader: inout ByteReader) throws(ProtocolError) {
        pageSize = try reader.read()
        let count: UInt32 = try reader.read()
        let reserved: UInt32 = try reader.read()
        guard reserved == 0 else { throw .invalid("DMA_LOGGING_START reserved field is \(reserved)") }
        guard Int(count) <= reader.remaining / 16 else { throw .truncated(needed: Int(count) * 16, available: reader.remaining) }
        ranges = []
        ranges.reserveCapacity(Int(count))
        for _ in 0..<count { ranges.append(DMARange(iova: try reader.read(), length: try reader.read())) }
    }

    public func encode(into writer: inout ByteWriter) {
        writer.write(pageSize)
        writer.write(UInt32(ranges.count))
        writer.write(UInt32(0))
        for range in ranges {
            writer.write(range.iova)
            writer.write(range.length)
        }
    }
}

/// DEVICE_FEATURE DMA_LOGGING_REPORT request data: iova u64, length u64, page_size u64; the GET
/// reply appends the bitmap (u64 words, one bit per page, cleared once reported).
public struct DMALoggingReport: Equatable, Sendable {
    public static let size = 24
    public var iova: UInt64
    public var length: UInt64
    public var pageSize: UInt64

    public init(iova: UInt64, length: UInt64, pageSize: UInt64) {
        self.iova = iova
        self.length = length
        self.pageSize = pageSize
    }

    public init(decoding reader: inout ByteReader) throws(ProtocolError) {
        iova = try reader.read()
        length = try reader.read()
        pageSize = try reader.read()
    }

    public func encode(into writer: inout ByteWriter) {
        writer.write(iova)
        writer.write(length)
        writer.write(pageSize)
    }

    /// Bytes of the bitmap: one bit per page, whole u64 words.
    public var bitmapSize: UInt64? {
        guard pageSize > 0, pageSize.nonzeroBitCount == 1 else { return nil }
        let pages = length / pageSize + (length % pageSize == 0 ? 0 : 1)
        return (pages + 63) / 64 * 8
    }
}

/// DEVICE_FEATURE (16) request and reply: argsz u32, flags u32 (feature index in bits 0-15, GET 0x10000,
/// SET 0x20000, PROBE 0x40000), then feature data (spec "VFIO_USER_DEVICE_FEATURE").
public struct DeviceFeature: Equatable, Sendable {
    public static let fixedSize = 8

    public var argsz: UInt32
    public var flags: DeviceFeatureFlags
    public var data: [UInt8]

    public init(argsz: UInt32? = nil, flags: DeviceFeatureFlags, data: [UInt8] = []) {
        self.argsz = argsz ?? UInt32(DeviceFeature.fixedSize + data.count)
        self.flags = flags
        self.data = data
    }

    public init(decoding reader: inout ByteReader) throws(ProtocolError) {
        argsz = try reader.read()
        flags = DeviceFeatureFlags(rawValue: try reader.read())
        data = Array(reader.rest())
    }

    public func encode(into writer: inout ByteWriter) {
        writer.write(argsz)
        writer.write(flags.rawValue)
        writer.write(data)
    }
}

/// The flags word of DEVICE_FEATURE: a feature index and the operations asked for.
public struct DeviceFeatureFlags: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let getBit: UInt32 = 1 << 16
    public static let setBit: UInt32 = 1 << 17
    public static let probeBit: UInt32 = 1 << 18

    public init(feature: DeviceFeatureIndex, get: Bool = false, set: Bool = false, probe: Bool = false) {
        rawValue = UInt32(feature.rawValue)
            | (get ? Self.getBit : 0) | (set ? Self.setBit : 0) | (probe ? Self.probeBit : 0)
    }

    public var feature: DeviceFeatureIndex { DeviceFeatureIndex(rawValue: UInt16(rawValue & 0xFFFF)) }
    public var isGet: Bool { rawValue & Self.getBit != 0 }
    public var isSet: Bool { rawValue & Self.setBit != 0 }
    public var isProbe: Bool { rawValue & Self.probeBit != 0 }
    /// Bits other than the index and the three operations.
    public var unknownBits: UInt32 { rawValue & ~(0xFFFF | Self.getBit | Self.setBit | Self.probeBit) }

    public var description: String {
        var ops: [String] = []
        if isGet { ops.append("GET") }
        if isSet { ops.append("SET") }
        if isProbe { ops.append("PROBE") }
        return "\(feature) \(ops.isEmpty ? "-" : ops.joined(separator: "|"))"
    }
}

/// `VFIO_DEVICE_FEATURE_*` indexes vfio-user uses.
public struct DeviceFeatureIndex: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }

    @inlinable public static var migration: DeviceFeatureIndex { DeviceFeatureIndex(rawValue: 1) }
    @inlinable public static var migDeviceState: DeviceFeatureIndex { DeviceFeatureIndex(rawValue: 2) }
    @inlinable public static var dmaLoggingStart: DeviceFeatureIndex { DeviceFeatureIndex(rawValue: 6) }
    @inlinable public static var dmaLoggingStop: DeviceFeatureIndex { DeviceFeatureIndex(rawValue: 7) }
    @inlinable public static var dmaLoggingReport: DeviceFeatureIndex { DeviceFeatureIndex(rawValue: 8) }

    public var description: String {
        switch self {
        case .migration: "MIGRATION"
        case .migDeviceState: "MIG_DEVICE_STATE"
        case .dmaLoggingStart: "DMA_LOGGING_START"
        case .dmaLoggingStop: "DMA_LOGGING_STOP"
        case .dmaLoggingReport: "DMA_LOGGING_REPORT"
        default: "FEATURE_\(rawValue)"
        }
    }
}

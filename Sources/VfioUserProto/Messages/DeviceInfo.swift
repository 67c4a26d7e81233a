/// DEVICE_GET_INFO request and reply (`struct vfio_device_info`, 16 bytes).
public struct DeviceInfo: Equatable, Sendable {
    public static let size = 16

    public var argsz: UInt32
    public var flags: DeviceFlags
    public var numRegions: UInt32
    public var numIRQs: UInt32

    public init(argsz: UInt32 = UInt32(DeviceInfo.size), flags: DeviceFlags, numRegions: UInt32, numIRQs: UInt32) {
        self.argsz = argsz
        self.flags = flags
        self.numRegions = numRegions
        self.numIRQs = numIRQs
    }

    public init(decoding reader: inout ByteReader) throws(ProtocolError) {
        argsz = try reader.read()
        flags = DeviceFlags(rawValue: try reader.read())
        numRegions = try reader.read()
        numIRQs = try reader.read()
    }

    public func encode(into writer: inout ByteWriter) {
        writer.write(argsz)
        writer.write(flags.rawValue)
        writer.write(numRegions)
        writer.write(numIRQs)
    }
}

/// `VFIO_DEVICE_FLAGS_*`: QEMU refuses a device without PCI, and sends DEVICE_RESET only with RESET.
public struct DeviceFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    @inlinable public static var reset: DeviceFlags { DeviceFlags(rawValue: 1 << 0) }
    @inlinable public static var pci: DeviceFlags { DeviceFlags(rawValue: 1 << 1) }
}

/// DEVICE_GET_IRQ_INFO request and reply (`struct vfio_irq_info`, 16 bytes).
public struct IRQInfo: Equatable, Sendable {
    public static let size = 16

    public var argsz: UInt32
    public var flags: IRQInfoFlags
    public var index: IRQIndex
    public var count: UInt32

    public init(argsz: UInt32 = UInt32(IRQInfo.size), flags: IRQInfoFlags = [], index: IRQIndex, count: UInt32 = 0) {
        self.argsz = argsz
        self.flags = flags
        self.index = index
        self.count = count
    }

    public init(decoding reader: inout ByteReader) throws(ProtocolError) {
        argsz = try reader.read()
        flags = IRQInfoFlags(rawValue: try reader.read())
        index = IRQIndex(rawValue: try reader.read())
        count = try reader.read()
    }

    public func encode(into writer: inout ByteWriter) {
        writer.write(argsz)
        writer.write(flags.rawValue)
        writer.write(index.rawValue)
        writer.write(count)
    }
}

/// `VFIO_IRQ_INFO_*`.
public struct IRQInfoFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    @inlinable public static var eventfd: IRQInfoFlags { IRQInfoFlags(rawValue: 1 << 0) }
    @inlinable public static var maskable: IRQInfoFlags { IRQInfoFlags(rawValue: 1 << 1) }
    /// The client must UNMASK after each interrupt (INTx).
    @inlinable public static var automasked: IRQInfoFlags { IRQInfoFlags(rawValue: 1 << 2) }
    /// Vectors are set up as one set; growing means disabling and re-enabling.
    @inlinable public static var noResize: IRQInfoFlags { IRQInfoFlags(rawValue: 1 << 3) }
}

/// DEVICE_SET_IRQS request (`struct vfio_irq_set`): 20 bytes, then `count` booleans with DATA_BOOL.
/// With DATA_EVENTFD the eventfds travel as SCM_RIGHTS only; QEMU sends no data bytes (hw/vfio-user/device.c).
public struct SetIRQs: Equatable, Sendable {
    public static let fixedSize = 20

    public var argsz: UInt32
    public var flags: SetIRQsFlags
    public var index: IRQIndex
    public var start: UInt32
    public var count: UInt32
    /// Bytes after the fixed part: booleans for DATA_BOOL, nothing otherwise.
    public var data: [UInt8]

    public init(argsz: UInt32? = nil, flags: SetIRQsFlags, index: IRQIndex, start: UInt32, count: UInt32, data: [UInt8] = []) {
        self.argsz = argsz ?? UInt32(SetIRQs.fixedSize + data.count)
        self.flags = flags
        self.index = index
        self.start = start
        self.count = count
        self.data = data
    }

    public init(decoding reader: inout ByteReader) throws(ProtocolError) {
        argsz = try reader.read()
        flags = SetIRQsFlags(rawValue: try reader.read())
        index = IRQIndex(rawValue: try reader.read())
        start = try reader.read()
        count = try reader.read()
        data = Array(reader.rest())
    }

    public func encode(into writer: inout ByteWriter) {
        writer.write(argsz)
        writer.write(flags.rawValue)
        writer.write(index.rawValue)
        writer.write(start)
        writer.write(count)
        writer.write(data)
    }
}

/// `VFIO_IRQ_SET_*`: exactly one DATA bit and one ACTION bit.
public struct SetIRQsFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    @inlinable public static var dataNone: SetIRQsFlags { SetIRQsFlags(rawValue: 1 << 0) }
    @inlinable public static var dataBool: SetIRQsFlags { SetIRQsFlags(rawValue: 1 << 1) }
    @inlinable public static var dataEventfd: SetIRQsFlags { SetIRQsFlags(rawValue: 1 << 2) }
    @inlinable public static var actionMask: SetIRQsFlags { SetIRQsFlags(rawValue: 1 << 3) }
    @inlinable public static var actionUnmask: SetIRQsFlags { SetIRQsFlags(rawValue: 1 << 4) }
    @inlinable public static var actionTrigger: SetIRQsFlags { SetIRQsFlags(rawValue: 1 << 5) }

    public static let dataTypes: SetIRQsFlags = [.dataNone, .dataBool, .dataEventfd]
    public static let actions: SetIRQsFlags = [.actionMask, .actionUnmask, .actionTrigger]

    public var description: String {
        var parts: [String] = []
        if contains(.dataNone) { parts.append("NONE") }
        if contains(.dataBool) { parts.append("BOOL") }
        if contains(.dataEventfd) { parts.append("EVENTFD") }
        if contains(.actionMask) { parts.append("MASK") }
        if contains(.actionUnmask) { parts.append("UNMASK") }
        if contains(.actionTrigger) { parts.append("TRIGGER") }
        let unknown = rawValue & ~0x3F
        if unknown != 0 { parts.append("0x\(String(unknown, radix: 16))") }
        return parts.isEmpty ? "0" : parts.joined(separator: "|")
    }
}

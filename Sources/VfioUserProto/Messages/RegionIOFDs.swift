/// DEVICE_GET_REGION_IO_FDS request (16 bytes): argsz, flags (0), index, count (0).
/// The reply repeats them (count = entries) and appends the entries; the fds travel as SCM_RIGHTS.
public struct RegionIOFDsRequest: Equatable, Sendable {
    public static let size = 16

    public var argsz: UInt32
    public var flags: UInt32
    public var index: RegionIndex
    public var count: UInt32

    public init(argsz: UInt32, flags: UInt32 = 0, index: RegionIndex, count: UInt32 = 0) {
        self.argsz = argsz
        self.flags = flags
        self.index = index
        self.count = count
    }

    public init(decoding reader: inout ByteReader) throws(ProtocolError) {
        argsz = try reader.read()
        flags = try reader.read()
        index = RegionIndex(rawValue: try reader.read())
        count = try reader.read()
    }

    public func encode(into writer: inout ByteWriter) {
        writer.write(argsz)
        writer.write(flags)
        writer.write(index.rawValue)
        writer.write(count)
    }
}

/// One sub-region of a GET_REGION_IO_FDS reply, in the spec's 40-byte layout:
/// offset u64, size u64, fd_index u32, type u32 (0 ioeventfd, 1 ioregionfd), flags u32, padding u32,
/// datamatch (or user_data) u64.
public struct RegionIOFD: Equatable, Sendable {
    public static let size = 40

    public var offset: UInt64
    public var size: UInt64
    public var fdIndex: UInt32
    public var type: UInt32
    public var flags: UInt32
    public var datamatch: UInt64

    public init(offset: UInt64, size: UInt64, fdIndex: UInt32, type: UInt32 = 0, flags: UInt32 = 0, datamatch: UInt64 = 0) {
        self.offset = offset
        self.size = size
        self.fdIndex = fdIndex
        self.type = type
        self.flags = flags
        self.datamatch = datamatch
    }

    public init(decoding reader: inout ByteReader) throws(ProtocolError) {
        offset = try reader.read()
        size = try reader.read()
        fdIndex = try reader.read()
        type = try reader.read()
        flags = try reader.read()
        _ = try reader.read(UInt32.self)
        datamatch = try reader.read()
    }

    public func encode(into writer: inout ByteWriter) {
        writer.write(offset)
        writer.write(size)
        writer.write(fdIndex)
        writer.write(type)
        writer.write(flags)
        writer.write(UInt32(0))
        writer.write(datamatch)
    }
}

/// MIG_DATA_READ (17) request: argsz u32 (largest reply payload), size u32 (bytes wanted).
/// Its reply and MIG_DATA_WRITE (18) requests share `MigrationData`: argsz, size, then `size` bytes.
public struct MigrationDataRead: Equatable, Sendable {
    public static let size = 8

    public var argsz: UInt32
    public var size: UInt32

    public init(argsz: UInt32, size: UInt32) {
        self.argsz = argsz
        self.size = size
    }

    public init(decoding reader: inout ByteReader) throws(ProtocolError) {
        argsz = try reader.read()
        size = try reader.read()
    }

    public func encode(into writer: inout ByteWriter) {
        writer.write(argsz)
        writer.write(size)
    }
}

/// A MIG_DATA_READ reply or a MIG_DATA_WRITE request: argsz u32, size u32, data @8.
/// A READ reply with fewer bytes than asked for means the stream has no more data now.
public struct MigrationData: Equatable, Sendable {
    public static let fixedSize = 8

    public var argsz: UInt32
    public var data: [UInt8]

    public init(argsz: UInt32? = nil, data: [UInt8]) {
        self.argsz = argsz ?? UInt32(MigrationData.fixedSize + data.count)
        self.data = data
    }

    public init(decoding reader: inout ByteReader) throws(ProtocolError) {
        argsz = try reader.read()
        let size: UInt32 = try reader.read()
        data = Array(try reader.bytes(count: Int(size)))
    }

    public func encode(into writer: inout ByteWriter) {
        writer.write(argsz)
        writer.write(UInt32(data.count))
        writer.write(data)
    }
}

/// The fixed part of REGION_READ and REGION_WRITE, requests and replies alike
/// (spec "VFIO_USER_REGION_READ"): offset u64 @0, region u32 @8, count u32 @12; data follows at 16
/// in a READ reply and a WRITE request.
public struct RegionAccess: Equatable, Sendable {
    public static let size = 16

    public var offset: UInt64
    public var region: RegionIndex
    public var count: UInt32

    public init(offset: UInt64, region: RegionIndex, count: UInt32) {
        self.offset = offset
        self.region = region
        self.count = count
    }

    public init(decoding reader: inout ByteReader) throws(ProtocolError) {
        let raw = try reader.bytes(count: Self.size)
        offset = raw.littleEndian(at: 0)
        region = RegionIndex(rawValue: raw.littleEndian(at: 8))
        count = raw.littleEndian(at: 12)
    }

    public func encode(into writer: inout ByteWriter) {
        writer.write(offset)
        writer.write(region.rawValue)
        writer.write(count)
    }
}

/// REGION_WRITE_MULTI request (15): wr_cnt u64, then `wr_cnt` 24-byte entries
/// {offset u64, region u32, count u32 (1-8), data[8]}. QEMU sends up to 200 per message, always
/// posted, and only to a server that advertised `write_multiple`. The reply is wr_cnt u64.
public struct RegionWriteMulti: Equatable, Sendable {
    public static let entrySize = 24
    public static let maxEntryData = 8
    /// QEMU's `VFIO_USER_MULTI_MAX`.
    public static let maxEntries = 200

    public struct Entry: Equatable, Sendable {
        public var offset: UInt64
        public var region: RegionIndex
        public var count: UInt32
        public var data: UInt64

        public init(offset: UInt64, region: RegionIndex, count: UInt32, data: UInt64) {
            self.offset = offset
            self.region = region
            self.count = count
            self.data = data
        }
    }

    public var entries: [Entry]

    public init(entries: [Entry]) { self.entries = entries }

    /// Walks the entries in place without building an array (the hot path).
    public static func forEachEntry(
        in reader: inout ByteReader,
        _ body: (Entry) throws(ProtocolError) -> Void
    ) throws(ProtocolError) {
        let count: UInt64 = try reader.read()
        guard count <= UInt64(maxEntries), Int(count) * entrySize == reader.remaining else {
            throw .invalid("REGION_WRITE_MULTI wr_cnt \(count) does not match \(reader.remaining) payload bytes")
        }
        for _ in 0..<count {
            let entry = Entry(offset: try reader.read(), region: RegionIndex(rawValue: try reader.read()),
                              count: try reader.read(), data: try reader.read())
            guard entry.count >= 1, entry.count <= UInt32(maxEntryData) else {
                throw .invalid("REGION_WRITE_MULTI entry count \(entry.count) is not 1 to 8")
            }
            try body(entry)
        }
    }

    public init(decoding reader: inout ByteReader) throws(ProtocolError) {
        var entries: [Entry] = []
        try RegionWriteMulti.forEachEntry(in: &reader) { entries.append($0) }
        self.entries = entries
    }

    public func encode(into writer: inout ByteWriter) {
        writer.write(UInt64(entries.count))
        for entry in entries {
            writer.write(entry.offset)
            writer.write(entry.region.rawValue)
            writer.write(entry.count)
            writer.write(entry.data)
        }
    }
}

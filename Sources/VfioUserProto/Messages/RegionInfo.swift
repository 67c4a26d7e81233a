/// DEVICE_GET_REGION_INFO request and reply: `struct vfio_region_info` (32 bytes), and in a reply an
/// optional capability chain after it (spec "VFIO_USER_DEVICE_GET_REGION_INFO").
public struct RegionInfo: Equatable, Sendable {
    public static let size = 32

    public var argsz: UInt32
    public var flags: RegionInfoFlags
    public var index: RegionIndex
    public var size: UInt64
    /// mmap offset in the region's fd, and the base of sparse-mmap areas.
    public var offset: UInt64
    /// The capability chain. The CAPS flag and `cap_offset` on the wire are derived from it: CAPS is
    /// set, and the chain starts right after the struct, exactly when it is not empty.
    public var capabilities: [RegionInfoCapability]

    public init(argsz: UInt32 = UInt32(RegionInfo.size), flags: RegionInfoFlags = [], index: RegionIndex,
                size: UInt64 = 0, offset: UInt64 = 0, capabilities: [RegionInfoCapability] = []) {
        self.argsz = argsz
        self.flags = flags.subtracting(.caps)
        self.index = index
        self.size = size
        self.offset = offset
        self.capabilities = capabilities
    }

    /// Decodes the struct and, when CAPS is set, walks the chain (bounded, loop-safe).
    public init(decoding reader: inout ByteReader) throws(ProtocolError) {
        let base = reader.position
        argsz = try reader.read()
        let wireFlags = RegionInfoFlags(rawValue: try reader.read())
        flags = wireFlags.subtracting(.caps)
        index = RegionIndex(rawValue: try reader.read())
        let capOffset: UInt32 = try reader.read()
        size = try reader.read()
        offset = try reader.read()
        capabilities = []
        guard wireFlags.contains(.caps), capOffset != 0 else { return }
        let whole = reader.buffer
        var next = Int(capOffset)
        var seen = 0
        while next != 0 {
            guard next >= RegionInfo.size, seen < 64 else { throw .invalid("region info capability chain is malformed") }
            seen += 1
            let start = base + next
            guard start < whole.count else { throw .truncated(needed: start + 8, available: whole.count) }
            var capReader = ByteReader(UnsafeRawBufferPointer(rebasing: whole[start...]))
            let (capability, following) = try RegionInfoCapability.decode(&capReader)
            capabilities.append(capability)
            next = Int(following)
        }
        reader = ByteReader(whole)
        try reader.skip(whole.count)
    }

    /// The size of the struct plus its capability chain.
    public var fullSize: Int { RegionInfo.size + capabilities.reduce(0) { $0 + $1.encodedSize } }

    /// Encodes the struct and its chain, with CAPS and `cap_offset` derived from `capabilities`.
    public func encode(into writer: inout ByteWriter) {
        let base = writer.count
        writer.write(argsz)
        var flags = flags
        if !capabilities.isEmpty { flags.insert(.caps) } else { flags.remove(.caps) }
        writer.write(flags.rawValue)
        writer.write(index.rawValue)
        writer.write(UInt32(capabilities.isEmpty ? 0 : RegionInfo.size))
        writer.write(size)
        writer.write(offset)
        for (i, capability) in capabilities.enumerated() {
            let isLast = i == capabilities.count - 1
            let next = isLast ? 0 : UInt32(writer.count - base + capability.encodedSize)
            capability.encode(into: &writer, next: next)
        }
    }
}

/// `VFIO_REGION_INFO_FLAG_*`.
public struct RegionInfoFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The client may read the region.
    @inlinable public static var read: RegionInfoFlags { RegionInfoFlags(rawValue: 1 << 0) }
    /// The client may write the region.
    @inlinable public static var write: RegionInfoFlags { RegionInfoFlags(rawValue: 1 << 1) }
    /// The client may map (parts of) the region with the fd of the reply.
    @inlinable public static var mmap: RegionInfoFlags { RegionInfoFlags(rawValue: 1 << 2) }
    /// A capability chain follows the struct.
    @inlinable public static var caps: RegionInfoFlags { RegionInfoFlags(rawValue: 1 << 3) }
}

/// One area of a sparse-mmap capability, relative to the region's `offset`.
public struct SparseMmapArea: Equatable, Sendable {
    /// The area's start, from the region's offset in its fd.
    public var offset: UInt64
    /// The area's length (page-aligned for a client to map it).
    public var size: UInt64
    /// An area the client may map.
    public init(offset: UInt64, size: UInt64) {
        self.offset = offset
        self.size = size
    }
}

/// A region-info capability (`VFIO_REGION_INFO_CAP_*`); each starts with {u16 id, u16 version, u32 next}.
public enum RegionInfoCapability: Equatable, Sendable {
    /// id 1: the parts of the region the client may mmap.
    case sparseMmap([SparseMmapArea])
    /// id 2: what a device-specific region is (`VFIO_REGION_TYPE_*` / subtype).
    case type(type: UInt32, subtype: UInt32)
    /// id 3: the MSI-X table BAR may be mmapped as a whole (QEMU overlays its emulated table).
    case msixMappable

    public var id: UInt16 {
        switch self {
        case .sparseMmap: 1
        case .type: 2
        case .msixMappable: 3
        }
    }

    public var encodedSize: Int {
        switch self {
        case let .sparseMmap(areas): 16 + 16 * areas.count
        case .type: 16
        case .msixMappable: 8
        }
    }

    func encode(into writer: inout ByteWriter, next: UInt32) {
        writer.write(id)
        writer.write(UInt16(1))
        writer.write(next)
        switch self {
        case let .sparseMmap(areas):
            writer.write(UInt32(areas.count))
            writer.write(UInt32(0))
            for area in areas {
                writer.write(area.offset)
                writer.write(area.size)
            }
        case let .type(type, subtype):
            writer.write(type)
            writer.write(subtype)
        case .msixMappable:
            break
        }
    }

    static func decode(_ reader: inout ByteReader) throws(ProtocolError) -> (RegionInfoCapability, UInt32) {
        let id: UInt16 = try reader.read()
        _ = try reader.read(UInt16.self)
        let next: UInt32 = try reader.read()
        switch id {
        case 1:
            let count: UInt32 = try reader.read()
            _ = try reader.read(UInt32.self)
            guard Int(count) <= reader.remaining / 16 else { throw .truncated(needed: Int(count) * 16, available: reader.remaining) }
            var areas: [SparseMmapArea] = []
            for _ in 0..<count {
                areas.append(SparseMmapArea(offset: try reader.read(), size: try reader.read()))
            }
            return (.sparseMmap(areas), next)
        case 2:
            return (.type(type: try reader.read(), subtype: try reader.read()), next)
        case 3:
            return (.msixMappable, next)
        default:
            throw .invalid("unknown region info capability \(id)")
        }
    }
}

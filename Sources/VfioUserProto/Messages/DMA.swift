/// DMA_MAP request (spec "VFIO_USER_DMA_MAP"): 32 bytes, the same layout as the kernel's
/// `struct vfio_iommu_type1_dma_map` with the fd's offset in place of the host address.
public struct DMAMapRequest: Equatable, Sendable {
    public static let size = 32

    public var argsz: UInt32
    public var flags: DMAMapFlags
    public var offset: UInt64
    public var address: UInt64
    public var size: UInt64

    public init(argsz: UInt32 = UInt32(DMAMapRequest.size), flags: DMAMapFlags, offset: UInt64, address: UInt64, size: UInt64) {
        self.argsz = argsz
        self.flags = flags
        self.offset = offset
        self.address = address
        self.size = size
    }

    public init(decoding reader: inout ByteReader) throws(ProtocolError) {
        argsz = try reader.read()
        flags = DMAMapFlags(rawValue: try reader.read())
        offset = try reader.read()
        address = try reader.read()
        size = try reader.read()
    }

    public func encode(into writer: inout ByteWriter) {
        writer.write(argsz)
        writer.write(flags.rawValue)
        writer.write(offset)
        writer.write(address)
        writer.write(size)
    }
}

/// DMA_MAP flags: the device may read (READ) and/or write (WRITE) the range
/// (`VFIO_DMA_MAP_FLAG_READ`/`WRITE` in <linux/vfio.h>).
public struct DMAMapFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The device may read the mapping.
    @inlinable public static var read: DMAMapFlags { DMAMapFlags(rawValue: 1 << 0) }
    /// The device may write the mapping.
    @inlinable public static var write: DMAMapFlags { DMAMapFlags(rawValue: 1 << 1) }
    @inlinable public static var known: DMAMapFlags { DMAMapFlags(rawValue: 0b11) } // read | write
}

/// DMA_UNMAP request and reply (spec "VFIO_USER_DMA_UNMAP"): 24 bytes; the reply echoes the request.
public struct DMAUnmapRequest: Equatable, Sendable {
    public static let size = 24

    public var argsz: UInt32
    public var flags: DMAUnmapFlags
    public var address: UInt64
    public var size: UInt64

    public init(argsz: UInt32 = UInt32(DMAUnmapRequest.size), flags: DMAUnmapFlags = [], address: UInt64, size: UInt64) {
        self.argsz = argsz
        self.flags = flags
        self.address = address
        self.size = size
    }

    public init(decoding reader: inout ByteReader) throws(ProtocolError) {
        argsz = try reader.read()
        flags = DMAUnmapFlags(rawValue: try reader.read())
        address = try reader.read()
        size = try reader.read()
    }

    public func encode(into writer: inout ByteWriter) {
        writer.write(argsz)
        writer.write(flags.rawValue)
        writer.write(address)
        writer.write(size)
    }
}

/// DMA_UNMAP flags. The spec calls the word unused; QEMU sends ALL (`VFIO_DMA_UNMAP_FLAG_ALL`) when a
/// section spans the whole address space, and libvfio-user also knows the v1 dirty-bitmap flag.
public struct DMAUnmapFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    @inlinable public static var getDirtyBitmap: DMAUnmapFlags { DMAUnmapFlags(rawValue: 1 << 0) }
    @inlinable public static var all: DMAUnmapFlags { DMAUnmapFlags(rawValue: 1 << 1) }
}

/// The fixed part of DMA_READ / DMA_WRITE, sent by the server to reach client memory that has no fd.
///
/// Two layouts exist: the spec's and libvfio-user's `{u64 address; u64 count}` (data at payload
/// offset 16, a WRITE reply echoes both fields), which QEMU 11.1.3 as tested here also speaks, and
/// the `{u64 offset; u32 count}` of `VFIOUserDMARW` in QEMU's hw/vfio-user sources (data at 12, a
/// WRITE reply header-only).
public struct DMATransferHeader: Equatable, Sendable {
    public var address: UInt64
    public var count: UInt64

    public init(address: UInt64, count: UInt64) {
        self.address = address
        self.count = count
    }

    public init(decoding reader: inout ByteReader, layout: DMATransferLayout) throws(ProtocolError) {
        address = try reader.read()
        switch layout {
        case .spec: count = try reader.read(UInt64.self)
        case .qemu: count = UInt64(try reader.read(UInt32.self))
        }
    }

    public func encode(into writer: inout ByteWriter, layout: DMATransferLayout) {
        writer.write(address)
        switch layout {
        case .spec: writer.write(count)
        case .qemu: writer.write(UInt32(truncatingIfNeeded: count))
        }
    }
}

/// Which DMA_READ/DMA_WRITE layout a client speaks (see `DMATransferHeader`).
public enum DMATransferLayout: Sendable, Equatable {
    /// The spec's and libvfio-user's: 16-byte fixed part, WRITE replies echo it.
    case spec
    /// The `VFIOUserDMARW` of QEMU's hw/vfio-user sources: 12-byte fixed part, header-only WRITE replies.
    case qemu

    public var fixedSize: Int {
        switch self {
        case .spec: 16
        case .qemu: 12
        }
    }
}

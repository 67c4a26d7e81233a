import Support
import VfioUserProto

/// Why a device is being reset.
public enum ResetReason: Sendable, Equatable {
    /// DEVICE_RESET from the client.
    case deviceReset
    /// The client went away (spec "Client Disconnection"): eventfds and DMA are gone too.
    case lostConnection
    /// PCI Express Function Level Reset through Device Control.
    case functionLevelReset
}

/// A device model: the vendor driver of the mdev world (read, write, reset, mmap), with no idea of
/// sockets or message ids.
///
/// The model builds its `PCIFunction` (identity, BARs, capabilities) and handles accesses to its
/// BARs; config space, the MSI-X table and PBA, interrupts and DMA bookkeeping are done for it.
/// Calls come from the session thread; a model with its own threads synchronises its state itself.
public protocol DeviceModel: AnyObject, Sendable {
    /// The model's one function, the same object for the model's whole life.
    var function: PCIFunction { get }

    /// A register read of `size` bytes (1, 2, 4 or 8, naturally aligned, at most the BAR's
    /// `maxAccessSize`), little-endian in the low bytes of the result.
    func readBAR(_ bar: Int, offset: UInt64, size: Int) -> UInt64
    /// A register write of `size` bytes, the value in the low bytes, under the same rules as reads.
    func writeBAR(_ bar: Int, offset: UInt64, size: Int, value: UInt64)

    /// Back to power-on state (config space and interrupts are reset by the caller).
    func reset(_ reason: ResetReason)

    /// Gives the model its window on client memory, once, before any client attaches.
    func attach(dma: DMASpace)

    /// A BAR the client may mmap (a shared-memory fd and the areas it may map); nil for trapped BARs.
    func mmapBacking(bar: Int) -> RegionMmap?

    /// Called after a config-space write the model may care about (e.g. the command register).
    func configWritten(offset: Int, size: Int)

    /// Lets the model supply config-space bytes it owns (virtio's PCI_CFG data window), after the
    /// generic read filled `buffer` for `[offset, offset + buffer.count)`.
    func patchConfigRead(offset: Int, into buffer: UnsafeMutableRawBufferPointer)

    /// The device is going away for good: stop its threads.
    func shutdown()
}

extension DeviceModel {
    /// Models that do no DMA ignore it.
    public func attach(dma: DMASpace) {}
    /// Every BAR trapped.
    public func mmapBacking(bar: Int) -> RegionMmap? { nil }
    /// Nothing to do.
    public func configWritten(offset: Int, size: Int) {}
    /// Config space as the function holds it.
    public func patchConfigRead(offset: Int, into buffer: UnsafeMutableRawBufferPointer) {}
    /// No threads to stop.
    public func shutdown() {}
}

/// How a region is exposed for mmap: the fd the client maps, the region's offset in it, and the
/// areas (relative to that offset) it may map; accesses elsewhere in the region stay trapped.
public struct RegionMmap: Sendable {
    /// The file the client maps (a memfd), sent with the GET_REGION_INFO reply.
    public let fd: OwnedFileDescriptor
    /// The region's offset in `fd`.
    public let offset: UInt64
    /// The parts of the region the client may map, relative to `offset`.
    public let areas: [SparseMmapArea]

    /// A mappable region backed by `fd`.
    public init(fd: OwnedFileDescriptor, offset: UInt64 = 0, areas: [SparseMmapArea]) {
        self.fd = fd
        self.offset = offset
        self.areas = areas
    }
}

/// A region as GET_REGION_INFO describes it.
public struct RegionDescriptor: Sendable {
    /// Which region.
    public var index: RegionIndex
    /// Its size in bytes; 0 for a region the device does not have.
    public var size: UInt64
    /// READ, WRITE, MMAP.
    public var flags: RegionInfoFlags
    /// How the client maps it, if it may.
    public var mmap: RegionMmap?

    /// The reply struct and capability chain (sparse areas for a mappable region, MSI-X mappable for
    /// the table BAR when it is mappable).
    public var info: RegionInfo {
        var capabilities: [RegionInfoCapability] = []
        if let mmap { capabilities.append(.sparseMmap(mmap.areas)) }
        return RegionInfo(flags: flags, index: index, size: size, offset: mmap?.offset ?? 0, capabilities: capabilities)
    }
}

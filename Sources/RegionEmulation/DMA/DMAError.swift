import Support
import SystemPackage
import VfioUserProto

/// Why a DMA map, unmap or access failed. Map and unmap errors become the errno of the reply;
/// access errors reach the device model, which decides what the guest sees.
public enum DMAError: ErrnoConvertible, Equatable, CustomStringConvertible {
    /// A malformed map or unmap request (flags, zero size, overflow): EINVAL.
    case invalid(String)
    /// The range overlaps an existing mapping: EEXIST, as the spec says. (libvfio-user answers EINVAL
    /// and accepts an exact duplicate; we accept the exact duplicate too, see `DMASpace.map`.)
    case overlaps(address: UInt64, size: UInt64)
    /// The table holds `max_dma_maps` mappings already: ENOSPC, the kernel type1 IOMMU's answer.
    case tooManyMappings(Int)
    /// DMA_UNMAP of a range that is not exactly one mapping: ENOENT.
    case noSuchMapping(address: UInt64, size: UInt64)
    /// A device access to an address no mapping covers: EFAULT.
    case notMapped(UInt64)
    /// A device access the mapping's READ/WRITE flags do not allow: EACCES.
    case accessDenied(address: UInt64, write: Bool)
    /// A pin of a region that has no fd (message mode): EFAULT; copy access still works.
    case messageMode(UInt64)
    /// mmap of the client's fd failed.
    case mapFailed(Errno)
    /// An unmap waited too long for pins to be released: EBUSY.
    case pinsHeld(address: UInt64, pins: Int)
    /// Message-mode DMA could not reach the client.
    case channel(Errno, String)
    /// The request conflicts with what is going on (dirty logging already on): EBUSY.
    case busy(String)
    /// The client's memory behind the mapping went away (its file was truncated after DMA_MAP):
    /// EFAULT. What the access read is not to be trusted; the mapping stays refused until unmapped.
    case memoryGone(UInt64)

    /// The errno the reply to the client carries.
    public var errno: Errno {
        switch self {
        case .invalid: .invalidArgument
        case .overlaps: .fileExists
        case .tooManyMappings: .noSpace
        case .noSuchMapping: .noSuchFileOrDirectory
        case .notMapped, .messageMode: .badAddress
        case .accessDenied: .permissionDenied
        case let .mapFailed(errno): errno
        case .pinsHeld: .resourceBusy
        case let .channel(errno, _): errno
        case .busy: .resourceBusy
        case .memoryGone: .badAddress
        }
    }

    public var description: String {
        func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        return switch self {
        case let .invalid(why): why
        case let .overlaps(address, size): "range \(hex(address))+\(hex(size)) overlaps an existing mapping"
        case let .tooManyMappings(limit): "already \(limit) DMA mappings"
        case let .noSuchMapping(address, size): "no mapping is exactly \(hex(address))+\(hex(size))"
        case let .notMapped(address): "no DMA mapping covers \(hex(address))"
        case let .accessDenied(address, write): "mapping at \(hex(address)) does not allow \(write ? "writes" : "reads")"
        case let .messageMode(address): "mapping at \(hex(address)) has no fd: it cannot be pinned"
        case let .mapFailed(errno): "mmap failed: \(errno.name)"
        case let .pinsHeld(address, pins): "mapping at \(hex(address)) still has \(pins) pins"
        case let .channel(errno, why): "DMA message failed: \(errno.name) \(why)"
        case let .busy(why): why
        case let .memoryGone(address): "the client's memory behind \(hex(address)) went away (its file shrank after DMA_MAP)"
        }
    }
}

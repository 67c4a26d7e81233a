import RegionEmulation

/// A virtqueue the driver filled in a way the spec forbids. The device answers with NEEDS_RESET
/// (virtio 1.x §2.1.1) and stops using the queue; it never crashes or touches memory outside the
/// mappings it was given.
public enum VirtqueueError: Error, Equatable, CustomStringConvertible {
    /// The available index moved more than the queue size ahead.
    case availableIndexJump(from: UInt16, to: UInt16)
    case headOutOfRange(UInt16)
    case nextOutOfRange(UInt16)
    /// A chain longer than the table: it loops.
    case loop(head: UInt16)
    /// An indirect table whose length is 0 or not a multiple of 16, or one with NEXT set on the
    /// indirect descriptor itself.
    case badIndirectTable(head: UInt16)
    case nestedIndirect(head: UInt16)
    case indirectNotNegotiated(head: UInt16)
    /// The lengths of a chain add up to more than 4 GiB.
    case lengthOverflow(head: UInt16)
    /// A device-readable descriptor after a device-writable one, or a direction the queue does not allow.
    case wrongDirection(head: UInt16)
    /// Rings not where the spec's alignment puts them, or a size that is not a power of two.
    case badLayout(String)
    /// The ring or a buffer is outside any DMA mapping (or the mapping forbids the access).
    case memory(DMAError)
    /// The device is being reset or stopped: the access was not made (not the driver's fault).
    case stopped

    public var description: String {
        switch self {
        case let .availableIndexJump(from, to): "available index jumped from \(from) to \(to)"
        case let .headOutOfRange(head): "chain head \(head) outside the table"
        case let .nextOutOfRange(next): "next \(next) outside the table"
        case let .loop(head): "chain \(head) loops"
        case let .badIndirectTable(head): "chain \(head): bad indirect table"
        case let .nestedIndirect(head): "chain \(head): nested indirect table"
        case let .indirectNotNegotiated(head): "chain \(head): indirect descriptor without INDIRECT_DESC"
        case let .lengthOverflow(head): "chain \(head): total length overflows"
        case let .wrongDirection(head): "chain \(head): descriptor direction"
        case let .badLayout(why): "queue layout: \(why)"
        case let .memory(error): "guest memory: \(error)"
        case .stopped: "stopped"
        }
    }
}

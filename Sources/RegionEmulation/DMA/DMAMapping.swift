import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// Client memory mapped into this process: unmapped when the last reference goes, so a pin that
/// outlives its table entry can never touch freed address space.
final class MappedMemory: @unchecked Sendable { // Immutable after init; munmap happens once, in deinit.
    let base: UnsafeMutableRawPointer
    let length: Int

    init(base: UnsafeMutableRawPointer, length: Int) {
        self.base = base
        self.length = length
    }

    deinit { munmap(base, length) }
}

/// One DMA_MAP: an IOVA range, what the device may do with it, and how to reach it.
/// Mutable fields are guarded by the owning `DMASpace`'s lock.
public final class DMAMapping: @unchecked Sendable { // See above: `pins`, `removing`, `dirty` under DMASpace.lock.
    public let iova: UInt64
    public let size: UInt64
    public let flags: DMAMapFlags
    /// The mmap of the client's fd; nil for a message-mode (fd-less) mapping.
    let memory: MappedMemory?
    /// Where `iova` lies in `memory` (the fd offset rounded down to a page leaves this remainder).
    let memoryOffset: Int
    let fileOffset: UInt64
    let fileIdentity: FileIdentity?

    var pins = 0
    var removing = false
    /// Pages written by the device since the bitmap was last cleared, at `DMASpace.pageSize`.
    var dirty: [UInt64] = []

    struct FileIdentity: Equatable {
        let device: UInt64
        let inode: UInt64
    }

    init(iova: UInt64, size: UInt64, flags: DMAMapFlags, memory: MappedMemory?, memoryOffset: Int,
         fileOffset: UInt64, fileIdentity: FileIdentity?) {
        self.iova = iova
        self.size = size
        self.flags = flags
        self.memory = memory
        self.memoryOffset = memoryOffset
        self.fileOffset = fileOffset
        self.fileIdentity = fileIdentity
    }

    public var end: UInt64 { iova + size }
    public var isMessageMode: Bool { memory == nil }

    func hostAddress(_ address: UInt64) -> UnsafeMutableRawPointer {
        memory!.base + memoryOffset + Int(address - iova)
    }

    func markDirty(_ address: UInt64, _ length: Int, pageShift: Int) {
        guard length > 0 else { return }
        let pages = Int((size + (UInt64(1) << pageShift) - 1) >> pageShift)
        if dirty.isEmpty { dirty = Array(repeating: 0, count: (pages + 63) / 64) }
        let first = Int((address - iova) >> pageShift)
        let last = Int((address - iova + UInt64(length) - 1) >> pageShift)
        for page in first...last { dirty[page / 64] |= 1 << UInt64(page % 64) }
    }
}

/// What the outside sees of a mapping.
public struct DMAMappingInfo: Sendable, Equatable {
    public var iova: UInt64
    public var size: UInt64
    public var flags: DMAMapFlags
    public var hasFileDescriptor: Bool
    public var pins: Int
}

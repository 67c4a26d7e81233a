import CLinux
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// Client memory mapped into this process: unmapped when the last reference goes, so a pin that
/// outlives its table entry can never touch freed address space.
///
/// The range is under the fault guard (`clinux_fault_guard_register`): if the client shrinks the
/// file under it, a touched page past the new end reads as zeros instead of raising a fatal SIGBUS,
/// and the memory counts as `faulted` from then on, so the DMA layer refuses it with EFAULT.
final class MappedMemory: @unchecked Sendable { // Immutable after init; munmap happens once, in deinit.
    let base: UnsafeMutableRawPointer
    let length: Int
    let guardSlot: Int

    init(base: UnsafeMutableRawPointer, length: Int, protection: CInt) {
        self.base = base
        self.length = length
        guardSlot = clinux_fault_guard_register(base, length, protection)
    }

    /// A page of this memory faulted (the client's file shrank under it).
    var faulted: Bool { clinux_fault_guard_faults(guardSlot) > 0 }

    deinit {
        clinux_fault_guard_unregister(guardSlot)
        munmap(base, length)
    }
}

/// A mapping as the table's lookups see it, in 8 bytes, so that at 65,535 mappings the keys and
/// these entries (1 MiB together) stay in cache where whole records would not. The `DMAMapping`
/// itself is the table's payload, read by pins, dirty marking and unmaps, and by a lookup only for
/// a mapping too odd to fit here. Guarded by the space's lock.
///
/// Bits: `removing` at 63, the map flags at 60-62, `escaped` at 59. A compact entry (a page-aligned
/// host address below 2^47, a size that is a whole number of pages up to 64 GiB: every mapping QEMU
/// makes but huge guest RAM) keeps the host page at 24-58 (0 for message mode: page 0 is never
/// mapped) and the page count - 1 at 0-23. An escaped entry keeps only the flags and `removing`;
/// its size and host address are the mapping's.
struct DMATableEntry {
    private var bits: UInt64

    private static var pageCountBits: UInt64 { 24 }
    private static var hostPageShift: UInt64 { 24 }
    private static var hostPageBits: UInt64 { 35 }
    private static var escapedBit: UInt64 { 1 << 59 }
    private static var flagsShift: UInt64 { 60 }
    private static var removingBit: UInt64 { 1 << 63 }

    init(_ mapping: DMAMapping) {
        precondition(mapping.flags.rawValue & ~DMAMapFlags.known.rawValue == 0)
        bits = UInt64(mapping.flags.rawValue) << Self.flagsShift
        let pageMask = UInt64(DMASpace.pageSize - 1)
        let host = UInt64(UInt(bitPattern: mapping.host))
        let pages = mapping.size >> DMASpace.pageShift
        if mapping.size & pageMask == 0, pages - 1 < 1 << Self.pageCountBits,
           host & pageMask == 0, host >> DMASpace.pageShift < 1 << Self.hostPageBits {
            bits |= (host >> DMASpace.pageShift) << Self.hostPageShift | (pages - 1)
        } else {
            bits |= Self.escapedBit
        }
    }

    /// The size and host address are the mapping's (`DMASpace.resolveLocked`), not here.
    @inline(__always)
    var isEscaped: Bool { bits & Self.escapedBit != 0 }

    /// The last address mapped, for a compact entry whose mapping starts at `start` (the table's
    /// key). Not the end, which may be 2^64.
    @inline(__always)
    func last(_ start: UInt64) -> UInt64 {
        start + ((bits & ((1 << Self.pageCountBits) - 1)) << DMASpace.pageShift | UInt64(DMASpace.pageSize - 1))
    }

    /// The host address of a compact entry's first byte; nil for a message-mode mapping.
    @inline(__always)
    var host: UnsafeMutableRawPointer? {
        UnsafeMutableRawPointer(bitPattern: UInt((bits >> Self.hostPageShift) & ((1 << Self.hostPageBits) - 1)) << DMASpace.pageShift)
    }

    var flags: DMAMapFlags { DMAMapFlags(rawValue: UInt32(truncatingIfNeeded: bits >> Self.flagsShift) & DMAMapFlags.known.rawValue) }

    /// An unmap is under way (waiting for pins, or given up on them): no new access, no repeat map.
    var removing: Bool {
        get { bits & Self.removingBit != 0 }
        set { bits = newValue ? bits | Self.removingBit : bits & ~Self.removingBit }
    }
}

/// One DMA_MAP: an IOVA range, what the device may do with it, and how to reach it.
/// Mutable fields are guarded by the owning `DMASpace`'s lock.
public final class DMAMapping: @unchecked Sendable { // See above: `pins` under DMASpace.lock, `dirty` atomic.
    /// The first client address mapped.
    public let iova: UInt64
    /// Bytes mapped.
    public let size: UInt64
    /// What the device may do: READ, WRITE.
    public let flags: DMAMapFlags
    /// The mmap of the client's fd; nil for a message-mode (fd-less) mapping.
    let memory: MappedMemory?
    /// Where `iova` lies in `memory` (the fd offset rounded down to a page leaves this remainder).
    let memoryOffset: Int
    /// The host address of `iova`; nil in message mode.
    let host: UnsafeMutableRawPointer?
    let fileOffset: UInt64
    let fileIdentity: FileIdentity?

    var pins = 0
    /// Pages written by the device since the bitmap was last cleared, one bit per `DMASpace.pageSize`
    /// page; set and cleared with atomic operations, so writers need no lock.
    let dirty: UnsafeMutablePointer<UInt64>
    let dirtyWords: Int

    struct FileIdentity: Equatable {
        let device: UInt64
        let inode: UInt64
    }

    /// Nil when the dirty bitmap cannot be reserved (the size is checked by `DMASpace.map` first).
    init?(iova: UInt64, size: UInt64, flags: DMAMapFlags, memory: MappedMemory?, memoryOffset: Int,
         fileOffset: UInt64, fileIdentity: FileIdentity?) {
        self.iova = iova
        self.size = size
        self.flags = flags
        self.memory = memory
        self.memoryOffset = memoryOffset
        host = memory.map { $0.base + memoryOffset }
        self.fileOffset = fileOffset
        self.fileIdentity = fileIdentity
        let pages = Int((size + UInt64(DMASpace.pageSize) - 1) / UInt64(DMASpace.pageSize))
        dirtyWords = (pages + 63) / 64
        if dirtyWords <= Self.heapBitmapWords {
            dirty = .allocate(capacity: dirtyWords)
            dirty.initialize(repeating: 0, count: dirtyWords)
        } else {
            // A large mapping (guest RAM): the bitmap is reserved, not committed; only the words of
            // pages the device writes take memory. (Small ones stay on the heap: an mmap each would
            // run into vm.max_map_count long before 65,535 mappings.)
            let raw = mmap(nil, dirtyWords * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            guard let raw, raw != MAP_FAILED else { return nil }
            dirty = raw.bindMemory(to: UInt64.self, capacity: dirtyWords)
        }
    }

    /// Bitmaps up to 4 KiB (mappings up to 128 MiB) are allocated on the heap.
    static let heapBitmapWords = 512

    deinit {
        if dirtyWords <= Self.heapBitmapWords { dirty.deallocate() } else { munmap(dirty, dirtyWords * 8) }
    }

    /// The last address mapped (a mapping may reach 2^64, so its end may not fit in 64 bits).
    public var last: UInt64 { iova + (size - 1) }
    /// No fd came with the map: the device reaches it with DMA_READ and DMA_WRITE messages.
    public var isMessageMode: Bool { memory == nil }
    /// The client's file shrank under this mapping: it is not to be used any more.
    var isFaulted: Bool { memory?.faulted ?? false }

    /// Marks `[address, address + length)` dirty. Lock-free: any thread, any time.
    @usableFromInline
    func markDirty(_ address: UInt64, _ length: Int) {
        Self.markDirty(dirty, offset: address - iova, length)
    }

    /// Sets the bits of the pages covering `[offset, offset + length)` of a mapping in `dirty`. A word
    /// whose bits are all set already is only read: a device rewriting the same pages (rings,
    /// buffers) takes no locked instruction. Skipping is safe: a report that clears the bits between
    /// the check and the write is the same as one that clears them right after a locked OR.
    @inlinable @inline(__always)
    static func markDirty(_ dirty: UnsafeMutablePointer<UInt64>, offset: UInt64, _ length: Int) {
        guard length > 0 else { return }
        let first = Int(offset >> DMASpace.pageShift)
        let last = Int((offset + UInt64(length) - 1) >> DMASpace.pageShift)
        if first == last {
            setBits(dirty + first / 64, 1 << UInt64(first % 64))
            return
        }
        var page = first
        while page <= last {
            let word = page / 64
            let bit = page % 64
            let span = min(64 - bit, last - page + 1)
            let bits = span == 64 ? UInt64.max : ((UInt64(1) << UInt64(span)) - 1) << UInt64(bit)
            setBits(dirty + word, bits)
            page += span
        }
    }

    @inlinable @inline(__always)
    static func setBits(_ word: UnsafeMutablePointer<UInt64>, _ bits: UInt64) {
        if clinux_atomic_load_u64(word) & bits != bits { clinux_atomic_or_u64(word, bits) }
    }

    /// The dirty bits of word `word` within `mask`; with `clear`, taken atomically (a page written
    /// meanwhile stays dirty for the next report, never lost).
    func dirtyBits(word: Int, mask: UInt64, clear: Bool) -> UInt64 {
        (clear ? clinux_atomic_and_u64(dirty + word, ~mask) : clinux_atomic_load_u64(dirty + word)) & mask
    }
}

/// What the outside sees of a mapping.
public struct DMAMappingInfo: Sendable, Equatable {
    /// The first client address mapped.
    public var iova: UInt64
    /// Bytes mapped.
    public var size: UInt64
    /// READ and WRITE as the client mapped it.
    public var flags: DMAMapFlags
    /// Whether an fd came with it (mmap-backed) or not (message mode).
    public var hasFileDescriptor: Bool
    /// Pins the device holds on it now; an unmap waits for them.
    public var pins: Int
}

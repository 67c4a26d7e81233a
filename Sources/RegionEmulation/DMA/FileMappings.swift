import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// One mmap per client file (and protection), shared by every DMA mapping into that file.
///
/// QEMU maps all of a guest's RAM sections, and with a vIOMMU up to 65,535 small windows, from a
/// handful of memfds. One mmap per DMA_MAP would cost a system call each and cannot even reach the
/// spec's 65,535 mappings: Linux allows 65,530 VMAs per process by default (`vm.max_map_count`).
/// Here a file is mapped once, whole, and a DMA mapping is a window into it; the mmap goes away
/// with the last mapping that uses it.
struct FileMappings {
    struct Key: Hashable {
        let device: UInt64
        let inode: UInt64
        let protection: CInt
    }

    private struct Entry {
        weak var memory: MappedMemory?
    }

    private var entries: [Key: Entry] = [:]

    /// A mapping of `fd` (a regular file of `fileSize` bytes) that covers `[0, end)`.
    mutating func memory(for key: Key, fd: OwnedFileDescriptor, fileSize: UInt64, end: UInt64) throws(DMAError) -> MappedMemory {
        // A faulted mmap (the file shrank under it) is not reused: the file may have grown back.
        if let memory = entries[key]?.memory, UInt64(memory.length) >= end, !memory.faulted { return memory }
        if entries.count > 64 { entries = entries.filter { $0.value.memory != nil } }
        let length = Int((fileSize + UInt64(DMASpace.pageSize) - 1) & ~UInt64(DMASpace.pageSize - 1))
        let memory = try MappedMemory.map(fd: fd, offset: 0, length: length, protection: key.protection)
        entries[key] = Entry(memory: memory)
        return memory
    }
}

extension MappedMemory {
    /// `mmap(MAP_SHARED)` of `length` bytes at a page-aligned `offset` of `fd`.
    static func map(fd: OwnedFileDescriptor, offset: UInt64, length: Int, protection: CInt) throws(DMAError) -> MappedMemory {
        let base = mmap(nil, length, protection, MAP_SHARED, fd.rawValue, off_t(Int64(bitPattern: offset)))
        guard let base, base != MAP_FAILED else { throw .mapFailed(Errno(rawValue: errno)) }
        return MappedMemory(base: base, length: length, protection: protection)
    }
}

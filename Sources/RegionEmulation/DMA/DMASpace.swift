import CLinux
import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// The device's view of client memory, fed by DMA_MAP / DMA_UNMAP (spec "VFIO_USER_DMA_MAP").
///
/// The server's counterpart of the kernel's `vfio_pin_pages`/`vfio_unpin_pages` for mediated
/// devices: a device model pins an IOVA range and gets host buffers it may use directly, or copies
/// through `read`/`write`, which also reach fd-less (message-mode) regions with DMA_READ/DMA_WRITE.
///
/// Thread safety: the session thread maps and unmaps while device threads pin and copy. A pinned
/// mapping stays mapped: DMA_UNMAP first tells the device models (`onUnmap`, like the kernel's
/// DMA-unmap notifier), then waits for every pin on the range to be released before it returns, so
/// nothing touches client memory after the client was told it is unmapped.
public final class DMASpace: @unchecked Sendable { // All mutable state is guarded by `lock`.
    /// The page size mappings are tracked in (dirty bitmaps, alignment checks).
    public static let pageSize = 4096
    @usableFromInline static var pageShift: Int { 12 }
    /// The spec's default `max_dma_maps`, which this server advertises.
    public static let defaultMaxMappings = 65535
    /// The largest DMA_MAP accepted: 4 PiB (52 address bits).
    public static let maxMappingSize: UInt64 = 1 << 52

    /// The most mappings a client may hold; one more is ENOSPC.
    public let maxMappings: Int
    let lock = ConditionLock()
    typealias Table = SortedChunkMap<DMATableEntry, Unmanaged<DMAMapping>>
    /// The mappings by IOVA. The table holds a reference to each `DMAMapping` (its payload): whoever
    /// takes one out releases it. Lookups read it through `inPlace`.
    var table = Table()
    /// Short pins (`withPinned`, copies) in flight, counted per space rather than per mapping so a
    /// lookup writes nothing but this: two counters, new pins go to `shortEpoch & 1`; an unmap flips
    /// the epoch once its mappings are marked removing and waits for the other counter to drain.
    /// Short pins are short by contract: if an unmap gives up on one (10 s) and a later unmap flips
    /// the epoch back, that later one does not wait for the pin it gave up on.
    var shortPins = (0, 0)
    var shortEpoch = 0
    /// DMA_LOGGING_START's page size and ranges while dirty logging is on (see DMALogging.swift).
    var logging: DMALogging?
    var fileMappings = FileMappings()
    var channel: DMAMessageChannel?
    var observers: [Int: @Sendable (UInt64, UInt64) -> Void] = [:]
    var nextObserver = 0

    /// An empty space.
    public init(maxMappings: Int = DMASpace.defaultMaxMappings) {
        self.maxMappings = maxMappings
    }

    deinit { table.forEach { $2.release() } }

    // MARK: The client side: DMA_MAP / DMA_UNMAP

    /// Records a mapping. With an fd, the range is reachable through an mmap of it (MAP_SHARED,
    /// protection from READ/WRITE: the whole file, shared by every mapping into it, see
    /// `FileMappings`; for other mmap-able fds the range with its offset rounded down to a page);
    /// without an fd it is a message-mode region.
    ///
    /// An exact repeat of an existing mapping (same range, flags and file position) succeeds and
    /// changes nothing, as libvfio-user does; any other overlap is EEXIST.
    public func map(_ request: DMAMapRequest, fd: OwnedFileDescriptor?) throws(DMAError) {
        guard request.flags.rawValue & ~DMAMapFlags.known.rawValue == 0 else {
            throw .invalid("unknown DMA_MAP flags 0x\(String(request.flags.rawValue, radix: 16))")
        }
        guard !request.flags.isEmpty else { throw .invalid("DMA_MAP without READ or WRITE") }
        guard request.size > 0 else { throw .invalid("DMA_MAP of size 0") }
        guard request.address <= UInt64.max - request.size + 1, request.offset <= UInt64.max - request.size else {
            throw .invalid("DMA_MAP range overflows 64 bits")
        }
        // No machine has more memory than this (x86-64 physical addresses stop at 52 bits); a larger
        // map is a client's mistake, and its dirty bitmap alone would not fit in the address space.
        guard request.size <= Self.maxMappingSize else { throw .invalid("DMA_MAP size 0x\(String(request.size, radix: 16)) exceeds 2^52") }
        let lastByte = request.address + (request.size - 1)

        var identity: DMAMapping.FileIdentity?
        var memory: MappedMemory?
        var memoryOffset = 0
        if let fd {
            var status = stat()
            guard fstat(fd.rawValue, &status) == 0 else { throw .mapFailed(Errno(rawValue: errno)) }
            identity = .init(device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
            let isRegular = status.st_mode & S_IFMT == S_IFREG
            if isRegular, request.offset + request.size > UInt64(status.st_size) {
                // Touching pages past the end of a file raises SIGBUS: refuse up front.
                throw .invalid("DMA_MAP range ends at \(request.offset + request.size), past the fd's \(status.st_size) bytes")
            }
            guard request.size <= UInt64(Int.max / 2) else { throw .invalid("DMA_MAP size too large") }
            if duplicate(of: request, identity: identity) != nil { return }
            try checkCapacityAndOverlap(request.address, lastByte)
            let protection = (request.flags.contains(.read) ? PROT_READ : 0) | (request.flags.contains(.write) ? PROT_WRITE : 0)
            if isRegular {
                // Regular files (memfd, hugetlbfs, /dev/shm): one shared mmap per file.
                let key = FileMappings.Key(device: identity!.device, inode: identity!.inode, protection: protection)
                memory = try lock.withLock { () throws(DMAError) in
                    try fileMappings.memory(for: key, fd: fd, fileSize: UInt64(status.st_size), end: request.offset + request.size)
                }
                memoryOffset = Int(request.offset)
            } else {
                // Anything else mmap-able gets its own mapping of just this range.
                let alignedOffset = request.offset & ~UInt64(Self.pageSize - 1)
                memoryOffset = Int(request.offset - alignedOffset)
                let length = (memoryOffset + Int(request.size) + Self.pageSize - 1) & ~(Self.pageSize - 1)
                memory = try MappedMemory.map(fd: fd, offset: alignedOffset, length: length, protection: protection)
            }
        } else {
            if duplicate(of: request, identity: nil) != nil { return }
            try checkCapacityAndOverlap(request.address, lastByte)
        }
        guard let mapping = DMAMapping(iova: request.address, size: request.size, flags: request.flags, memory: memory,
                                       memoryOffset: memoryOffset, fileOffset: request.offset, fileIdentity: identity) else {
            throw .mapFailed(.noMemory)
        }
        try lock.withLock { () throws(DMAError) in
            // Only the session maps, but check again under the lock rather than assume it.
            try overlapCheckLocked(request.address, lastByte)
            table.insert(request.address, DMATableEntry(mapping), .passRetained(mapping))
        }
    }

    func duplicate(of request: DMAMapRequest, identity: DMAMapping.FileIdentity?) -> DMAMapping? {
        lock.withLock {
            guard let existing = mappingLocked(startingAt: request.address), existing.size == request.size,
                  existing.flags == request.flags, existing.fileIdentity == identity,
                  identity == nil || existing.fileOffset == request.offset else { return nil }
            return existing
        }
    }

    /// `body` given the table where it lies. A shared access to a struct stored in a class copies
    /// it (a retain and release of each of its arrays); an exclusive one does not. `body` changes
    /// nothing. Lock held.
    @inline(__always)
    func inPlace<R>(_ body: (inout Table) -> R) -> R { body(&table) }

    /// The mapping at `index` of the table. Lock held.
    @inline(__always)
    func mappingLocked(at index: Table.Index) -> DMAMapping {
        inPlace { $0.payload(at: index) }.takeUnretainedValue()
    }

    /// The mapping that starts at `iova`, unless an unmap of it is under way.
    func mappingLocked(startingAt iova: UInt64) -> DMAMapping? {
        guard let index = inPlace({ table in table.index(of: iova).flatMap { table.value(at: $0).removing ? nil : $0 } }) else { return nil }
        return mappingLocked(at: index)
    }

    func checkCapacityAndOverlap(_ first: UInt64, _ last: UInt64) throws(DMAError) {
        try lock.withLock { () throws(DMAError) in
            guard table.count < maxMappings else { throw .tooManyMappings(maxMappings) }
            try overlapCheckLocked(first, last)
        }
    }

    func overlapCheckLocked(_ first: UInt64, _ last: UInt64) throws(DMAError) {
        let (below, above) = inPlace { ($0.floorEntry(first), $0.ceiling(first)?.key) }
        if let below, resolveLocked(below.key, below.value, below.index).last >= first {
            throw .overlaps(address: first, size: last - first + 1)
        }
        if let above, above <= last {
            throw .overlaps(address: first, size: last - first + 1)
        }
    }

    /// Removes the mapping that exactly matches the request (or every mapping with
    /// `VFIO_DMA_UNMAP_FLAG_ALL`), after device models released their pins on it.
    ///
    /// `waitForRelease` is called while pins remain, with a predicate that says whether they are gone;
    /// it returns false when it gives up (the unmap then fails with EBUSY and the range stays
    /// inaccessible). The session passes a waiter that keeps reading replies from the socket, so a
    /// device thread blocked on a DMA message reply cannot deadlock an unmap.
    public func unmap(_ request: DMAUnmapRequest,
                      waitForRelease: ((_ released: () -> Bool) -> Bool)? = nil) throws(DMAError) {
        if request.flags.contains(.getDirtyBitmap) {
            throw .invalid("DMA_UNMAP with the migration-v1 dirty bitmap is not supported")
        }
        guard request.flags.rawValue & ~DMAUnmapFlags.all.rawValue == 0 else {
            throw .invalid("unknown DMA_UNMAP flags 0x\(String(request.flags.rawValue, radix: 16))")
        }
        let victims: [DMAMapping] = try lock.withLock { () throws(DMAError) in
            if request.flags.contains(.all) {
                guard request.address == 0, request.size == 0 else {
                    throw .invalid("DMA_UNMAP ALL needs address 0 and size 0")
                }
                return table.entries.map { $0.payload.takeUnretainedValue() }
            }
            guard let mapping = mappingLocked(startingAt: request.address), mapping.size == request.size else {
                throw .noSuchMapping(address: request.address, size: request.size)
            }
            return [mapping]
        }
        try remove(victims, waitForRelease: waitForRelease)
    }

    /// Removes every mapping (a lost connection).
    public func removeAll(waitForRelease: ((_ released: () -> Bool) -> Bool)? = nil) {
        let victims = lock.withLock { table.entries.map { $0.payload.takeUnretainedValue() } }
        try? remove(victims, waitForRelease: waitForRelease)
    }

    func remove(_ victims: [DMAMapping], waitForRelease: ((_ released: () -> Bool) -> Bool)?) throws(DMAError) {
        guard !victims.isEmpty else { return }
        let (pinned, shortParity): ([DMAMapping], Int) = lock.withLock {
            for mapping in victims { table.modify(mapping.iova) { $0.removing = true } }
            // Short pins taken from now on cannot be on a victim; wait for those taken before.
            let parity = shortEpoch & 1
            shortEpoch += 1
            return (victims.filter { $0.pins > 0 }, parity)
        }
        let shortDrained = { [unowned self] in (shortParity == 0 ? shortPins.0 : shortPins.1) == 0 }
        if !pinned.isEmpty || !lock.withLock(shortDrained) {
            let observers = lock.withLock { Array(self.observers.values) }
            for mapping in pinned { for observer in observers { observer(mapping.iova, mapping.size) } }
            let released = { [lock] in lock.withLock { pinned.allSatisfy { $0.pins == 0 } && shortDrained() } }
            let done = waitForRelease.map { $0(released) } ?? waitForPins(pinned, shortDrained, milliseconds: 10_000)
            if !done {
                let held = lock.withLock { pinned.first { $0.pins > 0 } }
                // Those still pinned stay in the table, marked removing: no new access, no reuse. A
                // short pin names no mapping: while one taken before the unmap is out, all stay.
                lock.withLock {
                    guard shortDrained() else { return }
                    for mapping in victims where mapping.pins == 0 { table.remove(mapping.iova)?.payload.release() }
                }
                throw .pinsHeld(address: held?.iova ?? 0, pins: held?.pins ?? 0)
            }
        }
        lock.withLock { for mapping in victims { table.remove(mapping.iova)?.payload.release() } }
    }

    func waitForPins(_ pinned: [DMAMapping], _ shortDrained: () -> Bool, milliseconds: Int) -> Bool {
        let deadline = monotonicNanoseconds() + UInt64(milliseconds) * 1_000_000
        return lock.withLock {
            while pinned.contains(where: { $0.pins > 0 }) || !shortDrained() {
                let now = monotonicNanoseconds()
                guard now < deadline else { return false }
                lock.wait(milliseconds: Int((deadline - now) / 1_000_000) + 1)
            }
            return true
        }
    }

    // MARK: Inspection

    /// Mappings held now.
    public var mappingCount: Int { lock.withLock { table.count } }

    /// Whether a map is of guest RAM that the device reaches only by messages: writable, without an
    /// fd. (Read-only maps without one are a client's ROMs, as QEMU's with shared RAM.)
    public static func isRAMByMessages(flags: DMAMapFlags, hasFileDescriptor: Bool) -> Bool {
        !hasFileDescriptor && flags.contains(.write)
    }

    /// Whether the client mapped guest RAM that the device reaches only by messages. Walks every
    /// mapping: for rare questions (a driver reading the features), not for each access.
    public var reachesRAMByMessages: Bool {
        lock.withLock {
            table.entries.contains {
                let mapping = $0.payload.takeUnretainedValue()
                return Self.isRAMByMessages(flags: mapping.flags, hasFileDescriptor: !mapping.isMessageMode)
            }
        }
    }

    /// Every mapping, by address, for status reports.
    public var mappings: [DMAMappingInfo] {
        lock.withLock {
            table.entries.map {
                let mapping = $0.payload.takeUnretainedValue()
                return DMAMappingInfo(iova: $0.key, size: mapping.size, flags: mapping.flags,
                                      hasFileDescriptor: !mapping.isMessageMode, pins: mapping.pins)
            }
        }
    }
}

import CLinux
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
    public static let pageSize = 4096
    @usableFromInline static var pageShift: Int { 12 }
    /// The spec's default `max_dma_maps`, which this server advertises.
    public static let defaultMaxMappings = 65535
    /// The largest DMA_MAP accepted: 4 PiB (52 address bits).
    public static let maxMappingSize: UInt64 = 1 << 52

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
    private var fileMappings = FileMappings()
    private var channel: DMAMessageChannel?
    private var observers: [Int: @Sendable (UInt64, UInt64) -> Void] = [:]
    private var nextObserver = 0

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

    private func duplicate(of request: DMAMapRequest, identity: DMAMapping.FileIdentity?) -> DMAMapping? {
        lock.withLock {
            guard let existing = mappingLocked(startingAt: request.address), existing.size == request.size,
                  existing.flags == request.flags, existing.fileIdentity == identity,
                  identity == nil || existing.fileOffset == request.offset else { return nil }
            return existing
        }
    }

    /// `body` given the table where it lies. A shared access to a struct stored in a class copies
    /// it, a retain and release of each of its seven arrays (perf: about half of a one-mapping
    /// lookup); an exclusive one does not. `body` changes nothing. Lock held.
    @inline(__always)
    private func inPlace<R>(_ body: (inout Table) -> R) -> R { body(&table) }

    /// The mapping at `index` of the table. Lock held.
    @inline(__always)
    private func mappingLocked(at index: Table.Index) -> DMAMapping {
        inPlace { $0.payload(at: index) }.takeUnretainedValue()
    }

    /// The mapping that starts at `iova`, unless an unmap of it is under way.
    private func mappingLocked(startingAt iova: UInt64) -> DMAMapping? {
        guard let index = inPlace({ table in table.index(of: iova).flatMap { table.value(at: $0).removing ? nil : $0 } }) else { return nil }
        return mappingLocked(at: index)
    }

    private func checkCapacityAndOverlap(_ first: UInt64, _ last: UInt64) throws(DMAError) {
        try lock.withLock { () throws(DMAError) in
            guard table.count < maxMappings else { throw .tooManyMappings(maxMappings) }
            try overlapCheckLocked(first, last)
        }
    }

    private func overlapCheckLocked(_ first: UInt64, _ last: UInt64) throws(DMAError) {
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

    private func remove(_ victims: [DMAMapping], waitForRelease: ((_ released: () -> Bool) -> Bool)?) throws(DMAError) {
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

    private func waitForPins(_ pinned: [DMAMapping], _ shortDrained: () -> Bool, milliseconds: Int) -> Bool {
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

    // MARK: The device side

    /// Registers a callback told about an unmap of a range with live pins (iova, size), before the
    /// unmap waits for them. It runs on the session thread and must release (or arrange to release)
    /// the device's pins on that range.
    @discardableResult
    public func onUnmap(_ observer: @escaping @Sendable (UInt64, UInt64) -> Void) -> Int {
        lock.withLock {
            nextObserver += 1
            observers[nextObserver] = observer
            return nextObserver
        }
    }

    public func removeObserver(_ token: Int) {
        lock.withLock { observers[token] = nil }
    }

    /// Where fd-less regions are reached (the session, while a client is attached).
    public func setMessageChannel(_ channel: DMAMessageChannel?) {
        lock.withLock { self.channel = channel }
    }

    /// Pins `[iova, iova + length)` for `access` and returns host buffers covering it in order
    /// (several when it spans adjacent mappings). Writes mark the range dirty.
    public func pin(_ iova: UInt64, length: Int, access: DMAAccess) throws(DMAError) -> DMAPin {
        guard length > 0 else { return DMAPin(space: self, iova: iova, segments: [], mappings: []) }
        guard !Self.wraps(iova, length) else { throw .notMapped(0) }
        return try lock.withLock { () throws(DMAError) in
            var segments: [UnsafeMutableRawBufferPointer] = []
            var mappings: [DMAMapping] = []
            var address = iova
            var remaining = UInt64(length)
            while remaining > 0 {
                let (start, last, host, index) = try lookupLocked(address, access: access)
                guard let host else { throw .messageMode(address) }
                let chunk = min(remaining, last - address + 1)
                segments.append(UnsafeMutableRawBufferPointer(start: host + Int(address - start), count: Int(chunk)))
                mappings.append(mappingLocked(at: index))
                address &+= chunk
                remaining -= chunk
            }
            for (mapping, segment) in zip(mappings, segments) {
                mapping.pins += 1
                if access.contains(.write) {
                    let start = mapping.iova + UInt64(segment.baseAddress! - mapping.host!)
                    mapping.markDirty(start, segment.count)
                }
            }
            return DMAPin(space: self, iova: iova, segments: segments, mappings: mappings)
        }
    }

    /// Pins the whole mapping that contains `iova`, for a device thread's translation cache. Nil for
    /// a message-mode (fd-less) mapping, which cannot be pinned. Nothing is marked dirty: the holder
    /// marks what it writes (`PinnedMapping.markDirty`).
    public func pinMapping(containing iova: UInt64) throws(DMAError) -> PinnedMapping? {
        try lock.withLock { () throws(DMAError) in
            // No access asked: the holder checks the flags itself (`PinnedMapping.flags`).
            let (_, _, host, index) = try lookupLocked(iova, access: [])
            guard host != nil else { return nil } // message mode
            let mapping = mappingLocked(at: index)
            mapping.pins += 1
            return PinnedMapping(pin: DMAPin(space: self, iova: mapping.iova, segments: [], mappings: [mapping]), mapping: mapping)
        }
    }

    /// Runs `body` with the host buffer of `[iova, iova + length)`, pinned for the duration: the
    /// allocation-free path for device hot loops (a range within one mapping; one that spans
    /// mappings is pinned with `pin`). Writes mark the range dirty.
    /// Inlinable so that the generic body is specialised in the device's module.
    @inlinable
    public func withPinned<R>(_ iova: UInt64, length: Int, access: DMAAccess,
                              _ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        let (parity, host) = try acquire(iova, length: length, access: access)
        defer { releaseShort(parity) }
        return try body(UnsafeMutableRawBufferPointer(start: host, count: length))
    }

    /// Pins one mapping's range for `withPinned`: a short pin (see `shortPins`).
    @usableFromInline
    func acquire(_ iova: UInt64, length: Int, access: DMAAccess) throws(DMAError) -> (parity: Int, host: UnsafeMutableRawPointer) {
        try lock.withLock { () throws(DMAError) in
            let (start, last, host, index) = try lookupLocked(iova, access: access)
            guard let host else { throw .messageMode(iova) }
            guard UInt64(length) <= last - iova + 1 else { throw .notMapped(last &+ 1) }
            if access.contains(.write) { mappingLocked(at: index).markDirty(iova, length) }
            return (takeShortPinLocked(), host + Int(iova - start))
        }
    }

    private func takeShortPinLocked() -> Int {
        let parity = shortEpoch & 1
        if parity == 0 { shortPins.0 += 1 } else { shortPins.1 += 1 }
        return parity
    }

    @usableFromInline
    func releaseShort(_ parity: Int) {
        lock.withLock {
            let left: Int
            if parity == 0 { shortPins.0 -= 1; left = shortPins.0 } else { shortPins.1 -= 1; left = shortPins.1 }
            // An unmap may be waiting for the older counter to drain.
            if left == 0 && parity != shortEpoch & 1 { lock.broadcast() }
        }
    }

    func release(_ mappings: [DMAMapping]) {
        lock.withLock {
            var wake = false
            for mapping in mappings {
                mapping.pins -= 1
                wake = wake || mapping.pins == 0 // an unmap may be waiting for it
            }
            if wake { lock.broadcast() }
        }
    }

    /// `count` bytes from `iova` would wrap past 2^64 (a guest's descriptor may say so): they reach nothing.
    static func wraps(_ iova: UInt64, _ count: Int) -> Bool { count > 0 && UInt64(count - 1) > UInt64.max - iova }

    /// The mapping that maps `address`: its IOVA (the table's key), last address, host address (nil
    /// in message mode) and place in the table. Reads the table's keys and entries only, unless the
    /// entry is escaped or a page of some client file ever faulted.
    @inline(__always)
    private func lookupLocked(_ address: UInt64, access: DMAAccess) throws(DMAError)
        -> (iova: UInt64, last: UInt64, host: UnsafeMutableRawPointer?, index: Table.Index) {
        guard let (index, iova, entry) = inPlace({ table in table.noteLookup(); return table.floorEntry(address) }), !entry.removing else {
            throw .notMapped(address)
        }
        let (last, host) = resolveLocked(iova, entry, index)
        guard address <= last else { throw .notMapped(address) }
        if access.contains(.read) && !entry.flags.contains(.read) { throw .accessDenied(address: address, write: false) }
        if access.contains(.write) && !entry.flags.contains(.write) { throw .accessDenied(address: address, write: true) }
        if clinux_fault_guard_any() != 0 && mappingLocked(at: index).isFaulted { throw .memoryGone(address) }
        return (iova, last, host, index)
    }

    /// The last address and host address (nil in message mode) of the mapping at `index`, whose key
    /// is `start`: from its entry, or from the mapping when the entry is escaped. Lock held.
    @inline(__always)
    private func resolveLocked(_ start: UInt64, _ entry: DMATableEntry, _ index: Table.Index)
        -> (last: UInt64, host: UnsafeMutableRawPointer?) {
        guard entry.isEscaped else { return (entry.last(start), entry.host) }
        let mapping = mappingLocked(at: index)
        return (mapping.last, mapping.host)
    }

    /// Copies client memory at `iova` into `buffer`: directly from mmapped regions, with DMA_READ
    /// messages (split by the client's `max_data_xfer_size`) from fd-less ones.
    public func read(_ iova: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(DMAError) {
        try copy(iova, count: buffer.count, access: .read) { (offset, host, count) throws(DMAError) in
            let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[offset ..< offset + count])
            if let host {
                piece.copyMemory(from: UnsafeRawBufferPointer(start: host, count: count))
            } else {
                try messageChannel().read(iova + UInt64(offset), into: piece)
            }
        }
    }

    /// Copies `data` into client memory at `iova` (and marks the pages dirty).
    public func write(_ iova: UInt64, from data: UnsafeRawBufferPointer) throws(DMAError) {
        try copy(iova, count: data.count, access: .write) { (offset, host, count) throws(DMAError) in
            let piece = UnsafeRawBufferPointer(rebasing: data[offset ..< offset + count])
            if let host {
                host.copyMemory(from: piece.baseAddress!, byteCount: count)
            } else {
                try messageChannel().write(iova + UInt64(offset), from: piece)
            }
        }
    }

    private func messageChannel() throws(DMAError) -> DMAMessageChannel {
        guard let channel = lock.withLock({ channel }) else {
            throw .channel(.socketNotConnected, "no client attached for message-mode DMA")
        }
        return channel
    }

    /// Walks the mappings under `[iova, iova + count)`, pinning each piece of an mmapped one for the
    /// duration of `body` so that an unmap cannot pull the memory away mid-copy.
    private func copy(_ iova: UInt64, count: Int, access: DMAAccess,
                      _ body: (Int, UnsafeMutableRawPointer?, Int) throws(DMAError) -> Void) throws(DMAError) {
        guard !Self.wraps(iova, count) else { throw .notMapped(0) }
        var offset = 0
        while offset < count {
            let address = iova &+ UInt64(offset)
            let (mapping, chunk, host, parity) = try lock.withLock { () throws(DMAError) in
                let (start, last, host, index) = try lookupLocked(address, access: access)
                let chunk = Int(min(UInt64(count - offset), last - address + 1))
                let mapping = mappingLocked(at: index)
                guard let host else { return (mapping, chunk, nil as UnsafeMutableRawPointer?, -1) }
                if access.contains(.write) { mapping.markDirty(address, chunk) }
                return (mapping, chunk, host + Int(address - start), takeShortPinLocked())
            }
            if let host {
                defer { releaseShort(parity) }
                try body(offset, host, chunk)
                // The copy itself cannot fail; a page that vanished under it was read as zeros.
                guard !mapping.isFaulted else { throw .memoryGone(address) }
            } else {
                let maxTransfer = try messageChannel().maxTransferSize
                var done = 0
                while done < chunk {
                    let piece = min(chunk - done, maxTransfer)
                    try body(offset + done, nil, piece)
                    done += piece
                }
                if access.contains(.write) {
                    mapping.markDirty(address, chunk)
                }
            }
            offset += chunk
        }
    }

    // MARK: Inspection

    public var mappingCount: Int { lock.withLock { table.count } }

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

/// The direction of a device access to client memory.
public struct DMAAccess: OptionSet, Sendable {
    public let rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// The device reads client memory (needs the mapping's READ flag).
    @inlinable public static var read: DMAAccess { DMAAccess(rawValue: 1) }
    /// The device writes client memory (needs WRITE).
    @inlinable public static var write: DMAAccess { DMAAccess(rawValue: 2) }
}

/// A pinned range: host buffers a device may read or write directly until `release()`.
public final class DMAPin: @unchecked Sendable { // `released` is only touched under the space's lock via release().
    public let iova: UInt64
    public let segments: [UnsafeMutableRawBufferPointer]
    private let mappings: [DMAMapping]
    private weak var space: DMASpace?
    private var released = false

    init(space: DMASpace, iova: UInt64, segments: [UnsafeMutableRawBufferPointer], mappings: [DMAMapping]) {
        self.space = space
        self.iova = iova
        self.segments = segments
        self.mappings = mappings
    }

    public var length: Int { segments.reduce(0) { $0 + $1.count } }

    /// Gives the range back; the mapping may then be unmapped. Idempotent.
    public func release() {
        guard !released else { return }
        released = true
        space?.release(mappings)
    }

    deinit { release() }
}

/// A whole mapping pinned for a device thread: valid until `pin.release()`.
public struct PinnedMapping: @unchecked Sendable { // The mapping's mutable state is only touched under the space's lock or atomically.
    public let pin: DMAPin
    let mapping: DMAMapping

    public var iova: UInt64 { mapping.iova }
    /// The last address mapped (not the end: it may be 2^64).
    public var last: UInt64 { mapping.last }
    public var flags: DMAMapFlags { mapping.flags }
    /// The host address of `iova` (which must lie in the mapping).
    @inlinable public func host(_ iova: UInt64) -> UnsafeMutableRawPointer { hostBase + Int(iova - self.iova) }
    @usableFromInline var hostBase: UnsafeMutableRawPointer { mapping.host! }
    /// Marks device writes dirty (lock-free).
    public func markDirty(_ iova: UInt64, _ length: Int) { mapping.markDirty(iova, length) }
}

/// How message-mode DMA reaches the client: DMA_READ / DMA_WRITE on its socket.
public protocol DMAMessageChannel: AnyObject, Sendable {
    /// The client's `max_data_xfer_size`: the largest count one message may carry.
    var maxTransferSize: Int { get }
    func read(_ address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(DMAError)
    func write(_ address: UInt64, from data: UnsafeRawBufferPointer) throws(DMAError)
    /// Waits until `condition` holds. On the thread that reads the client's socket this keeps
    /// routing replies to DMA messages, so a device thread blocked on one can finish. False on timeout.
    func waitServicing(until condition: () -> Bool, milliseconds: Int) -> Bool
}

extension DMASpace {
    /// Waits until `condition` holds, for a device that must let its own threads reach a safe point
    /// (a reset, an unmap) while they may be waiting on message-mode DMA. Safe on any thread.
    public func waitServicing(until condition: () -> Bool, milliseconds: Int = 10_000) -> Bool {
        if let channel = lock.withLock({ channel }) {
            return channel.waitServicing(until: condition, milliseconds: milliseconds)
        }
        return pollUntil(condition, milliseconds: milliseconds)
    }
}

/// Polls `condition` every 100 µs until it holds or `milliseconds` pass.
public func pollUntil(_ condition: () -> Bool, milliseconds: Int) -> Bool {
    let deadline = monotonicNanoseconds() + UInt64(milliseconds) * 1_000_000
    while !condition() {
        guard monotonicNanoseconds() < deadline else { return false }
        usleep(100)
    }
    return true
}

import CLinux
import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// What device models do with client memory: pin it, reach it in place, copy to and from it.
extension DMASpace {
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

    /// Stops calling the observer `onUnmap` returned `token` for.
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

    func takeShortPinLocked() -> Int {
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
    func lookupLocked(_ address: UInt64, access: DMAAccess) throws(DMAError)
        -> (iova: UInt64, last: UInt64, host: UnsafeMutableRawPointer?, index: Table.Index) {
        guard let (index, iova, entry) = inPlace({ $0.floorEntry(address) }), !entry.removing else {
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
    func resolveLocked(_ start: UInt64, _ entry: DMATableEntry, _ index: Table.Index)
        -> (last: UInt64, host: UnsafeMutableRawPointer?) {
        guard entry.isEscaped else { return (entry.last(start), entry.host) }
        let mapping = mappingLocked(at: index)
        return (mapping.last, mapping.host)
    }

    /// Copies client memory at `iova` into `buffer`: directly from mmapped regions, with DMA_READ
    /// messages (split by the client's `max_data_xfer_size`) from fd-less ones, all sent before the
    /// first reply is awaited.
    public func read(_ iova: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(DMAError) {
        try read([(iova, buffer)])
    }

    /// Copies several ranges of client memory, as `read` does each; the DMA_READs of the fd-less
    /// parts are all sent before the first reply is awaited, so they cost one round trip together.
    public func read(_ ranges: [(address: UInt64, buffer: UnsafeMutableRawBufferPointer)]) throws(DMAError) {
        var messages: [(address: UInt64, buffer: UnsafeMutableRawBufferPointer)] = []
        for (iova, buffer) in ranges {
            try copy(iova, count: buffer.count, access: .read) { (offset, host, count) throws(DMAError) in
                let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[offset ..< offset + count])
                if let host {
                    piece.copyMemory(from: UnsafeRawBufferPointer(start: host, count: count))
                } else {
                    messages.append((iova + UInt64(offset), piece))
                }
            }
        }
        if !messages.isEmpty { try messageChannel().read(messages) }
    }

    /// Copies `data` into client memory at `iova` (and marks the pages dirty).
    public func write(_ iova: UInt64, from data: UnsafeRawBufferPointer) throws(DMAError) {
        try store(iova, data, posted: false)
    }

    /// `write`, without waiting where the memory is reached by messages: a DMA_WRITE that asks for
    /// no reply, as a PCI Express memory write is posted. It is done once any later read returns
    /// (the client handles messages in order), so a device reads something back (a virtqueue, the
    /// driver's `used_event`) before it raises an interrupt that announces the data. Errors the
    /// client meets are not seen. With mmapped memory this is `write`.
    public func post(_ iova: UInt64, from data: UnsafeRawBufferPointer) throws(DMAError) {
        try store(iova, data, posted: true)
    }

    private func store(_ iova: UInt64, _ data: UnsafeRawBufferPointer, posted: Bool) throws(DMAError) {
        try copy(iova, count: data.count, access: .write) { (offset, host, count) throws(DMAError) in
            let piece = UnsafeRawBufferPointer(rebasing: data[offset ..< offset + count])
            if let host {
                host.copyMemory(from: piece.baseAddress!, byteCount: count)
            } else if posted {
                try messageChannel().post(iova + UInt64(offset), from: piece)
            } else {
                try messageChannel().write(iova + UInt64(offset), from: piece)
            }
        }
    }

    func messageChannel() throws(DMAError) -> DMAMessageChannel {
        guard let channel = lock.withLock({ channel }) else {
            throw .channel(.socketNotConnected, "no client attached for message-mode DMA")
        }
        return channel
    }

    /// Walks the mappings under `[iova, iova + count)`, pinning each piece of an mmapped one for the
    /// duration of `body` so that an unmap cannot pull the memory away mid-copy.
    func copy(_ iova: UInt64, count: Int, access: DMAAccess,
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
}

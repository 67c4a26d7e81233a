import CLinux
import RegionEmulation
import VfioUserProto

/// How a virtqueue reaches guest memory. With a translation cache, mmapped guest memory is
/// reached through pinned pointers (ring indexes with acquire/release ordering); fd-less memory
/// through DMA_READ / DMA_WRITE messages, batched by `MessageStaging`. All values little-endian.
///
/// `stopRequested` is asked before every access: once the device is told to stop, the datapath
/// makes no further access, even in the middle of a chain.
public struct GuestMemory: Sendable {
    public let dma: DMASpace
    /// Keeps the cache alive; `cacheReference` calls it without a retain and release per access.
    let cache: DMATranslationCache?
    private let cacheReference: Unmanaged<DMATranslationCache>?
    let stopRequested: @Sendable () -> Bool
    /// What is reached by messages goes through here.
    let staging: MessageStaging

    public init(dma: DMASpace, cache: DMATranslationCache? = nil, stopRequested: @escaping @Sendable () -> Bool = { false }) {
        self.dma = dma
        self.cache = cache
        cacheReference = cache.map { .passUnretained($0) }
        self.stopRequested = stopRequested
        staging = MessageStaging(dma: dma)
    }

    /// A pointer to mmapped guest memory, or nil for a copy (which first checks for a stop: a DMA
    /// message may take long). Pointer accesses are checked for a stop once per chain, in `check`.
    @inline(__always)
    private func host(_ address: UInt64, _ length: Int, _ access: DMAAccess) throws(VirtqueueError) -> UnsafeMutableRawPointer? {
        if let cacheReference {
            let result = cacheReference._withUnsafeGuaranteedRef { cache in
                Result { () throws(DMAError) in try cache.host(address, length: length, access: access) }
            }
            switch result {
            case let .success(p): if let p { return p }
            case let .failure(error): throw .memory(error)
            }
        }
        if stopRequested() { throw .stopped }
        return nil
    }

    /// Throws `.stopped` when the device was told to stop.
    @inline(__always)
    func checkStop() throws(VirtqueueError) {
        if stopRequested() { throw .stopped }
    }

    /// A ring index or flags word: an acquire load.
    func load16(_ address: UInt64) throws(VirtqueueError) -> UInt16 {
        if let p = try host(address, 2, .read) { return UInt16(littleEndian: clinux_load_acquire_u16(p)) }
        var value: UInt16 = 0
        try copy(from: address, into: &value)
        return UInt16(littleEndian: value)
    }

    /// A ring index or event word: a release store.
    func store16(_ address: UInt64, _ value: UInt16) throws(VirtqueueError) {
        if let p = try host(address, 2, .write) { clinux_store_release_u16(p, value.littleEndian); return }
        try copy(value.littleEndian, to: address)
    }

    func store32(_ address: UInt64, _ value: UInt32) throws(VirtqueueError) {
        if let p = try host(address, 4, .write) { p.storeBytes(of: value.littleEndian, as: UInt32.self); return }
        try copy(value.littleEndian, to: address)
    }

    func descriptor(_ address: UInt64) throws(VirtqueueError) -> VirtqueueDescriptor {
        if let p = try host(address, 16, .read) { return VirtqueueDescriptor(UnsafeRawBufferPointer(start: p, count: 16)) }
        var bytes: (UInt64, UInt64) = (0, 0)
        try copy(from: address, into: &bytes)
        return withUnsafeBytes(of: &bytes) { VirtqueueDescriptor($0) }
    }

    private func copy<T>(from address: UInt64, into value: inout T) throws(VirtqueueError) {
        let failure: DMAError? = withUnsafeMutableBytes(of: &value) { raw in
            do throws(DMAError) { try staging.read(address, into: raw); return nil } catch { return error }
        }
        if let failure { throw .memory(failure) }
    }

    /// Whether `[address, address + count)` is reached by DMA messages rather than mapped.
    func isReachedByMessages(_ address: UInt64, count: Int) throws(VirtqueueError) -> Bool {
        try host(address, count, .read) == nil
    }

    /// Reads the 16-bit values at `indexes`, then a queue's ranges ahead (its table and entries), all
    /// in one round trip; for memory reached by messages (see `isReachedByMessages`).
    func load16(_ indexes: [UInt64], prefetching parts: [(address: UInt64, count: Int)], queue: UInt64) throws(VirtqueueError) -> [UInt16] {
        do { return try staging.prefetch(parts, queue: queue, behind: indexes) } catch { throw .memory(error) }
    }

    /// Reads an indirect table ahead where memory is reached by messages; nothing where it is mapped.
    func prefetchIndirect(_ address: UInt64, count: Int) throws(VirtqueueError) {
        guard count > 0, try isReachedByMessages(address, count: count) else { return }
        do { try staging.prefetchIndirect(address, count: count) } catch { throw .memory(error) }
    }

    /// Forgets what a queue read ahead: the driver may have rewritten it.
    func forgetPrefetched(queue: UInt64) { staging.forget(queue: queue) }

    /// Sends the writes held back to be combined (the queue does when it publishes).
    func flush() throws(VirtqueueError) {
        do { try staging.flush() } catch { throw .memory(error) }
    }

    private func copy<T>(_ value: T, to address: UInt64) throws(VirtqueueError) {
        var value = value
        let failure: DMAError? = withUnsafeBytes(of: &value) { raw in
            do throws(DMAError) { try staging.write(address, from: raw); return nil } catch { return error }
        }
        if let failure { throw .memory(failure) }
    }

    /// Copies the buffers of a chain (device-readable part) into `destination`; returns bytes copied.
    /// Buffers reached by messages are read together, one round trip for the chain.
    public func gather(_ buffers: [DescriptorChain.Buffer], into destination: UnsafeMutableRawBufferPointer) throws(VirtqueueError) -> Int {
        var offset = 0
        var byMessage: [(address: UInt64, buffer: UnsafeMutableRawBufferPointer)] = []
        for buffer in buffers {
            let count = min(buffer.length, destination.count - offset)
            guard count > 0 else { break }
            if let p = try host(buffer.address, count, .read) {
                (destination.baseAddress! + offset).copyMemory(from: p, byteCount: count)
            } else {
                byMessage.append((buffer.address, UnsafeMutableRawBufferPointer(rebasing: destination[offset ..< offset + count])))
            }
            offset += count
        }
        if !byMessage.isEmpty {
            do { try staging.read(byMessage) } catch { throw .memory(error) }
        }
        return offset
    }

    /// Copies a chain's device-readable buffers into a new array of `length` bytes.
    public func gather(_ buffers: [DescriptorChain.Buffer], length: Int) throws(VirtqueueError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: length)
        let failure: VirtqueueError? = bytes.withUnsafeMutableBytes { raw in
            do throws(VirtqueueError) { _ = try gather(buffers, into: raw); return nil } catch { return error }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Copies `bytes` into a chain's device-writable buffers; returns bytes written.
    public func scatter(_ bytes: [UInt8], into buffers: [DescriptorChain.Buffer]) throws(VirtqueueError) -> Int {
        let result: Result<Int, VirtqueueError> = bytes.withUnsafeBytes { raw in
            do throws(VirtqueueError) { return .success(try scatter(raw, into: buffers)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Copies `source` into a chain's device-writable buffers, in order; returns bytes written.
    public func scatter(_ source: UnsafeRawBufferPointer, into buffers: [DescriptorChain.Buffer]) throws(VirtqueueError) -> Int {
        var offset = 0
        for buffer in buffers where offset < source.count {
            let count = min(buffer.length, source.count - offset)
            if let p = try host(buffer.address, count, .write) {
                p.copyMemory(from: source.baseAddress! + offset, byteCount: count)
            } else {
                do { try staging.write(buffer.address, from: UnsafeRawBufferPointer(rebasing: source[offset ..< offset + count])) }
                catch { throw .memory(error) }
            }
            offset += count
        }
        return offset
    }
}

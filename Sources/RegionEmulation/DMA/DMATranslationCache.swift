import Synchronization
import VfioUserProto

/// Long-lived pins of whole mappings held by one device thread, so that its accesses to client
/// memory are a range check and a pointer instead of a locked table lookup each.
///
/// This is the kernel's pin-and-notify model for mediated devices: the pins keep the mappings
/// alive, and an unmap of a pinned mapping first notifies the device (`requestRelease`, from the
/// session thread, via `DMASpace.onUnmap`), which lets go at its next safe point
/// (`releaseIfRequested`) before the unmap completes. Writes are marked dirty as they are made.
/// Message-mode mappings are never cached: `host` returns nil for them and the caller copies with
/// DMA messages instead.
public final class DMATranslationCache: @unchecked Sendable { // Used by its owner thread only, except the atomic flag.
    public let dma: DMASpace
    /// What a lookup needs, as plain values (no reference counting on the hot path).
    private struct Slot {
        let start: UInt64
        let last: UInt64 // not the end, which may be 2^64
        let base: UnsafeMutableRawPointer
        let readable: Bool
        let writable: Bool
        let dirty: UnsafeMutablePointer<UInt64>
    }

    private var slots: [Slot] = []
    /// The pins that keep `slots` valid, in the same order.
    private var pins: [PinnedMapping] = []
    private let releaseRequested = Atomic<Bool>(false)
    static let capacity = 8

    public init(dma: DMASpace) {
        self.dma = dma
        slots.reserveCapacity(Self.capacity)
        pins.reserveCapacity(Self.capacity)
    }

    /// The host address of `[iova, iova + length)` when it lies in one mmapped mapping that allows
    /// `access`, or nil when it is in a message-mode mapping (or crosses mappings): copy instead.
    /// Writes are marked dirty.
    @inline(__always)
    public func host(_ iova: UInt64, length: Int, access: DMAAccess) throws(DMAError) -> UnsafeMutableRawPointer? {
        let found: Int? = slots.withUnsafeBufferPointer { slots in
            for i in slots.indices where iova >= slots[i].start && iova <= slots[i].last { return i }
            return nil
        }
        if let found { return try allowed(found, iova, length, access) }
        guard let pinned = try dma.pinMapping(containing: iova) else { return nil }
        if slots.count == Self.capacity {
            slots.removeFirst()
            pins.removeFirst().pin.release()
        }
        slots.append(Slot(start: pinned.iova, last: pinned.last, base: pinned.host(pinned.iova),
                          readable: pinned.flags.contains(.read), writable: pinned.flags.contains(.write), dirty: pinned.mapping.dirty))
        pins.append(pinned)
        return try allowed(slots.count - 1, iova, length, access)
    }

    @inline(__always)
    private func allowed(_ index: Int, _ iova: UInt64, _ length: Int, _ access: DMAAccess) throws(DMAError) -> UnsafeMutableRawPointer? {
        let slot = slots[index]
        guard UInt64(length) <= slot.last - iova + 1 else { return nil } // crosses into the next mapping: copy
        if access.contains(.read) && !slot.readable { throw .accessDenied(address: iova, write: false) }
        if access.contains(.write) {
            guard slot.writable else { throw .accessDenied(address: iova, write: true) }
            DMAMapping.markDirty(slot.dirty, offset: iova - slot.start, length)
        }
        return slot.base + Int(iova - slot.start)
    }

    /// From any thread: an unmap wants the pins back.
    public func requestRelease() { releaseRequested.store(true, ordering: .sequentiallyConsistent) }

    /// From the owner thread, between operations: gives the pins back if an unmap asked.
    public func releaseIfRequested() {
        guard releaseRequested.load(ordering: .relaxed), releaseRequested.exchange(false, ordering: .sequentiallyConsistent) else { return }
        releaseAll()
    }

    public func releaseAll() {
        for pinned in pins { pinned.pin.release() }
        pins.removeAll(keepingCapacity: true)
        slots.removeAll(keepingCapacity: true)
    }

    deinit { releaseAll() }
}

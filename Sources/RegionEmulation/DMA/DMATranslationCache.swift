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
    /// The space translated from.
    public let dma: DMASpace
    /// What a lookup needs, as plain values (no reference counting on the hot path).
    @usableFromInline
    struct Slot {
        @usableFromInline let start: UInt64
        @usableFromInline let last: UInt64 // not the end, which may be 2^64
        @usableFromInline let base: UnsafeMutableRawPointer?
        @usableFromInline let readable: Bool
        @usableFromInline let writable: Bool
        @usableFromInline let dirty: UnsafeMutablePointer<UInt64>?

        /// Matches no address (start above last).
        static var empty: Slot { Slot(start: .max, last: 0, base: nil, readable: false, writable: false, dirty: nil) }
    }

    @usableFromInline static var capacity: Int { 8 }
    /// `capacity` slots, empty ones never matching. A fixed buffer behind a constant pointer: the
    /// lookup, inlined into the device's code, reads it without exclusivity checks or retains.
    @usableFromInline let slots: UnsafeMutablePointer<Slot>
    /// The pins that keep `slots` valid, by slot.
    private var pins: [PinnedMapping?]
    /// The slot the next miss replaces (oldest first).
    private var nextVictim = 0
    private let releaseRequested = Atomic<Bool>(false)

    /// An empty cache over `dma`; its owner thread is the only one that uses it.
    public init(dma: DMASpace) {
        self.dma = dma
        slots = .allocate(capacity: Self.capacity)
        slots.initialize(repeating: .empty, count: Self.capacity)
        pins = Array(repeating: nil, count: Self.capacity)
    }

    /// The host address of `[iova, iova + length)` when it lies in one mmapped mapping that allows
    /// `access`, or nil when it is in a message-mode mapping (or crosses mappings): copy instead.
    /// Writes are marked dirty. Inlinable: a hit is a few compares in the device's own code.
    @inlinable @inline(__always)
    public func host(_ iova: UInt64, length: Int, access: DMAAccess) throws(DMAError) -> UnsafeMutableRawPointer? {
        for i in 0..<Self.capacity where iova >= slots[i].start && iova <= slots[i].last {
            return try allowed(slots[i], iova, length, access)
        }
        return try miss(iova, length: length, access: access)
    }

    @usableFromInline
    func miss(_ iova: UInt64, length: Int, access: DMAAccess) throws(DMAError) -> UnsafeMutableRawPointer? {
        guard let pinned = try dma.pinMapping(containing: iova) else { return nil }
        let victim = nextVictim
        nextVictim = (nextVictim + 1) % Self.capacity
        pins[victim]?.pin.release()
        pins[victim] = pinned
        slots[victim] = Slot(start: pinned.iova, last: pinned.last, base: pinned.host(pinned.iova), readable: pinned.flags.contains(.read),
                             writable: pinned.flags.contains(.write), dirty: pinned.mapping.dirty)
        return try allowed(slots[victim], iova, length, access)
    }

    @inlinable @inline(__always)
    func allowed(_ slot: Slot, _ iova: UInt64, _ length: Int, _ access: DMAAccess) throws(DMAError) -> UnsafeMutableRawPointer? {
        guard UInt64(length) <= slot.last - iova + 1 else { return nil } // crosses into the next mapping: copy
        if access.contains(.read) && !slot.readable { throw .accessDenied(address: iova, write: false) }
        if access.contains(.write) {
            guard slot.writable else { throw .accessDenied(address: iova, write: true) }
            DMAMapping.markDirty(slot.dirty!, offset: iova - slot.start, length)
        }
        return slot.base! + Int(iova - slot.start)
    }

    /// From any thread: an unmap wants the pins back.
    public func requestRelease() { releaseRequested.store(true, ordering: .sequentiallyConsistent) }

    /// From the owner thread, between operations: gives the pins back if an unmap asked.
    public func releaseIfRequested() {
        guard releaseRequested.load(ordering: .relaxed), releaseRequested.exchange(false, ordering: .sequentiallyConsistent) else { return }
        releaseAll()
    }

    /// Drops every cached translation and its pin (the device is stopping or an unmap asked).
    public func releaseAll() {
        for i in 0..<Self.capacity {
            slots[i] = .empty
            pins[i]?.pin.release()
            pins[i] = nil
        }
        nextVictim = 0
    }

    deinit {
        releaseAll()
        slots.deallocate()
    }
}

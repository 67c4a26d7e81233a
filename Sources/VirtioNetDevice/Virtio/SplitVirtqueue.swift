import CLinux
import RegionEmulation
import VfioUserProto

/// One descriptor: `{le64 addr; le32 len; le16 flags; le16 next}` (virtio 1.x §2.7.5).
public struct VirtqueueDescriptor: Equatable, Sendable {
    public static let size = 16
    public static let flagNext: UInt16 = 1
    public static let flagWrite: UInt16 = 2
    public static let flagIndirect: UInt16 = 4

    public var address: UInt64
    public var length: UInt32
    public var flags: UInt16
    public var next: UInt16

    public init(address: UInt64, length: UInt32, flags: UInt16 = 0, next: UInt16 = 0) {
        self.address = address
        self.length = length
        self.flags = flags
        self.next = next
    }

    init(_ bytes: UnsafeRawBufferPointer) {
        address = bytes.littleEndian(at: 0)
        length = bytes.littleEndian(at: 8)
        flags = bytes.littleEndian(at: 12)
        next = bytes.littleEndian(at: 14)
    }

    public var isWritable: Bool { flags & Self.flagWrite != 0 }
    public var hasNext: Bool { flags & Self.flagNext != 0 }
    public var isIndirect: Bool { flags & Self.flagIndirect != 0 }
}

/// A chain taken off the available ring: its buffers split by direction, in order.
public struct DescriptorChain: Sendable {
    public struct Buffer: Equatable, Sendable {
        public var address: UInt64
        public var length: Int
        public init(address: UInt64, length: Int) {
            self.address = address
            self.length = length
        }
    }

    public internal(set) var head: UInt16
    /// Buffers the device reads (driver to device), then buffers it writes: the spec's order.
    public var readable: [Buffer] = []
    public var writable: [Buffer] = []

    public var readableLength: Int { readable.reduce(0) { $0 + $1.length } }
    public var writableLength: Int { writable.reduce(0) { $0 + $1.length } }

    public init(head: UInt16) { self.head = head }
}

/// A split virtqueue (virtio 1.x §2.7) in guest memory, reached through the DMA space: descriptor
/// table, available ring (driver to device) and used ring (device to driver).
///
/// Indexes are free-running 16-bit counters that wrap at 65535; a ring slot is `index % size`.
/// Publication follows the spec's ordering: used elements are written before the used index (write
/// barrier), the available index is read before the ring entries it covers (read barrier), and a
/// full barrier separates publishing from reading the driver's notification suppression.
public struct SplitVirtqueue: Sendable {
    public static let maxSize: UInt16 = 32768
    static let availableNoInterrupt: UInt16 = 1
    static let usedNoNotify: UInt16 = 1

    public let size: UInt16
    public let descriptorTable: UInt64
    public let availableRing: UInt64
    public let usedRing: UInt64
    public let eventIndex: Bool
    public let indirect: Bool
    /// The next available-ring entry to take.
    public private(set) var lastAvailable: UInt16 = 0
    /// The used index as last published.
    public private(set) var usedIndex: UInt16 = 0
    /// The used index at the last interrupt decision (EVENT_IDX compares against it).
    private var lastSignalledUsed: UInt16 = 0
    /// The driver's available index as last read.
    public private(set) var availableSeen: UInt16 = 0
    /// What `setNotifications` last wrote (avail_event, or the used ring's flags); nil: unknown.
    private var lastNotificationValue: UInt16?
    /// The driver's interrupt wish (`used_event`, or the available ring's flags) as read along with
    /// its index since the last publish; nil: read it when deciding.
    private var interruptWishSeen: UInt16?

    public init(size: UInt16, descriptorTable: UInt64, availableRing: UInt64, usedRing: UInt64,
                eventIndex: Bool, indirect: Bool) throws(VirtqueueError) {
        guard size > 0, size <= Self.maxSize, size.nonzeroBitCount == 1 else { throw .badLayout("size \(size) is not a power of two up to 32768") }
        guard descriptorTable % 16 == 0, availableRing % 2 == 0, usedRing % 4 == 0 else {
            throw .badLayout("rings misaligned (descriptors 16, available 2, used 4)")
        }
        let parts = Self.footprint(size: size)
        guard descriptorTable <= UInt64.max - UInt64(parts.descriptors), availableRing <= UInt64.max - UInt64(parts.available),
              usedRing <= UInt64.max - UInt64(parts.used) else { throw .badLayout("a ring runs past the end of the address space") }
        self.size = size
        self.descriptorTable = descriptorTable
        self.availableRing = availableRing
        self.usedRing = usedRing
        self.eventIndex = eventIndex
        self.indirect = indirect
    }

    /// Gives back chains taken since `index` (a receive that found too little buffer space).
    public mutating func rewind(to index: UInt16) { lastAvailable = index }

    /// Resumes a queue at saved indexes (migration).
    public mutating func restore(lastAvailable: UInt16, usedIndex: UInt16) {
        self.lastAvailable = lastAvailable
        availableSeen = lastAvailable
        self.usedIndex = usedIndex
        lastSignalledUsed = usedIndex
        lastNotificationValue = nil
        interruptWishSeen = nil
    }

    // Ring layout.
    var availableIndexAddress: UInt64 { availableRing + 2 }
    func availableEntryAddress(_ index: UInt16) -> UInt64 { availableRing + 4 + 2 * UInt64(index & (size - 1)) }
    var usedEventAddress: UInt64 { availableRing + 4 + 2 * UInt64(size) }
    /// Where the driver says whether it wants an interrupt: `used_event`, or the available ring's flags.
    var interruptWishAddress: UInt64 { eventIndex ? usedEventAddress : availableRing }
    var usedIndexAddress: UInt64 { usedRing + 2 }
    func usedEntryAddress(_ index: UInt16) -> UInt64 { usedRing + 4 + 8 * UInt64(index & (size - 1)) }
    var availableEventAddress: UInt64 { usedRing + 4 + 8 * UInt64(size) }

    /// Bytes each part occupies for a queue of `size`: descriptors, available ring, used ring.
    public static func footprint(size: UInt16) -> (descriptors: Int, available: Int, used: Int) {
        (16 * Int(size), 6 + 2 * Int(size), 6 + 8 * Int(size))
    }

    /// The driver's available index.
    public func availableIndex(_ memory: GuestMemory) throws(VirtqueueError) -> UInt16 {
        try memory.load16(availableIndexAddress)
    }

    /// Whether the rings are reached by DMA messages, where every look at them is a round trip.
    public func isReachedByMessages(_ memory: GuestMemory) throws(VirtqueueError) -> Bool {
        try memory.isReachedByMessages(descriptorTable, count: VirtqueueDescriptor.size * Int(size))
    }

    /// How many chains the driver has made available and the device has not taken.
    public mutating func pendingCount(_ memory: GuestMemory) throws(VirtqueueError) -> Int {
        try memory.checkStop()
        memory.forgetPrefetched(queue: descriptorTable)
        let available: UInt16
        if try isReachedByMessages(memory) {
            // One round trip: the index and the driver's interrupt wish, then, in a message sent
            // behind them, the table and the ring's entries, which the client reads after the index
            // as it answers in order (the index orders them, as for a pointer). One message covers
            // both where the available ring follows the table, as Linux lays a ring out.
            let values = try memory.load16([availableIndexAddress, interruptWishAddress],
                                           prefetching: [(descriptorTable, VirtqueueDescriptor.size * Int(size)),
                                                         (availableEntryAddress(0), 2 * Int(size))],
                                           queue: descriptorTable)
            available = values[0]
            interruptWishSeen = values[1]
        } else {
            available = try availableIndex(memory)
        }
        availableSeen = available
        let pending = available &- lastAvailable
        guard pending <= size else { throw .availableIndexJump(from: lastAvailable, to: available) }
        return Int(pending)
    }

    /// Takes the next available chain, or nil when the ring is empty.
    public mutating func pop(_ memory: GuestMemory) throws(VirtqueueError) -> DescriptorChain? {
        var chain = DescriptorChain(head: 0)
        return try pop(into: &chain, memory) ? chain : nil
    }

    /// Whether a chain is available. The driver's index is read again only once the chains it last
    /// announced are taken (as vhost does): that read was an acquire load, which orders the reads of
    /// every entry it covers, so taking them needs neither another read nor a barrier.
    public mutating func hasAvailable(_ memory: GuestMemory) throws(VirtqueueError) -> Bool {
        guard availableSeen == lastAvailable else {
            try memory.checkStop()
            return true
        }
        return try pendingCount(memory) > 0
    }

    /// Takes the next available chain into `chain` (reusing its arrays: no allocation once they have
    /// grown); false when the ring is empty.
    public mutating func pop(into chain: inout DescriptorChain, _ memory: GuestMemory) throws(VirtqueueError) -> Bool {
        guard try hasAvailable(memory) else { return false }
        let head = try memory.load16(availableEntryAddress(lastAvailable))
        try readChain(head: head, into: &chain, memory)
        lastAvailable &+= 1
        return true
    }

    /// Walks the chain starting at `head`, following indirect tables.
    public func readChain(head: UInt16, _ memory: GuestMemory) throws(VirtqueueError) -> DescriptorChain {
        var chain = DescriptorChain(head: head)
        try readChain(head: head, into: &chain, memory)
        return chain
    }

    /// Walks the chain starting at `head` into `chain`, following indirect tables.
    public func readChain(head: UInt16, into chain: inout DescriptorChain, _ memory: GuestMemory) throws(VirtqueueError) {
        guard head < size else { throw .headOutOfRange(head) }
        chain.head = head
        // Popping a chain's few buffers keeps the arrays' storage without the generic
        // replaceSubrange call that removeAll(keepingCapacity:) makes.
        while chain.readable.popLast() != nil {}
        while chain.writable.popLast() != nil {}
        var total: UInt64 = 0
        var table = descriptorTable
        var tableSize = size
        var index = head
        var visited = 0
        var inIndirect = false
        while true {
            visited += 1
            // A chain cannot be longer than its table: past that, it loops.
            guard visited <= Int(inIndirect ? tableSize : size) else { throw .loop(head: head) }
            let descriptor = try memory.descriptor(table + 16 * UInt64(index))
            if descriptor.isIndirect {
                guard indirect else { throw .indirectNotNegotiated(head: head) }
                guard !inIndirect else { throw .nestedIndirect(head: head) }
                guard descriptor.length > 0, descriptor.length % 16 == 0, descriptor.length / 16 <= UInt32(Self.maxSize),
                      !descriptor.hasNext else { throw .badIndirectTable(head: head) }
                inIndirect = true
                table = descriptor.address
                tableSize = UInt16(descriptor.length / 16)
                try memory.prefetchIndirect(table, count: Int(descriptor.length))
                index = 0
                visited = 0
                continue
            }
            total += UInt64(descriptor.length)
            guard total <= UInt64(UInt32.max) else { throw .lengthOverflow(head: head) }
            let buffer = DescriptorChain.Buffer(address: descriptor.address, length: Int(descriptor.length))
            if descriptor.isWritable {
                chain.writable.append(buffer)
            } else {
                guard chain.writable.isEmpty else { throw .wrongDirection(head: head) }
                chain.readable.append(buffer)
            }
            guard descriptor.hasNext else { return }
            guard descriptor.next < tableSize else { throw .nextOutOfRange(descriptor.next) }
            index = descriptor.next
        }
    }

    /// Puts a used element `{id, len}` in the ring without publishing it (see `publishUsed`).
    public mutating func addUsed(head: UInt16, length: UInt32, _ memory: GuestMemory, pending: inout UInt16) throws(VirtqueueError) {
        let address = usedEntryAddress(usedIndex &+ pending)
        try memory.store32(address, UInt32(head))
        try memory.store32(address + 4, length)
        pending &+= 1
    }

    /// Publishes `count` used elements added with `addUsed` by advancing the used index.
    public mutating func publishUsed(_ count: UInt16, _ memory: GuestMemory) throws(VirtqueueError) {
        guard count > 0 else { return }
        clinux_memory_barrier() // elements before the index that exposes them
        usedIndex &+= count
        try memory.store16(usedIndexAddress, usedIndex)
        try memory.flush() // by messages: the elements and the index go out now, posted
        interruptWishSeen = nil // read before the index: it may not answer for these elements
    }

    /// Returns a chain (adds and publishes one used element).
    public mutating func push(head: UInt16, length: UInt32, _ memory: GuestMemory) throws(VirtqueueError) {
        var pending: UInt16 = 0
        try addUsed(head: head, length: length, memory, pending: &pending)
        try publishUsed(pending, memory)
    }

    /// Whether the driver wants an interrupt for what was published since the last decision:
    /// with EVENT_IDX, when used entry number `used_event` was among those just written, i.e.
    /// `used_event` in [old, new) (the wrap-safe test `(new - event - 1) < (new - old)`), otherwise
    /// unless the driver set NO_INTERRUPT. By messages, a look at the ring after the publish has
    /// read the driver's wish already.
    public mutating func needsInterrupt(_ memory: GuestMemory) throws(VirtqueueError) -> Bool {
        clinux_memory_barrier() // the used index is visible before we read the driver's wishes
        let old = lastSignalledUsed
        let new = usedIndex
        guard old != new else { return false }
        lastSignalledUsed = new
        let wish: UInt16
        if let seen = interruptWishSeen { wish = seen } else { wish = try memory.load16(interruptWishAddress) }
        return eventIndex ? Self.needsEvent(event: wish, new: new, old: old) : wish & Self.availableNoInterrupt == 0
    }

    /// `vring_need_event`: whether `event` lies in `[old, new)`, modulo 2^16.
    public static func needsEvent(event: UInt16, new: UInt16, old: UInt16) -> Bool {
        (new &- event &- 1) < (new &- old)
    }

    /// Asks the driver to notify (kick) when it adds chains, or not to bother while the device polls.
    /// With EVENT_IDX this writes `avail_event`: the available index last seen, so that the next
    /// chain the driver adds is kicked (as vhost does; the last one consumed would be wrong while
    /// chains the device could not use yet are still pending). Otherwise the used ring's NO_NOTIFY flag.
    ///
    /// Returns whether it wrote the field. Only then must the caller look at the available index
    /// once more, for chains the driver added before it could see the request: after an earlier
    /// write the caller looked already, and nothing changed since.
    @discardableResult
    public mutating func setNotifications(_ enabled: Bool, _ memory: GuestMemory) throws(VirtqueueError) -> Bool {
        // The field is the device's alone: write it only when it changes (one store less per
        // idle turn, one DMA message less with fd-less memory, and no page dirtied for nothing).
        let value: UInt16? = eventIndex ? (enabled ? max16(availableSeen, lastAvailable) : nil) : (enabled ? 0 : Self.usedNoNotify)
        guard let value, value != lastNotificationValue else { return false }
        try memory.store16(eventIndex ? availableEventAddress : usedRing, value)
        try memory.flush()
        lastNotificationValue = value
        clinux_memory_barrier() // before re-checking the available index
        return true
    }
}

/// The later of two free-running 16-bit indexes.
func max16(_ a: UInt16, _ b: UInt16) -> UInt16 { Int16(bitPattern: a &- b) >= 0 ? a : b }

import CLinux

/// The driver's side of a split virtqueue, in memory the test owns: it writes descriptors and the
/// available ring, reads the used ring (virtio 1.x §2.7.13). Written from the specification alone.
/// One thread drives a queue, so its state skips the runtime's exclusivity checks: the benchmarks
/// measure the device, not the bookkeeping of the guest standing in for it.
public final class DriverQueue {
    public let index: Int
    public let size: UInt16
    public let descriptorTable: UInt64
    public let availableRing: UInt64
    public let usedRing: UInt64
    let memory: GuestRAM
    @exclusivity(unchecked) var freeDescriptors: [UInt16]
    /// The available index as published.
    @exclusivity(unchecked) public private(set) var availableIndex: UInt16 = 0
    /// The next used entry to read.
    @exclusivity(unchecked) public private(set) var lastUsed: UInt16 = 0
    /// What the driver attached to each chain head (returned with the used element), by head.
    @exclusivity(unchecked) var tokens: [Int]
    let eventIndex: Bool

    init(index: Int, size: UInt16, memory: GuestRAM, eventIndex: Bool) {
        self.index = index
        self.size = size
        self.memory = memory
        self.eventIndex = eventIndex
        let (descriptors, available, used) = VirtioSpec.splitRingSizes(size)
        descriptorTable = memory.allocate(descriptors, alignment: 16)
        availableRing = memory.allocate(available, alignment: 2)
        usedRing = memory.allocate(used, alignment: 4)
        freeDescriptors = (0..<size).reversed().map { $0 }
        tokens = Array(repeating: -1, count: Int(size))
    }

    /// Starting point for tests of index wrap-around: both sides move their indexes forward.
    public func startIndexes(at index: UInt16) {
        availableIndex = index
        lastUsed = index
        memory.store16(availableRing + 2, index)
    }

    public var freeCount: Int { freeDescriptors.count }

    /// Writes a chain of buffers (readable ones first), returns its head; nil if out of descriptors.
    @discardableResult
    public func add(_ buffers: [(address: UInt64, length: UInt32, writable: Bool)], token: Int = 0, publish: Bool = true) -> UInt16? {
        guard buffers.count <= freeDescriptors.count, !buffers.isEmpty else { return nil }
        let ids = (0..<buffers.count).map { _ in freeDescriptors.removeLast() }
        for (i, buffer) in buffers.enumerated() {
            let more = i + 1 < buffers.count
            let flags = (more ? VirtioSpec.Descriptor.next : 0) | (buffer.writable ? VirtioSpec.Descriptor.write : 0)
            writeDescriptor(ids[i], VirtioSpec.Descriptor(address: buffer.address, length: buffer.length, flags: flags, next: more ? ids[i + 1] : 0))
        }
        tokens[Int(ids[0])] = token
        makeAvailable(ids[0], publish: publish)
        return ids[0]
    }

    /// Adds a one-buffer chain without publishing it (the benchmarks' allocation-free path).
    @inline(__always)
    public func addSingle(address: UInt64, length: UInt32, writable: Bool, token: Int) -> Bool {
        guard let id = freeDescriptors.popLast() else { return false }
        writeDescriptor(id, VirtioSpec.Descriptor(address: address, length: length, flags: writable ? VirtioSpec.Descriptor.write : 0))
        tokens[Int(id)] = token
        makeAvailable(id, publish: false)
        return true
    }

    /// Counts and frees used elements without building an array (benchmarks), calling `body` per element.
    @inline(__always)
    public func drainUsed(_ body: (UInt16, UInt32, Int) -> Void) -> Int {
        let usedIndex = memory.load16(usedRing + 2)
        clinux_memory_barrier()
        var count = 0
        while lastUsed != usedIndex {
            let entry = usedRing + 4 + 8 * UInt64(lastUsed & (size - 1))
            let head = UInt16(truncatingIfNeeded: memory.load32(entry))
            body(head, memory.load32(entry + 4), Int(head) < tokens.count ? tokens[Int(head)] : -1)
            free(chain: head)
            lastUsed &+= 1
            count += 1
        }
        return count
    }

    /// Adds a chain whose single descriptor points at an indirect table of `buffers`.
    @discardableResult
    public func addIndirect(_ buffers: [(address: UInt64, length: UInt32, writable: Bool)], token: Int = 0) -> UInt16? {
        guard let id = freeDescriptors.popLast() else { return nil }
        let table = memory.allocate(16 * buffers.count, alignment: 16)
        for (i, buffer) in buffers.enumerated() {
            let more = i + 1 < buffers.count
            let flags = (more ? VirtioSpec.Descriptor.next : 0) | (buffer.writable ? VirtioSpec.Descriptor.write : 0)
            memory.storeDescriptor(table + 16 * UInt64(i), VirtioSpec.Descriptor(address: buffer.address, length: buffer.length, flags: flags, next: more ? UInt16(i + 1) : 0))
        }
        writeDescriptor(id, VirtioSpec.Descriptor(address: table, length: UInt32(16 * buffers.count), flags: VirtioSpec.Descriptor.indirect))
        tokens[Int(id)] = token
        makeAvailable(id, publish: true)
        return id
    }

    public func writeDescriptor(_ id: UInt16, _ descriptor: VirtioSpec.Descriptor) {
        memory.storeDescriptor(descriptorTable + 16 * UInt64(id), descriptor)
    }

    /// Puts `head` in the next available slot (and publishes it unless batching).
    public func makeAvailable(_ head: UInt16, publish: Bool = true) {
        memory.store16(availableRing + 4 + 2 * UInt64(availableIndex & (size - 1)), head)
        availableIndex &+= 1
        if publish { publishAvailable() }
    }

    public func publishAvailable() {
        clinux_memory_barrier()
        memory.store16(availableRing + 2, availableIndex)
        clinux_memory_barrier()
    }

    /// Whether the device wants a kick for what was published since `old` (EVENT_IDX's avail_event,
    /// or the used ring's NO_NOTIFY flag).
    public func needsKick(since old: UInt16) -> Bool {
        clinux_memory_barrier()
        if eventIndex {
            let event = memory.load16(usedRing + 4 + 8 * UInt64(size))
            return VirtioSpec.needsEvent(event: event, new: availableIndex, old: old)
        }
        return memory.load16(usedRing) & 1 == 0
    }

    /// Asks for an interrupt at the next used element (EVENT_IDX's used_event), or none at all.
    public func requestInterrupts(_ enabled: Bool) {
        if eventIndex {
            memory.store16(availableRing + 4 + 2 * UInt64(size), enabled ? lastUsed : lastUsed &- 1)
        } else {
            memory.store16(availableRing, enabled ? 0 : 1)
        }
        clinux_memory_barrier()
    }

    /// Used elements not yet collected: (head, written length, token); their descriptors are freed.
    public func collectUsed() -> [(head: UInt16, length: UInt32, token: Int)] {
        let usedIndex = memory.load16(usedRing + 2)
        clinux_memory_barrier()
        var result: [(UInt16, UInt32, Int)] = []
        while lastUsed != usedIndex {
            let entry = usedRing + 4 + 8 * UInt64(lastUsed & (size - 1))
            let head = UInt16(truncatingIfNeeded: memory.load32(entry))
            let length = memory.load32(entry + 4)
            result.append((head, length, Int(head) < tokens.count ? tokens[Int(head)] : -1))
            free(chain: head)
            lastUsed &+= 1
        }
        return result
    }

    private func free(chain head: UInt16) {
        var id = head
        while true {
            let descriptor = memory.loadDescriptor(descriptorTable + 16 * UInt64(id))
            freeDescriptors.append(id)
            guard descriptor.flags & VirtioSpec.Descriptor.next != 0, descriptor.flags & VirtioSpec.Descriptor.indirect == 0 else { return }
            id = descriptor.next
        }
    }

    public var usedIndex: UInt16 { memory.load16(usedRing + 2) }
}

import RegionEmulation
import TestSupport
import Testing
import VfioUserProto
import VirtioNetDevice
@testable import VirtioDriver

/// A driver-side queue and the device-side engine over the same memfd, through a DMA space.
final class QueueBed {
    let ram: GuestRAM
    let dma = DMASpace()
    let memory: GuestMemory
    let driver: DriverQueue
    var device: SplitVirtqueue

    init(size: UInt16 = 8, eventIndex: Bool = true, indirect: Bool = true) throws {
        ram = try GuestRAM(size: 1 << 20)
        try dma.map(DMAMapRequest(flags: [.read, .write], offset: 0, address: ram.base, size: UInt64(ram.size)), fd: ram.memfd.fd)
        memory = GuestMemory(dma: dma)
        driver = DriverQueue(index: 0, size: size, memory: ram, eventIndex: eventIndex)
        device = try SplitVirtqueue(size: size, descriptorTable: driver.descriptorTable, availableRing: driver.availableRing,
                                    usedRing: driver.usedRing, eventIndex: eventIndex, indirect: indirect)
    }

    /// Publishes a raw head (for malformed tables written by hand).
    func makeAvailable(_ head: UInt16) { driver.makeAvailable(head) }
}

@Suite("Split virtqueue engine")
struct SplitVirtqueueTests {
    @Test func aChainComesOffInOrderSplitByDirection() throws {
        let bed = try QueueBed()
        let head = try #require(bed.driver.add([(0x4000_1000, 10, false), (0x4000_2000, 20, false), (0x4000_3000, 30, true)]))
        let chain = try #require(try bed.device.pop(bed.memory))
        #expect(chain.head == head)
        #expect(chain.readable == [.init(address: 0x4000_1000, length: 10), .init(address: 0x4000_2000, length: 20)])
        #expect(chain.writable == [.init(address: 0x4000_3000, length: 30)])
        #expect(try bed.device.pop(bed.memory) == nil)
        try bed.device.push(head: head, length: 30, bed.memory)
        let used = bed.driver.collectUsed()
        #expect(used.count == 1 && used[0].head == head && used[0].length == 30)
        #expect(bed.driver.freeCount == 8)
    }

    @Test func indirectTablesAreFollowed() throws {
        let bed = try QueueBed()
        bed.driver.addIndirect([(0x4000_1000, 12, false), (0x4000_2000, 100, false), (0x4000_3000, 4, true)])
        let chain = try #require(try bed.device.pop(bed.memory))
        #expect(chain.readableLength == 112 && chain.writableLength == 4)
    }

    @Test func indexesWrapAt65535() throws {
        let bed = try QueueBed(size: 4)
        bed.driver.startIndexes(at: 65533)
        bed.device.restore(lastAvailable: 65533, usedIndex: 65533)
        var heads: [UInt16] = []
        for round in 0..<3 {
            for i in 0..<4 { bed.driver.add([(0x4000_0000 + UInt64(i) * 64, 64, false)], publish: false) }
            bed.driver.publishAvailable()
            for _ in 0..<4 {
                let chain = try #require(try bed.device.pop(bed.memory), "round \(round)")
                heads.append(chain.head)
                try bed.device.push(head: chain.head, length: 0, bed.memory)
            }
            #expect(bed.driver.collectUsed().count == 4)
        }
        #expect(bed.device.lastAvailable == 65533 &+ 12 && bed.device.usedIndex == 9)
        #expect(bed.driver.usedIndex == 9)
    }

    @Test(arguments: [
        // (event, new, old, expected): was used entry number `event` among those just written,
        // i.e. is event in [old, new) modulo 2^16?
        (UInt16(5), UInt16(6), UInt16(5), true), (5, 6, 4, true), (4, 6, 5, false), (6, 6, 5, false),
        (0, 1, 0, true), (0, 1, 65535, true), (1, 1, 65535, false), (65535, 2, 65534, true),
        (65534, 2, 65534, true), (65533, 2, 65534, false), (10, 20, 5, true), (25, 20, 5, false),
    ])
    func eventIndexArithmetic(event: UInt16, new: UInt16, old: UInt16, expected: Bool) {
        #expect(SplitVirtqueue.needsEvent(event: event, new: new, old: old) == expected)
    }

    @Test func eventIndexSuppressesInterruptsUntilTheDriverAsks() throws {
        let bed = try QueueBed()
        bed.driver.requestInterrupts(false) // used_event = lastUsed - 1: far away
        bed.driver.add([(0x4000_1000, 8, false)])
        let first = try #require(try bed.device.pop(bed.memory))
        try bed.device.push(head: first.head, length: 0, bed.memory)
        #expect(try bed.device.needsInterrupt(bed.memory) == false)
        _ = bed.driver.collectUsed()
        bed.driver.requestInterrupts(true) // used_event = the next used index
        bed.driver.add([(0x4000_1000, 8, false)])
        let second = try #require(try bed.device.pop(bed.memory))
        try bed.device.push(head: second.head, length: 0, bed.memory)
        #expect(try bed.device.needsInterrupt(bed.memory) == true)
    }

    @Test func theDeviceAsksForKicksThroughAvailEvent() throws {
        let bed = try QueueBed()
        bed.driver.add([(0x4000_1000, 8, false)])
        _ = try bed.device.pop(bed.memory)
        try bed.device.setNotifications(true, bed.memory) // avail_event = 1
        let old = bed.driver.availableIndex
        bed.driver.add([(0x4000_1000, 8, false)])
        #expect(bed.driver.needsKick(since: old))
        let older = bed.driver.availableIndex
        bed.driver.add([(0x4000_1000, 8, false)])
        #expect(!bed.driver.needsKick(since: older)) // the device has not caught up to ask again
    }

    @Test func withoutEventIndexTheFlagsSuppress() throws {
        let bed = try QueueBed(eventIndex: false)
        bed.driver.requestInterrupts(false)
        bed.driver.add([(0x4000_1000, 8, false)])
        let chain = try #require(try bed.device.pop(bed.memory))
        try bed.device.push(head: chain.head, length: 0, bed.memory)
        #expect(try bed.device.needsInterrupt(bed.memory) == false)
        try bed.device.setNotifications(false, bed.memory)
        #expect(!bed.driver.needsKick(since: 0))
    }

    // MARK: Malformed queues: each a typed error, nothing touched outside the mappings.

    @Test func aLoopingChainIsRefused() throws {
        let bed = try QueueBed()
        bed.driver.writeDescriptor(0, VirtioSpec.Descriptor(address: 0x4000_1000, length: 8, flags: VirtioSpec.Descriptor.next, next: 1))
        bed.driver.writeDescriptor(1, VirtioSpec.Descriptor(address: 0x4000_1000, length: 8, flags: VirtioSpec.Descriptor.next, next: 0))
        bed.makeAvailable(0)
        #expect(throws: VirtqueueError.loop(head: 0)) { try bed.device.pop(bed.memory) }
    }

    @Test func headsAndNextsOutsideTheTableAreRefused() throws {
        let bed = try QueueBed()
        bed.makeAvailable(8)
        #expect(throws: VirtqueueError.headOutOfRange(8)) { try bed.device.pop(bed.memory) }
        let other = try QueueBed()
        other.driver.writeDescriptor(0, VirtioSpec.Descriptor(address: 0x4000_1000, length: 8, flags: VirtioSpec.Descriptor.next, next: 9))
        other.makeAvailable(0)
        #expect(throws: VirtqueueError.nextOutOfRange(9)) { try other.device.pop(other.memory) }
    }

    /// The available index is read again only once the chains it announced are taken (as vhost
    /// does); chains published meanwhile come next, in order.
    @Test func theAvailableIndexIsReadOncePerBatch() throws {
        let bed = try QueueBed()
        let first = (0..<2).map { i in bed.driver.add([(0x4000_0000 + UInt64(i) * 64, 64, true)])! }
        #expect(try bed.device.pop(bed.memory)?.head == first[0])
        #expect(bed.device.availableSeen == 2)
        let more = (2..<4).map { i in bed.driver.add([(0x4000_0000 + UInt64(i) * 64, 64, true)])! }
        #expect(try bed.device.pop(bed.memory)?.head == first[1])
        #expect(bed.device.availableSeen == 2, "a chain the last read announced needs no new read")
        #expect(try bed.device.pop(bed.memory)?.head == more[0])
        #expect(bed.device.availableSeen == 4)
        #expect(try bed.device.pop(bed.memory)?.head == more[1])
        #expect(try bed.device.pop(bed.memory) == nil)
    }

    @Test func anAvailableIndexJumpIsRefused() throws {
        let bed = try QueueBed()
        bed.driver.startIndexes(at: 9) // 9 chains "available" in a ring of 8
        #expect(throws: VirtqueueError.availableIndexJump(from: 0, to: 9)) { try bed.device.pop(bed.memory) }
    }

    @Test func badIndirectTablesAreRefused() throws {
        let cases: [(VirtioSpec.Descriptor, VirtqueueError)] = [
            (VirtioSpec.Descriptor(address: 0x4000_1000, length: 24, flags: VirtioSpec.Descriptor.indirect), .badIndirectTable(head: 0)),
            (VirtioSpec.Descriptor(address: 0x4000_1000, length: 0, flags: VirtioSpec.Descriptor.indirect), .badIndirectTable(head: 0)),
            (VirtioSpec.Descriptor(address: 0x4000_1000, length: 16, flags: VirtioSpec.Descriptor.indirect | VirtioSpec.Descriptor.next, next: 1),
             .badIndirectTable(head: 0)),
        ]
        for (descriptor, error) in cases {
            let bed = try QueueBed()
            bed.driver.writeDescriptor(0, descriptor)
            bed.makeAvailable(0)
            #expect(throws: error) { try bed.device.pop(bed.memory) }
        }
        let nested = try QueueBed()
        let table = nested.ram.allocate(16, alignment: 16)
        nested.ram.write(table, [0x00, 0x10, 0, 0x40, 0, 0, 0, 0, 16, 0, 0, 0, 4, 0, 0, 0]) // an indirect inside an indirect
        nested.driver.writeDescriptor(0, VirtioSpec.Descriptor(address: table, length: 16, flags: VirtioSpec.Descriptor.indirect))
        nested.makeAvailable(0)
        #expect(throws: VirtqueueError.nestedIndirect(head: 0)) { try nested.device.pop(nested.memory) }
        let notNegotiated = try QueueBed(indirect: false)
        notNegotiated.driver.addIndirect([(0x4000_1000, 8, false)])
        #expect(throws: VirtqueueError.indirectNotNegotiated(head: 0)) { try notNegotiated.device.pop(notNegotiated.memory) }
    }

    @Test func lengthsThatOverflowFourGiBAreRefused() throws {
        let bed = try QueueBed()
        let head = try #require(bed.driver.add([(0x4000_1000, 0xC000_0000, false), (0x4000_1000, 0xC000_0000, false)]))
        #expect(throws: VirtqueueError.lengthOverflow(head: head)) { try bed.device.pop(bed.memory) }
    }

    @Test func aReadableDescriptorAfterAWritableOneIsRefused() throws {
        let bed = try QueueBed()
        let head = try #require(bed.driver.add([(0x4000_1000, 8, true), (0x4000_2000, 8, false)]))
        #expect(throws: VirtqueueError.wrongDirection(head: head)) { try bed.device.pop(bed.memory) }
    }

    @Test func ringsOutsideEveryMappingAreAMemoryError() throws {
        let bed = try QueueBed()
        var queue = try SplitVirtqueue(size: 8, descriptorTable: 0x9000_0000, availableRing: 0x9000_1000, usedRing: 0x9000_2000,
                                       eventIndex: false, indirect: false)
        #expect(throws: VirtqueueError.memory(.notMapped(0x9000_1002))) { try queue.pop(bed.memory) }
        #expect(throws: VirtqueueError.badLayout("rings misaligned (descriptors 16, available 2, used 4)")) {
            try SplitVirtqueue(size: 8, descriptorTable: 0x4000_0008, availableRing: 0x4000_1000, usedRing: 0x4000_2000, eventIndex: false, indirect: false)
        }
        #expect(throws: VirtqueueError.self) {
            try SplitVirtqueue(size: 12, descriptorTable: 0x4000_0000, availableRing: 0x4000_1000, usedRing: 0x4000_2000, eventIndex: false, indirect: false)
        }
        // A used ring of 8 takes 6 + 64 bytes: at 2^64 - 68 it would end past the top; at 2^64 - 72 it fits.
        #expect(throws: VirtqueueError.badLayout("a ring runs past the end of the address space")) {
            try SplitVirtqueue(size: 8, descriptorTable: 0x4000_0000, availableRing: 0x4000_1000, usedRing: UInt64.max - 67, eventIndex: false, indirect: false)
        }
        #expect(try SplitVirtqueue(size: 8, descriptorTable: 0x4000_0000, availableRing: 0x4000_1000, usedRing: UInt64.max - 71,
                                   eventIndex: false, indirect: false).usedRing == UInt64.max - 71)
    }
}

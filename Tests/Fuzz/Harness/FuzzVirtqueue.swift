import RegionEmulation
import Support
import VfioUserProto
import VirtioNetDevice
#if canImport(Glibc)
import Glibc
#endif

extension FuzzHarness {
    /// A guest is as untrusted as a client: the virtio-net device's split virtqueue engine run over
    /// guest memory that the fuzzer writes, as the datapath runs it.
    ///
    /// The input: byte 0 chooses the queue's size (2 to 256), EVENT_IDX, INDIRECT_DESC and whether
    /// memory is reached through pinned pointers (the translation cache) or copies; bytes 1-6 place
    /// the descriptor table, available and used rings (little-endian 16-bit offsets in units of
    /// 16, 2 and 4 bytes from the base, so they may lie past the memory too); bytes 7-8 the index
    /// the device starts from (as after a migration, so that indexes wrap); the rest is the first
    /// bytes of the 64 KiB of guest memory. Each available chain is taken, its readable buffers
    /// gathered, its writable ones filled and the chain returned, as a NIC does; a chain of two or
    /// more readable bytes is also run as a control-queue command.
    ///
    /// What must hold: no crash and no access outside the mapped memory (AddressSanitizer); every
    /// fault is a `VirtqueueError`, on which the datapath sets NEEDS_RESET; what the engine hands
    /// out stays inside its limits.
    public final class Virtqueue: @unchecked Sendable { // Used by one thread at a time, as libFuzzer does.
        public static let base: UInt64 = 0x1_0000_0000
        public static let memorySize = 64 * 1024
        let memfd: Memfd
        let device: VirtioNetDevice
        private var buffer = [UInt8](repeating: 0, count: 64 * 1024)

        public init() {
            memfd = try! Memfd(size: Self.memorySize)
            device = try! VirtioNetDevice(backend: SinkBackend(), mac: [0x52, 0x54, 0, 0, 0, 1])
        }

        /// What a run did: the chains taken and returned, the acks of the control commands they
        /// carried, and the fault that ended it, if any.
        public struct Outcome: Equatable, Sendable {
            public var taken = 0
            public var acks: [UInt8] = []
            public var fault: VirtqueueError?
            public init(taken: Int = 0, acks: [UInt8] = [], fault: VirtqueueError? = nil) {
                self.taken = taken
                self.acks = acks
                self.fault = fault
            }
        }

        @discardableResult
        public func run(_ data: UnsafeRawBufferPointer) -> Outcome {
            var outcome = Outcome()
            guard data.count >= 9 else { return outcome }
            let flags = data[0]
            let size = UInt16(2) << (flags & 7)
            let eventIndex = flags & 8 != 0, indirect = flags & 16 != 0, cached = flags & 32 != 0
            func offset(_ at: Int, _ unit: UInt64) -> UInt64 { Self.base + unit * UInt64(UInt16(data[at]) | UInt16(data[at + 1]) << 8) }
            let image = UnsafeRawBufferPointer(rebasing: data[9...].prefix(Self.memorySize))
            memfd.base.initializeMemory(as: UInt8.self, repeating: 0, count: Self.memorySize)
            memfd.base.copyMemory(from: image.baseAddress ?? UnsafeRawPointer(memfd.base), byteCount: image.count)
            // A DMA space per input, as per session: pins refer to it weakly, and the side table
            // a weak reference gives a space that lives on is a pointer LeakSanitizer cannot see.
            let dma = DMASpace()
            try! dma.map(DMAMapRequest(flags: [.read, .write], offset: 0, address: Self.base, size: UInt64(Self.memorySize)), fd: memfd.fd)
            let cache = cached ? DMATranslationCache(dma: dma) : nil
            defer { cache?.releaseAll() }
            let memory = GuestMemory(dma: dma, cache: cache)
            guard var queue = try? SplitVirtqueue(size: size, descriptorTable: offset(1, 16), availableRing: offset(3, 2),
                                                 usedRing: offset(5, 4), eventIndex: eventIndex, indirect: indirect) else { return outcome }
            let start = UInt16(data[7]) | UInt16(data[8]) << 8
            queue.restore(lastAvailable: start, usedIndex: start)
            do throws(VirtqueueError) {
                try drain(&queue, memory, indirect: indirect, outcome: &outcome)
            } catch {
                precondition(error != .stopped, "nothing asked the engine to stop")
                outcome.fault = error
            }
            return outcome
        }

        private func drain(_ queue: inout SplitVirtqueue, _ memory: GuestMemory, indirect: Bool, outcome: inout Outcome) throws(VirtqueueError) {
            var chain = DescriptorChain(head: 0)
            for _ in 0..<2 {
                var pending: UInt16 = 0
                var taken = 0
                while taken < 2 * Int(queue.size), try queue.pop(into: &chain, memory) {
                    taken += 1
                    precondition(chain.head < queue.size, "a head outside the table")
                    precondition(chain.readable.count + chain.writable.count <= (indirect ? 2 : 1) * Int(SplitVirtqueue.maxSize),
                                 "a chain longer than its tables")
                    let readable = min(chain.readableLength, buffer.count)
                    let read = try buffer.withUnsafeMutableBytes { bytes in
                        Result { () throws(VirtqueueError) in
                            try memory.gather(chain.readable, into: UnsafeMutableRawBufferPointer(rebasing: bytes[..<readable]))
                        }
                    }.get()
                    precondition(read <= readable)
                    if read >= 2 {
                        outcome.acks.append(device.control(class: buffer[0], command: buffer[1], data: Array(buffer[2 ..< read]),
                                                           features: [.netControlQueue, .netControlRx, .netControlMACAddress]))
                    }
                    let writable = min(chain.writableLength, buffer.count)
                    let written = try buffer.withUnsafeBytes { bytes in
                        Result { () throws(VirtqueueError) in
                            try memory.scatter(UnsafeRawBufferPointer(rebasing: bytes[..<writable]), into: chain.writable)
                        }
                    }.get()
                    precondition(written == writable, "a writable buffer took less than it offered")
                    try queue.addUsed(head: chain.head, length: UInt32(written), memory, pending: &pending)
                    outcome.taken += 1
                }
                let before = queue.usedIndex
                try queue.publishUsed(pending, memory)
                precondition(queue.usedIndex == before &+ pending)
                _ = try queue.needsInterrupt(memory)
                try queue.setNotifications(true, memory)
            }
        }
    }
}

extension FuzzHarness {
    /// Seeds for the virtqueue fuzzer: rings of 8 laid out by hand from the virtio spec (table at
    /// 0, available ring at 0x1000, used ring at 0x2000), with a plain chain, an indirect one that
    /// carries a control command, and a looping chain; through copies and through pointers; and
    /// the two chains made available across the wrap of the indexes (65535 to 1).
    public static var virtqueueSeeds: [(name: String, bytes: [UInt8])] {
        func image(loop: Bool, start: UInt16 = 0) -> [UInt8] {
            var memory = [UInt8](repeating: 0, count: 0x6200)
            func put16(_ at: Int, _ value: UInt16) { memory[at] = UInt8(value & 0xFF); memory[at + 1] = UInt8(value >> 8) }
            func put32(_ at: Int, _ value: UInt32) { for i in 0..<4 { memory[at + i] = UInt8(value >> (8 * UInt32(i)) & 0xFF) } }
            func put64(_ at: Int, _ value: UInt64) { for i in 0..<8 { memory[at + i] = UInt8(value >> (8 * UInt64(i)) & 0xFF) } }
            // A descriptor: addr u64, len u32, flags u16 (NEXT 1, WRITE 2, INDIRECT 4), next u16.
            func descriptor(_ at: Int, _ address: Int, _ length: UInt32, _ flags: UInt16, _ next: UInt16) {
                put64(at, Virtqueue.base + UInt64(address)); put32(at + 8, length); put16(at + 12, flags); put16(at + 14, next)
            }
            descriptor(0x00, 0x4000, 64, 1, loop ? 0 : 1)   // head 0: readable, then
            descriptor(0x10, 0x5000, 128, 2, 0)              // a writable buffer
            descriptor(0x20, 0x3000, 32, 4, 0)               // head 2: an indirect table of two
            descriptor(0x3000, 0x6000, 3, 1, 1)              // VIRTIO_NET_CTRL_RX PROMISC on
            descriptor(0x3010, 0x6100, 1, 2, 0)              // the ack
            memory.replaceSubrange(0x6000 ..< 0x6003, with: [0, 0, 1])
            put16(0x1002, start &+ 2)                        // available index: two chains
            put16(0x1004 + 2 * Int(start % 8), 0); put16(0x1004 + 2 * Int((start &+ 1) % 8), 2)
            return memory
        }
        // Size 8 (2 << 2), EVENT_IDX (8), INDIRECT_DESC (16), pointers (32); table, rings; start index.
        let layout: [UInt8] = [0, 0, 0x00, 0x08, 0x00, 0x08, 0, 0]
        return [
            ("two-chains-copies", [2 | 8 | 16] + layout + image(loop: false)),
            ("two-chains-pointers", [2 | 8 | 16 | 32] + layout + image(loop: false)),
            ("two-chains-no-event-index", [2 | 16 | 32] + layout + image(loop: false)),
            ("two-chains-across-the-wrap", [2 | 8 | 16 | 32] + layout.dropLast(2) + [0xFF, 0xFF] + image(loop: false, start: 0xFFFF)),
            ("looping-chain", [2 | 8 | 16 | 32] + layout + image(loop: true)),
            ("indirect-not-negotiated", [2 | 8 | 32] + layout + image(loop: false)),
        ]
    }
}

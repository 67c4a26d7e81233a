import VfioUserProto


/// The test's "guest memory": a memfd the driver reads and writes directly, mapped into the
/// device's DMA space at `base`, with a bump allocator for rings and buffers.
public final class GuestRAM {
    public let memfd: Memfd
    public let base: UInt64
    private var next = 0

    public init(size: Int, base: UInt64 = 0x4000_0000) throws {
        memfd = try Memfd(size: size)
        self.base = base
    }

    public var size: Int { memfd.size }

    /// Allocates `count` bytes (zeroed), returns their guest address.
    public func allocate(_ count: Int, alignment: Int = 64) -> UInt64 {
        next = (next + alignment - 1) / alignment * alignment
        precondition(next + count <= memfd.size, "test guest RAM exhausted")
        let address = base + UInt64(next)
        (memfd.base + next).initializeMemory(as: UInt8.self, repeating: 0, count: count)
        next += count
        return address
    }

    func pointer(_ address: UInt64) -> UnsafeMutableRawPointer { memfd.base + Int(address - base) }

    public func write(_ address: UInt64, _ bytes: [UInt8]) { memfd.write(Int(address - base), bytes) }
    public func read(_ address: UInt64, _ count: Int) -> [UInt8] { memfd.read(Int(address - base), count) }

    func load16(_ address: UInt64) -> UInt16 { UInt16(littleEndian: pointer(address).loadUnaligned(as: UInt16.self)) }
    func load32(_ address: UInt64) -> UInt32 { UInt32(littleEndian: pointer(address).loadUnaligned(as: UInt32.self)) }
    func store16(_ address: UInt64, _ value: UInt16) { pointer(address).storeBytes(of: value.littleEndian, as: UInt16.self) }

    func storeDescriptor(_ address: UInt64, _ descriptor: VirtioSpec.Descriptor) {
        let p = pointer(address)
        p.storeBytes(of: descriptor.address.littleEndian, toByteOffset: 0, as: UInt64.self)
        p.storeBytes(of: descriptor.length.littleEndian, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: descriptor.flags.littleEndian, toByteOffset: 12, as: UInt16.self)
        p.storeBytes(of: descriptor.next.littleEndian, toByteOffset: 14, as: UInt16.self)
    }

    func loadDescriptor(_ address: UInt64) -> VirtioSpec.Descriptor {
        let p = pointer(address)
        return VirtioSpec.Descriptor(address: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                                   length: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
                                   flags: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt16.self)),
                                   next: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 14, as: UInt16.self)))
    }
}

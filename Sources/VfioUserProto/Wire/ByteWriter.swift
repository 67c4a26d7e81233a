/// Appends little-endian integers and raw bytes to a growable byte buffer.
///
/// Encoders write through this type. The bytes live in raw memory of the writer's own (a write is
/// a bounds check and a store, where appending to an array goes through its generic append), and
/// `reset()` keeps it, so a writer reused between messages does not allocate. Copies of a writer
/// share that memory until one of them writes (copy on write, as with an array).
///
/// `bytes` copies the contents into an array, for callers that keep them; a hot path hands them on
/// with `withUnsafeBytes` instead.
public struct ByteWriter {
    @usableFromInline
    final class Storage {
        @usableFromInline let base: UnsafeMutableRawPointer
        @usableFromInline let capacity: Int

        @usableFromInline
        init(capacity: Int) {
            self.capacity = capacity
            base = .allocate(byteCount: capacity, alignment: 16)
        }

        deinit { base.deallocate() }
    }

    @usableFromInline var storage: Storage
    @usableFromInline var written = 0

    public var count: Int { written }

    public init(capacity: Int = 64) {
        storage = Storage(capacity: max(capacity, 16))
    }

    /// A copy of the bytes written.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: storage.base, count: count))
    }

    /// The bytes written, to fill in place (a device reading straight into a reply).
    public mutating func withUnsafeMutableBytes<R, E: Error>(_ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
        makeUnique(adding: 0)
        return try body(UnsafeMutableRawBufferPointer(start: storage.base, count: count))
    }

    /// Room for `size` more bytes, owned by this writer alone; returns where they start.
    @inlinable @inline(__always)
    mutating func append(_ size: Int) -> UnsafeMutableRawPointer {
        precondition(size >= 0, "a negative byte count")
        if _slowPath(!isKnownUniquelyReferenced(&storage) || storage.capacity - count < size) { makeUnique(adding: size) }
        let at = storage.base + written
        written += size
        return at
    }

    /// Replaces the storage with one that is unshared and has room for `size` more bytes.
    @usableFromInline
    mutating func makeUnique(adding size: Int) {
        guard !isKnownUniquelyReferenced(&storage) || storage.capacity - count < size else { return }
        var capacity = storage.capacity
        while capacity - count < size { capacity *= 2 }
        let new = Storage(capacity: capacity)
        new.base.copyMemory(from: storage.base, byteCount: count)
        storage = new
    }

    // The hot methods are inlinable: specialized in every module that encodes.
    @inlinable @inline(__always)
    public mutating func write<T: FixedWidthInteger>(_ value: T) {
        append(MemoryLayout<T>.size).storeBytes(of: value.littleEndian, as: T.self)
    }

    @inlinable
    public mutating func write(_ raw: UnsafeRawBufferPointer) {
        guard let source = raw.baseAddress else { return }
        append(raw.count).copyMemory(from: source, byteCount: raw.count)
    }

    public mutating func write(_ raw: [UInt8]) {
        raw.withUnsafeBytes { write($0) }
    }

    @inlinable
    public mutating func writeZeros(_ count: Int) {
        guard count > 0 else { return }
        append(count).initializeMemory(as: UInt8.self, repeating: 0, count: count)
    }

    /// Overwrites an integer already written at `offset` (used to patch a header's size field).
    @inlinable
    public mutating func patch<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= count, "patch outside the bytes written")
        _ = append(0) // unshares the memory (copy on write) before writing into it
        storage.base.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
    }

    /// Forgets the bytes written and keeps the memory.
    @inlinable
    public mutating func reset() {
        written = 0
    }
}

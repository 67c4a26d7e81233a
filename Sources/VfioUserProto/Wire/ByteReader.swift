/// A bounds-checked little-endian cursor over borrowed bytes.
///
/// Every payload decoder reads through this type, so a short or malformed message becomes a
/// `ProtocolError.truncated` instead of a trap. The reader never copies: `bytes(count:)` hands out
/// a slice of the same memory, valid as long as the buffer the reader was made from.
public struct ByteReader {
    public let buffer: UnsafeRawBufferPointer
    /// Only this type moves it, always within `0...buffer.count`.
    @usableFromInline var cursor: Int

    public init(_ buffer: UnsafeRawBufferPointer) {
        self.buffer = buffer
        self.cursor = 0
    }

    public var position: Int { cursor }
    @inlinable public var remaining: Int { buffer.count - cursor }
    public var isAtEnd: Bool { cursor == buffer.count }

    // Inlinable, as every decoder in every module reads through it: specialized where it is used.
    @inlinable @inline(__always)
    public mutating func read<T: FixedWidthInteger>(_: T.Type = T.self) throws(ProtocolError) -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { throw .truncated(needed: size, available: remaining) }
        let value: T = buffer.littleEndian(at: cursor)
        cursor += size
        return value
    }

    /// The next `count` bytes, without copying.
    public mutating func bytes(count: Int) throws(ProtocolError) -> UnsafeRawBufferPointer {
        guard count >= 0, remaining >= count else { throw .truncated(needed: count, available: remaining) }
        let slice = UnsafeRawBufferPointer(rebasing: buffer[position ..< position + count])
        cursor += count
        return slice
    }

    /// Everything not read yet, without copying.
    public mutating func rest() -> UnsafeRawBufferPointer {
        let slice = UnsafeRawBufferPointer(rebasing: buffer[position...])
        cursor = buffer.count
        return slice
    }

    public mutating func skip(_ count: Int) throws(ProtocolError) {
        _ = try bytes(count: count)
    }
}

extension UnsafeRawBufferPointer {
    /// The little-endian integer at `offset`, which the caller has bounds-checked: how every
    /// fixed-layout field is loaded (ByteReader's reads, and records whose length is checked once,
    /// such as the message header, the region access, virtqueue descriptors).
    @inlinable @inline(__always)
    public func littleEndian<T: FixedWidthInteger>(at offset: Int, as: T.Type = T.self) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

extension ByteReader {
    /// Runs `body` on a reader over `bytes`: decoding an owned array in one call. With `whole`,
    /// bytes left over are an error.
    public static func decode<T>(_ bytes: [UInt8], whole: Bool = false,
                                 _ body: (inout ByteReader) throws(ProtocolError) -> T) throws(ProtocolError) -> T {
        let result: Result<T, ProtocolError> = bytes.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            do throws(ProtocolError) {
                let value = try body(&reader)
                guard !whole || reader.isAtEnd else { throw .invalid("\(reader.remaining) bytes left over") }
                return .success(value)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }
}

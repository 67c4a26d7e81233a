/// Appends little-endian integers and raw bytes to a growable byte array.
///
/// Encoders write through this type; the array can be reused between messages
/// (`reset(keepingCapacity:)`) so steady-state encoding does not allocate.
public struct ByteWriter {
    public var bytes: [UInt8]

    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public init(reusing storage: [UInt8]) {
        bytes = storage
        bytes.removeAll(keepingCapacity: true)
    }

    public var count: Int { bytes.count }

    // The hot methods are inlinable: specialized in every module that encodes.
    @inlinable @inline(__always)
    public mutating func write<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    @inlinable
    public mutating func write(_ raw: UnsafeRawBufferPointer) {
        bytes.append(contentsOf: raw)
    }

    public mutating func write(_ raw: [UInt8]) {
        bytes.append(contentsOf: raw)
    }

    @inlinable
    public mutating func writeZeros(_ count: Int) {
        var left = count
        while left >= 8 {
            write(UInt64(0))
            left -= 8
        }
        while left > 0 {
            bytes.append(0)
            left -= 1
        }
    }

    /// Overwrites an integer already written at `offset` (used to patch a header's size field).
    @inlinable
    public mutating func patch<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= bytes.count, "patch outside the bytes written")
        bytes.withUnsafeMutableBytes { $0.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self) }
    }

    @inlinable
    public mutating func reset() {
        bytes.removeAll(keepingCapacity: true)
    }
}

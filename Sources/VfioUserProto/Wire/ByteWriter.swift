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

    @inline(__always)
    public mutating func write<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    public mutating func write(_ raw: UnsafeRawBufferPointer) {
        bytes.append(contentsOf: raw)
    }

    public mutating func write(_ raw: [UInt8]) {
        bytes.append(contentsOf: raw)
    }

    public mutating func writeZeros(_ count: Int) {
        bytes.append(contentsOf: repeatElement(0, count: count))
    }

    /// Overwrites an integer already written at `offset` (used to patch a header's size field).
    public mutating func patch<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        withUnsafeBytes(of: value.littleEndian) { raw in
            for (i, byte) in raw.enumerated() { bytes[offset + i] = byte }
        }
    }

    public mutating func reset() {
        bytes.removeAll(keepingCapacity: true)
    }
}

/// Ethernet frames for tests and benchmarks: destination, source, EtherType 0x88B5 (IEEE's local
/// experimental type), a 4-byte little-endian tag, then bytes derived from the tag, so a frame that
/// arrives can be told apart and checked byte for byte.
public enum TestFrame {
    public static let source: [UInt8] = [0x02, 0, 0, 0, 0, 0x01]
    /// Destination, source, EtherType and tag.
    public static let headerSize = 18

    /// A frame of `length` bytes (at least `headerSize`).
    public static func make(to destination: [UInt8], from source: [UInt8] = TestFrame.source, length: Int, tag: Int) -> [UInt8] {
        var frame = destination + source + [0x88, 0xB5]
        frame += withUnsafeBytes(of: UInt32(truncatingIfNeeded: tag).littleEndian) { Array($0) }
        frame += (0..<(length - frame.count)).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ tag) }
        return frame
    }

    /// The tag a frame made here carries; -1 for one too short to have it.
    public static func tag(of frame: [UInt8]) -> Int {
        frame.count >= headerSize ? Int(frame[14]) | Int(frame[15]) << 8 | Int(frame[16]) << 16 | Int(frame[17]) << 24 : -1
    }
}

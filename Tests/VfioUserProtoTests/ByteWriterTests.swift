import Testing
import VfioUserProto

@Suite("ByteWriter")
struct ByteWriterTests {
    @Test func integersAreLittleEndianAndGrowPastTheFirstCapacity() {
        var writer = ByteWriter(capacity: 16)
        for i in 0..<100 { writer.write(UInt32(0x0403_0200 | UInt32(i))) }
        writer.write(UInt8(0xAA))
        writer.writeZeros(3)
        #expect(writer.count == 404)
        let bytes = writer.bytes
        #expect(bytes[0..<4] == [0, 2, 3, 4])
        #expect(bytes[396..<400] == [99, 2, 3, 4])
        #expect(bytes[400...] == [0xAA, 0, 0, 0])
    }

    @Test func aCopyKeepsItsBytesWhenTheOriginalWritesOnOrPatches() {
        var original = ByteWriter(capacity: 64)
        original.write(UInt64(1))
        let copy = original
        original.write(UInt64(2))
        original.patch(UInt16(0xBEEF), at: 0)
        #expect(copy.bytes == [1, 0, 0, 0, 0, 0, 0, 0])
        #expect(original.bytes == [0xEF, 0xBE, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func resetKeepsNothingOfTheOldBytesAndAnInPlaceFillWritesThrough() {
        var writer = ByteWriter(capacity: 16)
        writer.write(UInt32(7))
        let kept = writer
        writer.reset()
        writer.writeZeros(4)
        writer.withUnsafeMutableBytes { $0[2] = 9 }
        writer.writeZeros(0)
        writer.writeZeros(-1) // nothing, as before
        #expect(writer.bytes == [0, 0, 9, 0])
        #expect(kept.bytes == [7, 0, 0, 0])
        writer.withUnsafeBytes { #expect(Array($0) == [0, 0, 9, 0]) }
    }
}

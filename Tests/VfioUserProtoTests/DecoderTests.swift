import TestSupport
import Testing
import VfioUserProto

@Suite("Decoding captured streams")
struct DecoderTests {
    func decode(_ text: String, leftIsClient: Bool = true) throws -> (Hexdump.Format, [String]) {
        let (format, chunks) = try Hexdump.parse(Array(text.utf8), leftIsClient: leftIsClient)
        var decoder = StreamDecoder()
        return (format, chunks.flatMap { decoder.feed($0) } + decoder.finish())
    }

    static let version = message(id: 1, command: .version, payload: [0, 0, 0, 0])
    static let read = message(id: 2, command: .regionRead, payload: le(UInt64(0)) + le(UInt32(7)) + le(UInt32(4)))
    static let readReply = message(id: 2, command: .regionRead, payload: le(UInt64(0)) + le(UInt32(7)) + le(UInt32(4)) + [0x48, 0x43, 0x53, 0x32],
                                   flags: .reply)

    @Test func xxdOutputDecodes() throws {
        // What `xxd` prints for the VERSION request then the read, as one stream.
        let bytes = Self.version + Self.read
        var text = ""
        for start in stride(from: 0, to: bytes.count, by: 16) {
            let line = Array(bytes[start..<min(start + 16, bytes.count)])
            var groups: [String] = []
            for pair in stride(from: 0, to: line.count, by: 2) {
                groups.append(line[pair..<min(pair + 2, line.count)].map { hexText($0, digits: 2, prefix: false) }.joined())
            }
            text += hexText(start, digits: 8, prefix: false) + ": " + groups.joined(separator: " ") + "  ................\r\n"
        }
        let (format, lines) = try decode(text)
        #expect(format == .xxd)
        #expect(lines == ["→ #1 VERSION version=0.0", "→ #2 REGION_READ offset=0x0 region=config count=4"])
    }

    @Test func plainHexAndRawBytesDecodeWithDirectionsFromTheMessages() throws {
        let hex = (Self.read + Self.readReply).map { hexText($0, digits: 2, prefix: false) }.joined(separator: " ")
        let (format, lines) = try decode(hex)
        #expect(format == .hex)
        #expect(lines == ["→ #2 REGION_READ offset=0x0 region=config count=4",
                          "← #2 REGION_READ reply offset=0x0 region=config count=4 data=48435332"])
        let dmaRead = message(id: 9, command: .dmaRead, payload: le(UInt64(0x1000)) + le(UInt64(8)))
        let (raw, rawLines) = try Hexdump.parse(dmaRead + [0])
        #expect(raw == .raw)
        var decoder = StreamDecoder()
        #expect(rawLines.flatMap { decoder.feed($0) } == ["← #9 DMA_READ address=0x1000 count=8"], "DMA_READ comes from the server")
        #expect(decoder.finish() == ["? incomplete message: 1 bytes at the end"])
    }

    @Test func aBrokenStreamStopsWithAFramingError() throws {
        var bad = Self.version
        bad[4] = 8 // size below the header
        let (_, lines) = try decode(bad.map { hexText($0, digits: 2, prefix: false) }.joined())
        #expect(lines == ["framing error: a message of size 8 (below the 16-byte header); the rest of this stream is not decoded"])
        #expect(throws: Hexdump.ParseError(line: 2, reason: "'zz' is not hex")) { _ = try Hexdump.parse(Array("0100\nzz".utf8)) }
    }
}

import Testing
import TestSupport
import VfioUserProto

@Suite("Decoding captured streams")
struct DecoderTests {
    static var fixtures: String {
        var path = #filePath
        path = String(path[..<path.lastIndex(of: "/")!])
        return path + "/Fixtures"
    }

    func decode(_ text: String, leftIsClient: Bool = true) throws -> (Hexdump.Format, [String]) {
        let (format, chunks) = try Hexdump.parse(Array(text.utf8), leftIsClient: leftIsClient)
        var decoder = StreamDecoder()
        return (format, chunks.flatMap { decoder.feed($0) } + decoder.finish())
    }

    static let version = message(id: 1, command: .version, payload: [0, 0, 0, 0])
    static let read = message(id: 2, command: .regionRead, payload: le(UInt64(0)) + le(UInt32(7)) + le(UInt32(4)))
    static let readReply = message(id: 2, command: .regionRead, payload: le(UInt64(0)) + le(UInt32(7)) + le(UInt32(4)) + [0x48, 0x43, 0x53, 0x32],
                                   flags: .reply)

    /// A `socat -x -v` capture of the `client` subcommand talking to an mtty-2 through socat: the
    /// eventfd of SET_IRQS did not make it (socat cannot pass fds), the rest decodes in order.
    @Test func aSocatCaptureDecodesIntoTheConversation() throws {
        let text = readFile(Self.fixtures + "/socat-mtty.txt")
        let (format, lines) = try decode(text)
        #expect(format == .socat)
        #expect(lines == [
            #"→ #1 VERSION version=0.0 json={"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":65535,"migration":{"pgsize":4096,"max_bitmap_size":268435456},"write_multiple":true}}"#,
            #"← #1 VERSION reply version=0.0 json={"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":65535,"write_multiple":true}}"#,
            "→ #2 DEVICE_SET_IRQS argsz=20 index=intx flags=EVENTFD|TRIGGER start=0 count=1",
            "← #2 DEVICE_SET_IRQS reply",
            "→ #3 REGION_WRITE offset=0x1 region=bar0 count=1 data=01",
            "← #3 REGION_WRITE reply offset=0x1 region=bar0 count=1",
            "→ #4 REGION_WRITE no-reply offset=0x0 region=bar0 count=1 data=41",
            "→ #5 REGION_READ offset=0x2 region=bar0 count=1",
            "← #5 REGION_READ reply offset=0x2 region=bar0 count=1 data=04",
            "→ #6 REGION_READ offset=0x0 region=bar0 count=1",
            "← #6 REGION_READ reply offset=0x0 region=bar0 count=1 data=41",
            "→ #7 DEVICE_RESET",
            "← #7 DEVICE_RESET reply",
            "→ #8 REGION_READ offset=0x9 region=bar0 count=1",
            "← #8 REGION_READ reply error=EINVAL",
        ])
        let (_, swapped) = try decode(text, leftIsClient: false)
        #expect(swapped.first?.hasPrefix("← #1 VERSION version=0.0") == true, "--server-on-left turns the arrows")
    }

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

import TestSupport
import Testing
import VfioUserProto

@Suite("Trace lines")
struct TraceTests {
    func line(_ direction: MessageTrace.Direction, _ bytes: [UInt8], fds: Int = 0) -> String {
        bytes.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            let header = try! MessageHeader(decoding: &reader)
            return MessageTrace.line(direction: direction, header: header, payload: reader.rest(), fdCount: fds)
        }
    }

    @Test func regionAccessBothWays() {
        let request = message(id: 12, command: .regionRead, payload: encoded(RegionAccess(offset: 0x10, region: .config, count: 4).encode))
        #expect(line(.toServer, request) == "→ #12 REGION_READ offset=0x10 region=config count=4")
        let reply = message(id: 12, command: .regionRead, payload: encoded(RegionAccess(offset: 0x10, region: .config, count: 4).encode) + [1, 0, 0, 0], flags: .reply)
        #expect(line(.fromServer, reply) == "← #12 REGION_READ reply offset=0x10 region=config count=4 data=01000000")
        let posted = message(id: 13, command: .regionWrite, payload: encoded(RegionAccess(offset: 0, region: .bar0, count: 1).encode) + [0x41], flags: .noReply)
        #expect(line(.toServer, posted) == "→ #13 REGION_WRITE no-reply offset=0x0 region=bar0 count=1 data=41")
    }

    @Test func errorsFdsAndUndecodablePayloads() {
        let error = encoded(MessageHeader(id: 14, command: .dmaUnmap, messageSize: 16, flags: [.reply, .error], error: 2).encode)
        #expect(line(.fromServer, error) == "← #14 DMA_UNMAP reply error=ENOENT")
        let set = message(id: 3, command: .deviceSetIRQs, payload: encoded(SetIRQs(flags: [.dataEventfd, .actionTrigger], index: .msix, start: 0, count: 2).encode))
        #expect(line(.toServer, set, fds: 2) == "→ #3 DEVICE_SET_IRQS argsz=20 index=msix flags=EVENTFD|TRIGGER start=0 count=2 fds=2")
        let short = message(id: 4, command: .dmaMap, payload: [1, 2, 3])
        #expect(line(.toServer, short).hasPrefix("→ #4 DMA_MAP undecodable(3B"))
    }
}

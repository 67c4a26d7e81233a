import Support
import TestSupport
import Testing
import VfioUserProto

/// Encodes with a payload type's encoder.
func encoded(_ body: (inout ByteWriter) -> Void) -> [UInt8] {
    var writer = ByteWriter()
    body(&writer)
    return writer.bytes
}

/// Decodes with a payload type's decoder.
func decoded<T>(_ bytes: [UInt8], _ body: (inout ByteReader) throws(ProtocolError) -> T) throws(ProtocolError) -> T {
    let result: Result<T, ProtocolError> = bytes.withUnsafeBytes { raw in
        var reader = ByteReader(raw)
        do throws(ProtocolError) { return .success(try body(&reader)) } catch { return .failure(error) }
    }
    return try result.get()
}

/// Every strict prefix of a fixed-size encoding must fail to decode with a typed error.
func expectTruncationFails<T>(_ bytes: [UInt8], _ body: (inout ByteReader) throws(ProtocolError) -> T) {
    for length in 0..<bytes.count {
        #expect(throws: ProtocolError.self, "prefix of \(length) bytes") { try decoded(Array(bytes.prefix(length)), body) }
    }
}


@Suite("Header")
struct HeaderTests {
    @Test func exactBytes() throws {
        let header = MessageHeader(id: 0x1234, command: .regionRead, messageSize: 32, flags: [.reply, .error], error: 22)
        #expect(encoded(header.encode) == [0x34, 0x12, 0x09, 0x00, 0x20, 0, 0, 0, 0x21, 0, 0, 0, 22, 0, 0, 0])
        #expect(try decoded(encoded(header.encode), MessageHeader.init(decoding:)) == header)
    }

    @Test func truncatedHeaderIsATypedError() {
        expectTruncationFails(encoded(MessageHeader(id: 1, command: .version, messageSize: 16).encode), MessageHeader.init(decoding:))
    }

    @Test func flagsNameTypeNoReplyAndError() {
        let flags = MessageFlags(rawValue: 0x31)
        #expect(flags.isReply && flags.contains(.noReply) && flags.contains(.error))
        #expect(MessageFlags(rawValue: 0x2).type == 2 && !MessageFlags(rawValue: 0x2).isCommand)
    }

    @Test func errorReplyIsHeaderOnlyWithTheRequestIdAndCommand() {
        let request = MessageHeader(id: 77, command: .dmaUnmap, messageSize: 40, flags: .command)
        let reply = request.errorReply(errno: 2)
        #expect(reply == MessageHeader(id: 77, command: .dmaUnmap, messageSize: 16, flags: [.reply, .error], error: 2))
    }

    @Test func commandNamesCoverOneToEighteen() {
        #expect(Command.all.count == 18)
        #expect(Command.all.map(\.name).allSatisfy { !$0.hasPrefix("COMMAND_") })
        #expect(Command(rawValue: 99).name == "COMMAND_99")
        #expect(Command(name: "REGION_WRITE_MULTI") == .regionWriteMulti)
    }
}

@Suite("Payloads")
struct PayloadTests {
    @Test func versionCarriesNULTerminatedJSON() throws {
        let version = VersionPayload(major: 0, minor: 2, json: "{}")
        #expect(encoded(version.encode) == [0, 0, 2, 0, 0x7B, 0x7D, 0])
        #expect(try decoded(encoded(version.encode), VersionPayload.init(decoding:)) == version)
        #expect(try decoded([0, 0, 1, 0], VersionPayload.init(decoding:)) == VersionPayload(major: 0, minor: 1, json: nil))
    }

    @Test func versionWithoutNULOrWithAnEmbeddedNULIsRefused() {
        #expect(throws: ProtocolError.self) { try decoded([0, 0, 0, 0, 0x7B, 0x7D], VersionPayload.init(decoding:)) }
        #expect(throws: ProtocolError.self) { try decoded([0, 0, 0, 0, 0x7B, 0, 0x7D, 0], VersionPayload.init(decoding:)) }
        expectTruncationFails([0, 0, 0, 0], VersionPayload.init(decoding:))
    }

    @Test func dmaMapIs32Bytes() throws {
        let map = DMAMapRequest(flags: [.read, .write], offset: 0x1000, address: 0xC000_0000, size: 0x20000)
        let bytes = encoded(map.encode)
        #expect(bytes == le(UInt32(32)) + le(UInt32(3)) + le(UInt64(0x1000)) + le(UInt64(0xC000_0000)) + le(UInt64(0x20000)))
        #expect(try decoded(bytes, DMAMapRequest.init(decoding:)) == map)
        expectTruncationFails(bytes, DMAMapRequest.init(decoding:))
    }

    @Test func dmaUnmapIs24BytesAndKnowsFlagAll() throws {
        let unmap = DMAUnmapRequest(flags: .all, address: 0, size: 0)
        let bytes = encoded(unmap.encode)
        #expect(bytes == le(UInt32(24)) + le(UInt32(2)) + le(UInt64(0)) + le(UInt64(0)))
        #expect(try decoded(bytes, DMAUnmapRequest.init(decoding:)) == unmap)
        expectTruncationFails(bytes, DMAUnmapRequest.init(decoding:))
    }

    @Test func deviceInfo() throws {
        let info = DeviceInfo(flags: [.pci, .reset], numRegions: 9, numIRQs: 5)
        let bytes = encoded(info.encode)
        #expect(bytes == le(UInt32(16)) + le(UInt32(3)) + le(UInt32(9)) + le(UInt32(5)))
        #expect(try decoded(bytes, DeviceInfo.init(decoding:)) == info)
        expectTruncationFails(bytes, DeviceInfo.init(decoding:))
    }

    @Test func regionInfoWithSparseMmapCapability() throws {
        let info = RegionInfo(argsz: 64, flags: [.read, .write, .mmap], index: .bar4, size: 0x4000, offset: 0x8000,
                              capabilities: [.sparseMmap([SparseMmapArea(offset: 0x3000, size: 0x1000)])])
        let bytes = encoded(info.encode)
        let expected = le(UInt32(64)) + le(UInt32(0xF)) + le(UInt32(4)) + le(UInt32(32)) + le(UInt64(0x4000)) + le(UInt64(0x8000))
            + le(UInt16(1)) + le(UInt16(1)) + le(UInt32(0)) + le(UInt32(1)) + le(UInt32(0)) + le(UInt64(0x3000)) + le(UInt64(0x1000))
        #expect(bytes == expected)
        #expect(info.fullSize == 64)
        #expect(try decoded(bytes, RegionInfo.init(decoding:)) == info)
    }

    @Test func regionInfoChainOfTwoCapabilitiesLinksByOffset() throws {
        let info = RegionInfo(argsz: 0, index: .region(9), capabilities: [.type(type: 3, subtype: 1), .msixMappable])
        let bytes = encoded(info.encode)
        // type cap at 32 (16 bytes) points to the MSI-X mappable cap at 48, which ends the chain.
        #expect(Array(bytes[32..<40]) == le(UInt16(2)) + le(UInt16(1)) + le(UInt32(48)))
        #expect(Array(bytes[48..<56]) == le(UInt16(3)) + le(UInt16(1)) + le(UInt32(0)))
        #expect(try decoded(bytes, RegionInfo.init(decoding:)).capabilities == info.capabilities)
    }

    @Test func regionInfoWithALoopingChainIsRefused() {
        var bytes = encoded(RegionInfo(argsz: 0, index: .region(9), capabilities: [.msixMappable]).encode)
        bytes.replaceSubrange(36..<40, with: le(UInt32(32))) // next points at itself
        #expect(throws: ProtocolError.self) { try decoded(bytes, RegionInfo.init(decoding:)) }
        expectTruncationFails(Array(bytes.prefix(32)), RegionInfo.init(decoding:))
    }

    @Test func irqInfoAndSetIRQs() throws {
        let info = IRQInfo(flags: [.eventfd, .maskable, .automasked], index: .intx, count: 1)
        #expect(encoded(info.encode) == le(UInt32(16)) + le(UInt32(7)) + le(UInt32(0)) + le(UInt32(1)))
        #expect(try decoded(encoded(info.encode), IRQInfo.init(decoding:)) == info)
        let set = SetIRQs(flags: [.dataBool, .actionTrigger], index: .msix, start: 2, count: 3, data: [1, 0, 1])
        let bytes = encoded(set.encode)
        #expect(bytes == le(UInt32(23)) + le(UInt32(0x22)) + le(UInt32(2)) + le(UInt32(2)) + le(UInt32(3)) + [1, 0, 1])
        #expect(try decoded(bytes, SetIRQs.init(decoding:)) == set)
        expectTruncationFails(Array(bytes.prefix(20)), SetIRQs.init(decoding:))
        #expect(SetIRQsFlags(rawValue: 0x24).description == "EVENTFD|TRIGGER")
    }

    @Test func regionAccessAndWriteMulti() throws {
        let access = RegionAccess(offset: 0x10, region: .config, count: 4)
        #expect(encoded(access.encode) == le(UInt64(0x10)) + le(UInt32(7)) + le(UInt32(4)))
        expectTruncationFails(encoded(access.encode), RegionAccess.init(decoding:))
        let multi = RegionWriteMulti(entries: [.init(offset: 8, region: .bar0, count: 2, data: 0xBEEF)])
        let bytes = encoded(multi.encode)
        #expect(bytes == le(UInt64(1)) + le(UInt64(8)) + le(UInt32(0)) + le(UInt32(2)) + le(UInt64(0xBEEF)))
        #expect(try decoded(bytes, RegionWriteMulti.init(decoding:)) == multi)
    }

    @Test func writeMultiRefusesBadCountsAndOversizedEntries() {
        #expect(throws: ProtocolError.self) { try decoded(le(UInt64(2)) + Array(repeating: 0, count: 24), RegionWriteMulti.init(decoding:)) }
        #expect(throws: ProtocolError.self) { try decoded(le(UInt64(201)) + Array(repeating: 0, count: 201 * 24), RegionWriteMulti.init(decoding:)) }
        let nine = le(UInt64(1)) + le(UInt64(0)) + le(UInt32(0)) + le(UInt32(9)) + le(UInt64(0))
        #expect(throws: ProtocolError.self) { try decoded(nine, RegionWriteMulti.init(decoding:)) }
    }

    @Test func dmaTransferHeaderInBothLayouts() throws {
        let header = DMATransferHeader(address: 0x1000, count: 5)
        let spec = encoded { header.encode(into: &$0, layout: .spec) }
        let qemu = encoded { header.encode(into: &$0, layout: .qemu) }
        #expect(spec == le(UInt64(0x1000)) + le(UInt64(5)))
        #expect(qemu == le(UInt64(0x1000)) + le(UInt32(5)))
        #expect(try decoded(spec) { (r: inout ByteReader) throws(ProtocolError) in try DMATransferHeader(decoding: &r, layout: .spec) } == header)
        #expect(try decoded(qemu) { (r: inout ByteReader) throws(ProtocolError) in try DMATransferHeader(decoding: &r, layout: .qemu) } == header)
    }

    @Test func deviceFeatureAndMigrationData() throws {
        let feature = DeviceFeature(flags: DeviceFeatureFlags(feature: .migDeviceState, set: true), data: le(UInt32(3)) + le(UInt32(0)))
        let bytes = encoded(feature.encode)
        #expect(bytes == le(UInt32(16)) + le(UInt32(0x20002)) + le(UInt32(3)) + le(UInt32(0)))
        #expect(try decoded(bytes, DeviceFeature.init(decoding:)) == feature)
        #expect(feature.flags.description == "MIG_DEVICE_STATE SET")
        let read = MigrationDataRead(argsz: 4104, size: 4096)
        #expect(try decoded(encoded(read.encode), MigrationDataRead.init(decoding:)) == read)
        let data = MigrationData(data: [1, 2, 3])
        #expect(encoded(data.encode) == le(UInt32(11)) + le(UInt32(3)) + [1, 2, 3])
        #expect(try decoded(encoded(data.encode), MigrationData.init(decoding:)) == data)
        expectTruncationFails(encoded(data.encode), MigrationData.init(decoding:))
    }

    @Test func regionIOFDs() throws {
        let request = RegionIOFDsRequest(argsz: 56, index: .bar4)
        #expect(try decoded(encoded(request.encode), RegionIOFDsRequest.init(decoding:)) == request)
        let entry = RegionIOFD(offset: 0x3000, size: 4, fdIndex: 0, datamatch: 7)
        let bytes = encoded(entry.encode)
        #expect(bytes.count == 40)
        #expect(try decoded(bytes, RegionIOFD.init(decoding:)) == entry)
        expectTruncationFails(bytes, RegionIOFD.init(decoding:))
    }

    @Test func indexNames() {
        #expect(RegionIndex.config.description == "config" && RegionIndex(name: "bar3") == .bar3)
        #expect(RegionIndex(name: "region12") == .region(12))
        #expect(IRQIndex(name: "msix") == .msix && IRQIndex.req.description == "req")
    }
}

extension RegionIndex {
    static func region(_ n: UInt32) -> RegionIndex { RegionIndex(rawValue: n) }
}

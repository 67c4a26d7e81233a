import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VfioUserServer

@Suite("Dirty page logging (DMA_LOGGING_*)")
struct DirtyLoggingTests {
    static let iova: UInt64 = 0x1_0000_0000
    static let size: UInt64 = 0x40_0000 // 4 MiB: 1024 pages

    /// A copy engine with 4 MiB of client memory mapped by fd (or by messages).
    func setUp(messageMode: Bool = false) throws -> (CopyEngineDevice, TestServer, VfioUserClient, Memfd) {
        let model = CopyEngineDevice()
        let server = try TestServer(model: model)
        let client = try server.attach()
        let memory = try Memfd(size: Int(Self.size))
        client.dmaHandler = memory.handler(at: Self.iova)
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Self.iova, size: Self.size),
                          fd: messageMode ? nil : memory.fd.descriptor)
        return (model, server, client, memory)
    }

    /// The device copies `length` bytes to `destination`: its DMA writes are what logging sees.
    func copy(_ model: CopyEngineDevice, _ client: VfioUserClient, to destination: UInt64, length: UInt32) throws {
        try client.write(.bar0, offset: 0x00, value: Self.iova)
        try client.write(.bar0, offset: 0x08, value: destination)
        try client.write(.bar0, offset: 0x10, value: length)
        try client.write(.bar0, offset: 0x14, value: UInt32(1), posted: true)
        _ = try client.read(.bar0, offset: 0x18, as: UInt32.self) // the doorbell has been taken: the copy runs
        try client.serveRequests(milliseconds: 10_000) { model.isFinished }
        #expect(try client.read(.bar0, offset: 0x18, as: UInt32.self) == 2)
    }

    /// DMA_LOGGING_REPORT as raw bytes, without the client's own checks.
    func report(_ client: VfioUserClient, iova: UInt64, length: UInt64, pageSize: UInt64, argsz: UInt32 = 8 + 24 + 8) throws {
        var writer = ByteWriter()
        DMALoggingReport(iova: iova, length: length, pageSize: pageSize).encode(into: &writer)
        _ = try client.deviceFeature(DeviceFeature(argsz: argsz, flags: DeviceFeatureFlags(feature: .dmaLoggingReport, get: true), data: writer.bytes))
    }

    func pages(_ bitmap: [UInt64]) -> [Int] {
        (0..<(bitmap.count * 64)).filter { bitmap[$0 / 64] & (1 << UInt64($0 % 64)) != 0 }
    }

    @Test(arguments: [false, true])
    func aReportHoldsExactlyThePagesTheDeviceWroteInsideTheRanges(messageMode: Bool) throws {
        let (model, server, client, memory) = try setUp(messageMode: messageMode)
        defer { withExtendedLifetime((server, memory)) {} }
        try copy(model, client, to: Self.iova + 0x10_0000, length: 0x100) // before logging: not reported
        let logged = [DMARange(iova: Self.iova + 0x10_0000, length: 0x10_0000), DMARange(iova: Self.iova + 0x30_0000, length: 0x8000)]
        try client.startDirtyLogging(ranges: logged)
        try copy(model, client, to: Self.iova + 0x10_2FF0, length: 0x20) // straddles pages 2 and 3 of range 1
        try copy(model, client, to: Self.iova + 0x30_5000, length: 0x1000) // page 5 of range 2
        try copy(model, client, to: Self.iova + 0x20_0000, length: 0x1000) // outside every range
        #expect(pages(try client.dirtyPages(iova: Self.iova + 0x10_0000, length: 0x10_0000)) == [2, 3])
        #expect(pages(try client.dirtyPages(iova: Self.iova + 0x30_0000, length: 0x8000)) == [5])
        #expect(pages(try client.dirtyPages(iova: Self.iova + 0x10_0000, length: 0x10_0000)).isEmpty, "reported once")
        expectErrno(.invalidArgument) { try client.dirtyPages(iova: Self.iova + 0x20_0000, length: 0x1000) }
        expectErrno(.invalidArgument) { try client.dirtyPages(iova: Self.iova + 0x30_0000, length: 0x9000) }
        // Larger report pages gather the small ones.
        try copy(model, client, to: Self.iova + 0x10_9000, length: 0x10)
        #expect(pages(try client.dirtyPages(iova: Self.iova + 0x10_0000, length: 0x10_0000, pageSize: 0x8000)) == [1])
        try client.stopDirtyLogging()
        expectErrno(.invalidArgument) { try client.dirtyPages(iova: Self.iova + 0x10_0000, length: 0x1000) }
    }

    @Test func noRangesMeansEveryMappedRange() throws {
        let (model, server, client, memory) = try setUp()
        defer { withExtendedLifetime((server, memory)) {} }
        try client.startDirtyLogging(ranges: [])
        try copy(model, client, to: Self.iova + 0x3F_F000, length: 0x1000)
        #expect(pages(try client.dirtyPages(iova: Self.iova, length: Self.size)) == [1023])
    }

    @Test func badRequestsAreRefused() throws {
        let (_, server, client, memory) = try setUp()
        defer { withExtendedLifetime((server, memory)) {} }
        let range = [DMARange(iova: Self.iova, length: 0x1000)]
        expectErrno(.invalidArgument) { try client.startDirtyLogging(pageSize: 1000, ranges: range) }
        expectErrno(.invalidArgument) { try client.startDirtyLogging(pageSize: 2048, ranges: range) }
        expectErrno(.invalidArgument) { try client.startDirtyLogging(ranges: [DMARange(iova: Self.iova, length: 0)]) }
        expectErrno(.invalidArgument) {
            try client.startDirtyLogging(ranges: [DMARange(iova: Self.iova, length: 0x2000), DMARange(iova: Self.iova + 0x1000, length: 0x1000)])
        }
        expectErrno(.invalidArgument) { try client.startDirtyLogging(ranges: [DMARange(iova: UInt64.max - 0xFFF, length: 0x2000)]) }
        expectErrno(.invalidArgument) { try client.dirtyPages(iova: Self.iova, length: 0x1000) }
        try client.startDirtyLogging(ranges: range)
        expectErrno(.resourceBusy) { try client.startDirtyLogging(ranges: range) }
        expectErrno(.invalidArgument) { try report(client, iova: Self.iova, length: 0x1000, pageSize: 3000) }
        expectErrno(.invalidArgument) { try client.dirtyPages(iova: Self.iova + 0x800, length: 0x800) }
        // A bitmap past max_data_xfer_size: 1 MiB of bitmap is 8 Gi pages.
        expectErrno(.invalidArgument) { try report(client, iova: 0, length: 1 << 44, pageSize: 4096, argsz: UInt32.max) }
        expectErrno(.invalidArgument) { try report(client, iova: Self.iova, length: 0x1000, pageSize: 4096, argsz: 8 + 24 + 7) }
        try client.stopDirtyLogging()
        try client.stopDirtyLogging() // idempotent
        try client.startDirtyLogging(ranges: range)
    }
}

import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VfioUserServer

@Suite("Device, region and IRQ info")
struct DeviceQueryTests {
    @Test func deviceInfoIsPCIWithResetNineRegionsFiveIRQs() throws {
        let server = try TestServer()
        let info = try server.attach().deviceInfo()
        #expect(info == DeviceInfo(argsz: 16, flags: [.pci, .reset], numRegions: 9, numIRQs: 5))
    }

    @Test func mtty2Regions() throws {
        let server = try TestServer()
        let client = try server.attach()
        for bar in 0..<2 {
            let (info, fd) = try client.regionInfo(.bar(bar))
            #expect(info.size == 8 && info.flags == [.read, .write] && fd == nil)
        }
        for index: RegionIndex in [.bar2, .bar3, .bar4, .bar5, .rom, .vga] {
            #expect(try client.regionInfo(index).info.size == 0)
        }
        let config = try client.regionInfo(.config).info
        #expect(config.size == 256 && config.flags == [.read, .write] && config.argsz == 32)
    }

    @Test func regionInfoErrors() throws {
        let server = try TestServer()
        let client = try server.attach()
        expectErrno(.invalidArgument) { try client.regionInfo(RegionIndex(rawValue: 9)) }
        expectErrno(.invalidArgument) { try client.regionInfo(.bar0, argsz: 16) }
        expectErrno(.invalidArgument) { try client.request(.deviceGetRegionInfo, payload: le(UInt32(32)) + le(UInt32(0)) + le(UInt32(0))) }
    }

    @Test func irqInfoPerIndex() throws {
        let server = try TestServer()
        let client = try server.attach()
        #expect(try client.irqInfo(.intx) == IRQInfo(flags: [.eventfd, .maskable, .automasked], index: .intx, count: 1))
        #expect(try client.irqInfo(.msi).count == 0)
        #expect(try client.irqInfo(.msix).count == 0)
        #expect(try client.irqInfo(.err) == IRQInfo(flags: .eventfd, index: .err, count: 1))
        #expect(try client.irqInfo(.req) == IRQInfo(flags: .eventfd, index: .req, count: 1))
        expectErrno(.invalidArgument) { try client.irqInfo(IRQIndex(rawValue: 5)) }
    }

    @Test func configSpaceReadsAsOneBlockWithTheMttyIdentity() throws {
        let server = try TestServer()
        let client = try server.attach()
        let config = try client.read(.config, offset: 0, count: 256)
        #expect(Array(config[0..<4]) == [0x48, 0x43, 0x53, 0x32])
        #expect(Array(config[8..<12]) == [0x10, 0x02, 0x00, 0x07])
        #expect(Array(config[0x2C..<0x30]) == [0x48, 0x43, 0x53, 0x32])
        #expect(config[0x3D] == 1)
        #expect(config[0x06] & 0x10 == 0) // no capability list
    }

    @Test func barSizingThroughConfigWrites() throws {
        let server = try TestServer()
        let client = try server.attach()
        try client.write(.config, offset: 0x10, value: UInt32.max)
        #expect(try client.read(.config, offset: 0x10, as: UInt32.self) == 0xFFFF_FFF9)
        try client.write(.config, offset: 0x14, value: UInt32(0xC058))
        #expect(try client.read(.config, offset: 0x14, as: UInt32.self) == 0xC059)
        // QEMU's ROM probe: no ROM reads back 0.
        try client.write(.config, offset: 0x30, value: UInt32(0xFFFF_F800))
        #expect(try client.read(.config, offset: 0x30, as: UInt32.self) == 0)
    }

    @Test func resetRestoresConfigAndDevice() throws {
        let server = try TestServer()
        let client = try server.attach()
        try client.write(.config, offset: 0x04, value: UInt16(1))
        try client.write(.bar0, offset: 7, value: UInt8(0x77))
        try client.reset()
        #expect(try client.read(.config, offset: 0x04, as: UInt16.self) == 0)
        #expect(try client.read(.bar0, offset: 7, as: UInt8.self) == 0)
    }
}

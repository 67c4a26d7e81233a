import RegionEmulation
import Support
import TestSupport
import Testing
import VfioUserProto
import VirtioNetDevice
import VirtioDriver

@Suite("virtio-pci transport")
struct TransportTests {
    @Test func identityBarsAndTheVirtioCapabilities() throws {
        let bed = try NetTestBed()
        let client = bed.driver.client
        let config = try client.read(.config, offset: 0, count: 64)
        #expect(Array(config[0..<4]) == [0xF4, 0x1A, 0x41, 0x10])
        #expect(Array(config[8..<12]) == [0x01, 0x00, 0x00, 0x02]) // rev 1, class 02/00/00
        #expect(try client.regionInfo(.bar4).info.size == 0x4000)
        #expect(try client.regionInfo(.bar1).info.size == 0x1000)
        #expect(bed.driver.structuresBAR == .bar4)
        #expect([bed.driver.commonOffset, bed.driver.isrOffset, bed.driver.deviceOffset, bed.driver.notifyOffset] == [0, 0x1000, 0x2000, 0x3000])
        #expect(bed.driver.notifyMultiplier == 4)
        #expect(try client.irqInfo(.msix).count == 4)
    }

    @Test func featuresOfferedWithADatagramBackendHaveNoOffloads() throws {
        let bed = try NetTestBed()
        let offered = try bed.driver.deviceFeatures()
        #expect(offered == NetTestBed.defaultFeatures)
        #expect(offered.isDisjoint(with: [.netChecksum, .netGuestChecksum, .netHostTSO4]))
    }

    /// With guest RAM reached by messages an indirect table costs a chain a round trip of its own,
    /// so the device offers none; with RAM mapped from an fd it does.
    @Test(arguments: [false, true])
    func indirectTablesAreOfferedOnlyWithMappedRAM(messageMode: Bool) throws {
        let bed = try NetTestBed(messageMode: messageMode)
        let offered = try bed.driver.deviceFeatures()
        #expect(offered.contains(.ringIndirectDescriptors) == !messageMode)
        #expect(offered.union(.ringIndirectDescriptors) == NetTestBed.defaultFeatures)
        try bed.up()
        #expect(bed.driver.features.contains(.ringIndirectDescriptors) == !messageMode)
    }

    @Test func featuresOKIsRefusedForUnacceptableSets() throws {
        let bed = try NetTestBed()
        #expect(try bed.driver.negotiate([.netMAC, .netStatus]) == false) // no VERSION_1
        #expect(try bed.driver.negotiate([.version1, .netControlRx]) == false) // CTRL_RX needs CTRL_VQ
        #expect(try bed.driver.negotiate([.version1, .netChecksum], exactly: true) == false) // not offered
        #expect(try bed.driver.negotiate([.version1, .netMAC, .netControlQueue, .netControlRx]) == true)
    }

    @Test func deviceConfigHasTheMACLinkUpAndOnePair() throws {
        let bed = try NetTestBed()
        #expect(try bed.driver.config(0, count: 6) == NetTestBed.mac)
        #expect(try bed.driver.config(6, count: 2) == [1, 0])
        #expect(try bed.driver.config(8, count: 2) == [1, 0])
        #expect(try bed.driver.common(0x12, as: UInt16.self) == 3)
    }

    @Test func queueRegistersTakeOnlyValidValues() throws {
        let bed = try NetTestBed()
        try bed.driver.setCommon(0x16, UInt16(0))
        #expect(try bed.driver.common(0x18, as: UInt16.self) == 256)
        try bed.driver.setCommon(0x18, UInt16(100))
        #expect(try bed.driver.common(0x18, as: UInt16.self) == 256) // not a power of two
        try bed.driver.setCommon(0x18, UInt16(128))
        #expect(try bed.driver.common(0x18, as: UInt16.self) == 128)
        try bed.driver.setCommon(0x1A, UInt16(9))
        #expect(try bed.driver.common(0x1A, as: UInt16.self) == virtioNoVector) // beyond the table
        try bed.driver.setCommon(0x1A, UInt16(2))
        #expect(try bed.driver.common(0x1A, as: UInt16.self) == 2)
        try bed.driver.setCommon(0x16, UInt16(7))
        #expect(try bed.driver.common(0x18, as: UInt16.self) == 0) // no such queue
    }

    @Test func statusZeroResetsEverything() throws {
        let bed = try NetTestBed()
        try bed.up()
        #expect(try bed.driver.status.contains(.driverOK))
        try bed.driver.setStatus([])
        #expect(try bed.driver.status.rawValue == 0)
        try bed.driver.setCommon(0x16, UInt16(0))
        #expect(try bed.driver.common(0x1C, as: UInt16.self) == 0)
        #expect(try bed.driver.common(0x20, as: UInt32.self) == 0)
    }

    @Test func queueSetupIsFrozenOnceRunning() throws {
        let bed = try NetTestBed()
        try bed.up()
        try bed.driver.setCommon(0x16, UInt16(1))
        let table = try bed.driver.common(0x20, as: UInt32.self)
        try bed.driver.setCommon(0x20, UInt32(0x1234_5000))
        #expect(try bed.driver.common(0x20, as: UInt32.self) == table)
    }

    @Test func withoutMSIXTheISRSaysWhyAndClearsWhenRead() throws {
        let bed = try NetTestBed()
        let intx = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try bed.driver.client.setIRQs(.intx, [.dataEventfd, .actionTrigger], fds: [intx.descriptor])
        try bed.up(useMSIX: false)
        try bed.driver.postReceiveBuffers(8)
        bed.wireSend(NetTestBed.frame(length: 60))
        #expect(fired(intx, waitingMilliseconds: 3000) == 1)
        #expect(try bed.driver.readISR() == 1) // a queue interrupt
        #expect(try bed.driver.readISR() == 0) // read-to-clear
        #expect(try bed.driver.receive(count: 1).count == 1)
    }

    /// `msix=off`: no MSI-X capability and no BAR for its table, vectors read back as NO_VECTOR,
    /// and frames flow both ways with INTx and the ISR alone.
    @Test func aNICWithoutMSIXHasNoTableAndRunsOnINTx() throws {
        let bed = try NetTestBed(msix: false)
        let client = bed.driver.client
        let config = try client.read(.config, offset: 0, count: 256)
        var capabilities: [UInt8] = []
        var cap = Int(config[0x34])
        while cap != 0 && capabilities.count < 48 { capabilities.append(config[cap]); cap = Int(config[cap + 1]) }
        #expect(capabilities == [0x09, 0x09, 0x09, 0x09, 0x09, 0x01], "five virtio structures and power management")
        #expect(try client.regionInfo(.bar1).info.size == 0)
        #expect(try client.irqInfo(.msix).count == 0)
        try bed.driver.setCommon(0x16, UInt16(0))
        try bed.driver.setCommon(0x1A, UInt16(0))
        #expect(try bed.driver.common(0x1A, as: UInt16.self) == virtioNoVector)

        let intx = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try client.setIRQs(.intx, [.dataEventfd, .actionTrigger], fds: [intx.descriptor])
        try bed.up(useMSIX: false)
        try bed.driver.postReceiveBuffers(8)
        bed.wireSend(NetTestBed.frame(length: 60))
        #expect(fired(intx, waitingMilliseconds: 3000) == 1)
        #expect(try bed.driver.readISR() == 1)
        #expect(try bed.driver.receive(count: 1).count == 1)
        #expect(try bed.driver.transmit([NetTestBed.frame(to: [0x52, 0x54, 0, 0, 0, 9], length: 100, seed: 3)]) == 1)
        #expect(try bed.wireReceive() == NetTestBed.frame(to: [0x52, 0x54, 0, 0, 0, 9], length: 100, seed: 3))
    }

    @Test func thePCICfgWindowReachesTheStructures() throws {
        let bed = try NetTestBed()
        let client = bed.driver.client
        // Find the PCI_CFG capability (cfg_type 5).
        let config = try client.read(.config, offset: 0, count: 256)
        var cap = Int(config[0x34])
        while cap != 0 && !(config[cap] == 0x09 && config[cap + 3] == 5) { cap = Int(config[cap + 1]) }
        #expect(cap != 0)
        try client.write(.config, offset: UInt64(cap + 4), value: UInt8(4)) // bar
        try client.write(.config, offset: UInt64(cap + 8), value: UInt32(0x2000)) // device config
        try client.write(.config, offset: UInt64(cap + 12), value: UInt32(4))
        #expect(try client.read(.config, offset: UInt64(cap + 16), count: 4) == Array(NetTestBed.mac[0..<4]))
        try client.write(.config, offset: UInt64(cap + 8), value: UInt32(0x0000)) // common: device_feature_select
        try client.write(.config, offset: UInt64(cap + 16), value: UInt32(1))
        #expect(try bed.driver.common(0x00, as: UInt32.self) == 1)
    }
}

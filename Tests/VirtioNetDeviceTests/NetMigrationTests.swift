import RegionEmulation
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VirtioNetDevice
import VirtioDriver
#if canImport(Glibc)
import Glibc
#endif

@Suite("virtio-net migration")
struct NetMigrationTests {
    /// A frame tagged with its sequence number.
    static func numbered(_ sequence: Int, length: Int = 100) -> [UInt8] {
        TestFrame.make(to: NetTestBed.mac, length: length, tag: sequence)
    }

    static func sequence(of frame: [UInt8]) -> Int { TestFrame.tag(of: frame) }

    /// Mid-traffic: frames the source sent, frames published but not yet taken (carried by the
    /// rings' positions), frames delivered but not yet collected, and a received frame waiting
    /// for buffers (carried in the state). Each must arrive exactly once across the move.
    @Test(arguments: [false, true])
    func nothingIsLostOrDuplicatedAcrossTheMove(messageMode: Bool) throws {
        let sourceWire = try RecordingBackend(), destinationWire = try RecordingBackend()
        let sourceModel = try VirtioNetDevice(backend: sourceWire, mac: NetTestBed.mac)
        let destinationModel = try VirtioNetDevice(backend: destinationWire, mac: NetTestBed.mac)
        let source = try TestServer(model: sourceModel), destination = try TestServer(model: destinationModel)
        let driver = try VirtioNetDriver(path: source.path, messageMode: messageMode)
        #expect(try driver.negotiate(NetTestBed.defaultFeatures))
        try driver.start()
        let destinationClient = try destination.attach()
        try driver.mapMemory(on: destinationClient)
        func sequences() -> [Int] { (sourceWire.frames + destinationWire.frames).map(Self.sequence) }
        func waitForWire(_ count: Int) throws {
            for _ in 0..<5000 where sequences().count < count { try driver.wait(milliseconds: 1) }
        }

        // Receive: three 2 KiB buffers; A and B fit, C (3000 bytes) needs two and waits.
        try driver.postReceiveBuffers(3)
        let a = Self.numbered(1000), b = Self.numbered(1001), c = Self.numbered(1002, length: 3000), d = Self.numbered(1003)
        for frame in [a, b, c] { sourceWire.inject(frame) }
        var received = try driver.receive(count: 2).map(\.frame)
        #expect(received == [a, b])

        // Transmit: 0..<50 sent by the source; 50..<100 only published, not kicked, when it stops.
        #expect(try driver.transmit((0..<50).map { Self.numbered($0) }) == 50)
        try waitForWire(50)
        #expect(try driver.reclaimTransmitted(waitingFor: 50) == 50)
        try driver.wait(milliseconds: 20) // the source's datapath goes back to waiting for a kick
        #expect(try driver.transmit((50..<100).map { Self.numbered($0) }, kick: false) == 50)

        let report = try MigrationDriver().migrate(from: driver.client, to: destinationClient)
        #expect(report.preCopyBytes > 0 && report.stopCopyBytes > 0)
        try driver.move(to: destinationClient)

        // The destination carries on where the source stopped.
        try waitForWire(100)
        #expect(sequences() == Array(0..<100), "every frame once, in order")
        if !messageMode {
            #expect(sourceWire.frames.count == 50 && destinationWire.frames.count == 50, "the second half went out of the destination")
        } // (with DMA by messages the source may still be busy with the ring when it is published)
        #expect(try driver.reclaimTransmitted(waitingFor: 50) == 50)

        try driver.postReceiveBuffers(4)
        destinationWire.inject(d)
        received += try driver.receive(count: 2).map(\.frame)
        #expect(received == [a, b, c, d], "C crossed in the state, D arrived at the destination")
        try driver.wait(milliseconds: 50)
        #expect(sequences().count == 100, "and nothing more")
    }

    @Test func theDestinationHasTheSourcesRegistersFilterAndMAC() throws {
        let bed = try NetTestBed()
        try bed.up()
        #expect(try bed.driver.control(class: 0, command: 0, data: [0]) == 0) // promiscuous off
        let newMAC: [UInt8] = [0x52, 0x54, 0x00, 0xAA, 0xBB, 0xCC]
        #expect(try bed.driver.control(class: 1, command: 1, data: newMAC) == 0)
        let destinationModel = try VirtioNetDevice(backend: SinkBackend(), mac: [0x52, 0x54, 0, 0, 0, 1])
        let destination = try TestServer(model: destinationModel)
        let to = try destination.attach()
        try bed.driver.mapMemory(on: to)
        let source = bed.driver.client
        try MigrationDriver().migrate(from: source, to: to)
        try bed.driver.move(to: to)
        #expect(destinationModel.mac == newMAC)
        #expect(destinationModel.filter == bed.model.filter)
        #expect(try bed.driver.config(0, count: 6) == newMAC)
        #expect(try bed.driver.status == [.acknowledge, .driver, .featuresOK, .driverOK])
        #expect(destinationModel.transport.negotiatedFeatures == bed.model.transport.negotiatedFeatures)
        for queue in 0..<3 {
            #expect(destinationModel.transport.queueConfiguration(queue) == bed.model.transport.queueConfiguration(queue))
        }
        // MSI-X came across: the destination's table holds what the driver programmed.
        #expect(destination.device.function.interrupts.isEnabled(.msix))
        #expect(try to.read(.config, offset: 0, as: UInt32.self) == 0x1041_1AF4)
    }

    /// A driver that took indirect tables with mapped RAM keeps them on a destination whose RAM
    /// comes without an fd, though that device would not offer them to a new driver.
    @Test func aDestinationReachingRAMByMessagesTakesIndirectTablesNegotiatedBefore() throws {
        let bed = try NetTestBed()
        try bed.up()
        #expect(bed.driver.features.contains(.ringIndirectDescriptors))
        let other = try VirtioNetDevice(backend: SinkBackend(), mac: NetTestBed.mac)
        let destination = try TestServer(model: other)
        let to = try destination.attach()
        try to.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: bed.driver.ram.base, size: UInt64(bed.driver.ram.size)), fd: nil)
        #expect(!other.offeredFeatures.contains(.ringIndirectDescriptors))
        let from = bed.driver.client
        try from.setMigrationState(.stopCopy)
        let stream = try from.migrationDataRead(size: 1 << 20)
        try to.setMigrationState(.resuming)
        try to.migrationDataWrite(stream)
        try to.setMigrationState(.running)
        #expect(other.transport.negotiatedFeatures.contains(.ringIndirectDescriptors))
    }

    /// The driver set up rings of 256: a device that takes at most 64 cannot run them.
    @Test func aDestinationWithSmallerRingsRefusesTheState() throws {
        let bed = try NetTestBed()
        try bed.up()
        let other = try VirtioNetDevice(backend: SinkBackend(), mac: NetTestBed.mac, queueSize: 64)
        let destination = try TestServer(model: other)
        let to = try destination.attach()
        let from = bed.driver.client
        try from.setMigrationState(.stopCopy)
        let stream = try from.migrationDataRead(size: 1 << 20)
        try to.setMigrationState(.resuming)
        try to.migrationDataWrite(stream)
        expectErrno(.invalidArgument) { try to.setMigrationState(.running) }
        #expect(try to.migrationState() == .error, "queues of 256 do not fit a device of at most 64")
    }

    /// Dirty logging over the guest's RAM sees exactly what the NIC wrote on a receive: the
    /// buffer, the used ring's element and index, and avail_event (EVENT_IDX).
    @Test func dirtyLoggingSeesExactlyThePagesTheNICWrote() throws {
        let bed = try NetTestBed()
        try bed.up()
        let ram = bed.driver.ram
        try bed.driver.client.startDirtyLogging(ranges: [DMARange(iova: ram.base, length: UInt64(ram.size))])
        let buffer = ram.allocate(0, alignment: 4096) // the next allocation: the receive buffer
        try bed.driver.postReceiveBuffers(1)
        let frame = NetTestBed.frame(length: 100)
        bed.wireSend(frame)
        #expect(try bed.driver.receive(count: 1).map(\.frame) == [frame])
        let bitmap = try bed.driver.client.dirtyPages(iova: ram.base, length: UInt64(ram.size))
        let reported = Set((0..<(bitmap.count * 64)).filter { bitmap[$0 / 64] & (1 << UInt64($0 % 64)) != 0 })
        let used = bed.driver.rx.usedRing, size = UInt64(bed.driver.rx.size)
        let written = [buffer, buffer + UInt64(VirtioNetHeader.size + frame.count - 1), used + 2, used + 4, used + 4 + 8 * size]
        let page = { (address: UInt64) in Int((address - ram.base) / 4096) }
        // The transmit and control queues' threads, going to sleep after DRIVER_OK, write their own
        // avail_event whenever they get there: possibly after logging started. Nothing else may show.
        let idle = [bed.driver.tx, bed.driver.ctrl].compactMap { $0 }.map { $0.usedRing + 4 + 8 * UInt64($0.size) }
        #expect(Set(written.map(page)).isSubset(of: reported))
        #expect(reported.isSubset(of: Set((written + idle).map(page))), "pages written: \(reported.sorted())")
    }
}

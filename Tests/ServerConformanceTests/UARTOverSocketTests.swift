import MttyDevice
import Support
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VfioUserServer

@Suite("mtty over the socket")
struct UARTOverSocketTests {
    @Test func bytesLoopBackThroughEachPort() throws {
        let server = try TestServer()
        let client = try server.attach()
        for bar in [RegionIndex.bar0, .bar1] {
            try client.write(bar, offset: 2, value: UART16550.fcrEnable)
            // One THR write per byte: a 4-byte write at offset 0 would span THR, IER, FCR and LCR.
            for byte in Array("ping".utf8) { try client.write(bar, offset: 0, value: byte) }
            #expect(try client.read(bar, offset: 5, as: UInt8.self) & UART16550.lsrDataReady != 0)
            let echoed = try (0..<4).map { _ in try client.read(bar, offset: 0, as: UInt8.self) }
            #expect(echoed == Array("ping".utf8))
        }
    }

    @Test func aWideAccessIsSplitIntoByteRegisters() throws {
        let server = try TestServer()
        let client = try server.attach()
        try client.write(.bar0, offset: 6, data: [0x99, 0x5A]) // MSR (read-only) and SCR
        #expect(try client.read(.bar0, offset: 7, as: UInt8.self) == 0x5A)
        let pair = try client.read(.bar0, offset: 6, count: 2)
        #expect(pair[1] == 0x5A)
    }

    @Test func aPostedWriteGetsNoReply() throws {
        let server = try TestServer()
        let client = try server.attach()
        for value in 0..<100 { try client.write(.bar1, offset: 7, value: UInt8(value), posted: true) }
        // awaitReply insists the next reply is the read's: a reply to any posted write would fail it.
        #expect(try client.read(.bar1, offset: 7, as: UInt8.self) == 99)
    }

    @Test func writeMultiAppliesEveryEntryInOrder() throws {
        let server = try TestServer()
        let client = try server.attach()
        let entries = (0..<200).map { RegionWriteMulti.Entry(offset: 7, region: .bar0, count: 1, data: UInt64($0 & 0xFF)) }
        #expect(try client.writeMulti(entries, posted: false) == 200)
        _ = try client.writeMulti([.init(offset: 2, region: .bar0, count: 1, data: 1), .init(offset: 0, region: .bar0, count: 1, data: 0x41),
                               .init(offset: 0, region: .bar0, count: 1, data: 0x42)])
        #expect(try client.read(.bar0, offset: 0, as: UInt8.self) == 0x41)
        #expect(try client.read(.bar0, offset: 0, as: UInt8.self) == 0x42)
        #expect(try client.read(.bar0, offset: 7, as: UInt8.self) == 199)
    }

    @Test func intxFiresAndStaysMaskedUntilUnmask() throws {
        let server = try TestServer()
        let client = try server.attach()
        let eventfd = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try client.setIRQs(.intx, [.dataEventfd, .actionTrigger], fds: [eventfd.descriptor])
        try client.write(.bar0, offset: 2, value: UART16550.fcrEnable)
        try client.write(.bar0, offset: 1, value: UART16550.ierRDI)
        try client.write(.bar0, offset: 0, value: UInt8(0x31))
        #expect(fired(eventfd, waitingMilliseconds: 1000) == 1)
        // Still asserted and automasked: more data raises nothing new.
        try client.write(.bar0, offset: 0, value: UInt8(0x32))
        #expect(fired(eventfd) == 0)
        // Drain (line drops), new data (line rises) while still masked: nothing yet.
        _ = try client.read(.bar0, offset: 0, as: UInt8.self)
        _ = try client.read(.bar0, offset: 0, as: UInt8.self)
        try client.write(.bar0, offset: 0, value: UInt8(0x33))
        #expect(fired(eventfd) == 0)
        // UNMASK with the line high: delivered now.
        try client.setIRQs(.intx, [.dataNone, .actionUnmask])
        #expect(fired(eventfd, waitingMilliseconds: 1000) == 1)
        // A manual trigger (DATA_NONE|TRIGGER) while masked waits for the next unmask too.
        _ = try client.read(.bar0, offset: 0, count: 1)
        try client.setIRQs(.intx, [.dataBool, .actionUnmask], data: [1])
        #expect(fired(eventfd) == 0)
        try client.setIRQs(.intx, [.dataNone, .actionTrigger])
        #expect(fired(eventfd, waitingMilliseconds: 1000) == 1)
    }

    @Test func intxUnmaskEventfdUnmasksWhenTheClientSignalsIt() throws {
        let server = try TestServer()
        let client = try server.attach()
        let trigger = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        let resample = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try client.setIRQs(.intx, [.dataEventfd, .actionTrigger], fds: [trigger.descriptor])
        try client.setIRQs(.intx, [.dataNone, .actionMask])
        try client.setIRQs(.intx, [.dataEventfd, .actionUnmask], fds: [resample.descriptor])
        try client.write(.bar0, offset: 1, value: UART16550.ierTHRI) // THR empty: raises the line
        #expect(fired(trigger) == 0)
        try resample.signalEventfd() // KVM's resamplefd on EOI does this
        #expect(fired(trigger, waitingMilliseconds: 2000) == 1)
    }

    @Test func intxDisableRaisesNothingAndCountZeroUnassigns() throws {
        let server = try TestServer()
        let client = try server.attach()
        let eventfd = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try client.setIRQs(.intx, [.dataEventfd, .actionTrigger], fds: [eventfd.descriptor])
        try client.setIRQs(.intx, [.dataNone, .actionTrigger], count: 0)
        try client.write(.bar0, offset: 1, value: UART16550.ierTHRI)
        #expect(fired(eventfd, waitingMilliseconds: 100) == 0)
    }
}

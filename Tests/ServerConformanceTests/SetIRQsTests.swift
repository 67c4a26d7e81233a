import RegionEmulation
import Support
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VfioUserServer

/// SET_IRQS against a device with INTx, 4 MSI vectors, 2048 MSI-X vectors, ERR and REQ: the cases of
/// libvfio-user's test_device_set_irqs.py and more, each with the errno it gets or, when it
/// succeeds, what success means, seen from the client: which eventfds fire when the vectors are
/// triggered afterwards (SET_IRQS DATA_NONE|TRIGGER), and which stay silent.
@Suite("SET_IRQS matrix")
struct SetIRQsMatrixTests {
    /// What a request that succeeds must have done.
    enum Effect: Sendable {
        /// The eventfds it carried are on vectors start..<start+count: each fires once when its vector is triggered.
        case assigned
        /// An eventfd assigned to vector `start` before the request no longer fires.
        case unassigned
        /// MSI-X vector `start`, with an eventfd assigned before, holds a trigger pending instead of
        /// firing, and fires once when unmasked.
        case masked
        /// INTx with an eventfd assigned before, automasked by a first trigger, is unmasked when
        /// the client signals the eventfd the request carried (KVM's resample on EOI).
        case resample
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        let flags: UInt32
        let index: UInt32
        let start: UInt32
        let count: UInt32
        var argsz: UInt32? = nil
        var data: [UInt8] = []
        var fdCount = 0
        let errno: Errno?
        var effect: Effect? = nil
        var testDescription: String { name }
    }

    static let none = SetIRQsFlags.dataNone.rawValue, bool = SetIRQsFlags.dataBool.rawValue, eventfd = SetIRQsFlags.dataEventfd.rawValue
    static let mask = SetIRQsFlags.actionMask.rawValue, unmask = SetIRQsFlags.actionUnmask.rawValue, trigger = SetIRQsFlags.actionTrigger.rawValue
    static let msix: UInt32 = 2, msi: UInt32 = 1, intx: UInt32 = 0, err: UInt32 = 3, req: UInt32 = 4

    static let cases: [Case] = [
        // libvfio-user's cases
        Case(name: "argsz 3", flags: trigger | none, index: req, start: 0, count: 0, argsz: 3, errno: .invalidArgument),
        Case(name: "index past the last", flags: trigger | none, index: 5, start: 0, count: 0, errno: .invalidArgument),
        Case(name: "MASK and UNMASK", flags: mask | unmask, index: msix, start: 0, count: 0, errno: .invalidArgument),
        Case(name: "DATA_NONE and DATA_BOOL", flags: mask | none | bool, index: msix, start: 0, count: 0, errno: .invalidArgument),
        Case(name: "start+count past the end", flags: mask | none, index: msix, start: 2047, count: 2, errno: .invalidArgument),
        Case(name: "start past the end", flags: mask | none, index: msix, start: 2049, count: 1, errno: .invalidArgument),
        Case(name: "MASK on ERR", flags: mask | none, index: err, start: 0, count: 1, errno: .invalidArgument),
        Case(name: "MASK on REQ", flags: mask | none, index: req, start: 0, count: 1, errno: .invalidArgument),
        Case(name: "ERR count 2", flags: trigger | none, index: err, start: 0, count: 2, errno: .invalidArgument),
        Case(name: "REQ count 2", flags: trigger | none, index: req, start: 0, count: 2, errno: .invalidArgument),
        Case(name: "count 0 with start 1", flags: mask | none, index: msix, start: 1, count: 0, errno: .invalidArgument),
        Case(name: "count 0 with MASK", flags: mask | none, index: msix, start: 0, count: 0, errno: .invalidArgument),
        Case(name: "count 0 with DATA_BOOL", flags: trigger | bool, index: msix, start: 0, count: 0, errno: .invalidArgument),
        Case(name: "fd with DATA_BOOL", flags: trigger | bool, index: msix, start: 0, count: 1, argsz: 21, data: [0], fdCount: 1, errno: .invalidArgument),
        Case(name: "fd with DATA_NONE", flags: trigger | none, index: msix, start: 0, count: 1, fdCount: 1, errno: .invalidArgument),
        Case(name: "one fd for count 2", flags: trigger | eventfd, index: msix, start: 0, count: 2, fdCount: 1, errno: .invalidArgument),
        Case(name: "DATA_BOOL one byte short", flags: trigger | bool, index: msix, start: 0, count: 2, argsz: 21, data: [0], errno: .invalidArgument),
        Case(name: "DATA_BOOL one byte long", flags: trigger | bool, index: msix, start: 0, count: 2, argsz: 23, data: [0, 0, 0], errno: .invalidArgument),
        Case(name: "disable REQ", flags: trigger | none, index: req, start: 0, count: 0, errno: nil, effect: .unassigned),
        Case(name: "REQ eventfd run without fds unassigns", flags: trigger | eventfd, index: req, start: 0, count: 1, errno: nil, effect: .unassigned),
        Case(name: "assign an MSI-X eventfd", flags: trigger | eventfd, index: msix, start: 0, count: 1, fdCount: 1, errno: nil, effect: .assigned),
        Case(name: "mask an MSI-X vector", flags: mask | none, index: msix, start: 0, count: 1, errno: nil, effect: .masked),
        // More
        Case(name: "no DATA flag", flags: trigger, index: msix, start: 0, count: 1, errno: .invalidArgument),
        Case(name: "no ACTION flag", flags: none, index: msix, start: 0, count: 1, errno: .invalidArgument),
        Case(name: "unknown flag bit", flags: trigger | none | 0x40, index: msix, start: 0, count: 1, errno: .invalidArgument),
        Case(name: "count overflows start", flags: trigger | none, index: msix, start: 1, count: UInt32.max, errno: .invalidArgument),
        Case(name: "index 2^32-1", flags: trigger | none, index: UInt32.max, start: 0, count: 1, errno: .invalidArgument),
        Case(name: "MSI run of 4 eventfds", flags: trigger | eventfd, index: msi, start: 0, count: 4, fdCount: 4, errno: nil, effect: .assigned),
        Case(name: "MSI run past its 4 vectors", flags: trigger | eventfd, index: msi, start: 3, count: 2, fdCount: 2, errno: .invalidArgument),
        Case(name: "16 MSI-X eventfds in one message", flags: trigger | eventfd, index: msix, start: 100, count: 16, fdCount: 16, errno: nil,
             effect: .assigned),
        Case(name: "17 fds: more than max_msg_fds", flags: trigger | eventfd, index: msix, start: 100, count: 17, fdCount: 17, errno: .invalidArgument),
        Case(name: "MASK with an eventfd", flags: mask | eventfd, index: intx, start: 0, count: 1, fdCount: 1, errno: .inappropriateIOCTLForDevice),
        Case(name: "UNMASK eventfd on MSI-X", flags: unmask | eventfd, index: msix, start: 0, count: 1, fdCount: 1, errno: .inappropriateIOCTLForDevice),
        Case(name: "UNMASK eventfd on INTx (resample)", flags: unmask | eventfd, index: intx, start: 0, count: 1, fdCount: 1, errno: nil,
             effect: .resample),
        Case(name: "UNMASK on ERR", flags: unmask | none, index: err, start: 0, count: 1, errno: .invalidArgument),
        Case(name: "DATA_NONE with data bytes", flags: trigger | none, index: msix, start: 0, count: 1, argsz: 22, data: [1, 1], errno: .invalidArgument),
        Case(name: "disable INTx", flags: trigger | none, index: intx, start: 0, count: 0, errno: nil, effect: .unassigned),
        Case(name: "disable MSI-X", flags: trigger | none, index: msix, start: 0, count: 0, errno: nil, effect: .unassigned),
    ]

    @Test(arguments: cases)
    func answersWithTheRightErrnoOrDoesWhatItSays(_ c: Case) throws {
        let server = try TestServer(model: CapabilityTestDevice())
        let client = try server.attach()
        let index = IRQIndex(rawValue: c.index)
        // An eventfd already on the vector the request acts on, for the effects that need one.
        let earlier = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        if let effect = c.effect, effect != .assigned {
            try client.setIRQs(index, [.dataEventfd, .actionTrigger], start: c.start, count: 1, fds: [earlier.descriptor])
        }
        let eventfds = try (0..<c.fdCount).map { _ in try OwnedFileDescriptor.eventfd(nonBlocking: true) }
        let payload = le(c.argsz ?? UInt32(20 + c.data.count)) + le(c.flags) + le(c.index) + le(c.start) + le(c.count) + c.data
        if let errno = c.errno {
            expectErrno(errno) { try client.request(.deviceSetIRQs, payload: payload, fds: eventfds.map(\.descriptor)) }
        } else {
            try client.request(.deviceSetIRQs, payload: payload, fds: eventfds.map(\.descriptor))
        }
        /// Triggers one vector as the client can (DATA_NONE|TRIGGER).
        func trigger(_ vector: UInt32) throws { try client.setIRQs(index, [.dataNone, .actionTrigger], start: vector, count: 1) }
        switch c.effect {
        case nil:
            #expect(c.errno != nil, "a success case says what success means")
        case .assigned:
            for k in eventfds.indices {
                try trigger(c.start + UInt32(k))
                #expect(eventfds.map { fired($0) } == eventfds.indices.map { $0 == k ? 1 : 0 }, "vector \(c.start + UInt32(k)) fires its own eventfd")
            }
        case .unassigned:
            try trigger(c.start)
            #expect(fired(earlier) == 0, "the eventfd assigned before is gone")
        case .masked:
            try trigger(c.start)
            #expect(fired(earlier) == 0, "masked: the interrupt waits")
            try client.setIRQs(index, [.dataNone, .actionUnmask], start: c.start, count: 1)
            #expect(fired(earlier) == 1, "unmasked: the pending interrupt fires once")
        case .resample:
            try trigger(0)
            #expect(fired(earlier) == 1)
            try trigger(0)
            #expect(fired(earlier) == 0, "automasked after the first: the second waits")
            try eventfds[0].signalEventfd() // the guest's EOI, as KVM signals it
            #expect(fired(earlier, waitingMilliseconds: 2000) == 1, "unmasked by the resample eventfd: the waiting one fires")
        }
        #expect(try client.irqInfo(.msix).count == 2048, "the session goes on")
    }

    @Test func tooShortPayloadsAreEINVAL() throws {
        let server = try TestServer(model: CapabilityTestDevice())
        let client = try server.attach()
        expectErrno(.invalidArgument) { try client.request(.deviceSetIRQs, payload: []) }
        expectErrno(.invalidArgument) { try client.request(.deviceSetIRQs, payload: le(UInt32(0)) + le(UInt32(0))) }
    }

    @Test func triggerWithDataNoneAndDataBoolFiresTheSelectedVectors() throws {
        let server = try TestServer(model: CapabilityTestDevice())
        let client = try server.attach()
        let fd1 = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        let fd2 = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try fd1.signalEventfd(4)
        try fd2.signalEventfd(8)
        try client.setIRQs(.msix, [.dataEventfd, .actionTrigger], start: 0, count: 2, fds: [fd1.descriptor, fd2.descriptor])
        try client.setIRQs(.msix, [.dataNone, .actionTrigger], start: 1, count: 1)
        #expect(fired(fd1) == 4 && fired(fd2) == 9)
        try fd1.signalEventfd(4)
        try fd2.signalEventfd(8)
        try client.setIRQs(.msix, [.dataBool, .actionTrigger], start: 0, count: 2, data: [0, 1])
        #expect(fired(fd1) == 4 && fired(fd2) == 9)
    }

    @Test func anFdLessEventfdRunUnassignsWhatQEMUSendsForUnusedVectors() throws {
        let server = try TestServer(model: CapabilityTestDevice())
        let client = try server.attach()
        let fds = try (0..<3).map { _ in try OwnedFileDescriptor.eventfd() }
        try client.setIRQs(.msix, [.dataEventfd, .actionTrigger], start: 0, count: 3, fds: fds.map(\.descriptor))
        #expect(server.device.function.interrupts.assignedEventfdCount == 3)
        try client.setIRQs(.msix, [.dataEventfd, .actionTrigger], start: 1, count: 2)
        #expect(server.device.function.interrupts.assignedEventfdCount == 1)
        #expect(server.device.function.interrupts.hasTrigger(.msix, vector: 0))
    }

    @Test func irqInfoIsHonestPerIndex() throws {
        let server = try TestServer(model: CapabilityTestDevice())
        let client = try server.attach()
        #expect(try client.irqInfo(.intx) == IRQInfo(flags: [.eventfd, .maskable, .automasked], index: .intx, count: 1))
        #expect(try client.irqInfo(.msi) == IRQInfo(flags: [.eventfd, .maskable, .noResize], index: .msi, count: 4))
        #expect(try client.irqInfo(.msix) == IRQInfo(flags: [.eventfd, .maskable], index: .msix, count: 2048))
        #expect(try client.irqInfo(.err) == IRQInfo(flags: .eventfd, index: .err, count: 1))
        #expect(try client.irqInfo(.req) == IRQInfo(flags: .eventfd, index: .req, count: 1))
    }
}

@Suite("MSI, MSI-X and the PBA over the socket")
struct MessageSignalledOverSocketTests {
    static let tableBAR = RegionIndex.bar2
    static let pbaOffset: UInt64 = 0x8000

    @Test func aVectorMaskedInTheTableShowsPendingInThePBAAndFiresOnUnmask() throws {
        let server = try TestServer(model: CapabilityTestDevice())
        let client = try server.attach()
        let fd = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try client.setIRQs(.msix, [.dataEventfd, .actionTrigger], start: 7, count: 1, fds: [fd.descriptor])
        try client.write(Self.tableBAR, offset: 7 * 16 + 12, value: UInt32(1)) // vector control: mask
        #expect(try client.read(Self.tableBAR, offset: 7 * 16 + 12, as: UInt32.self) == 1)
        try client.write(.bar0, offset: 0x00, value: UInt32(7)) // the device raises vector 7
        #expect(fired(fd) == 0)
        #expect(try client.read(Self.tableBAR, offset: Self.pbaOffset, as: UInt64.self) == 1 << 7)
        try client.write(Self.tableBAR, offset: 7 * 16 + 12, value: UInt32(0))
        #expect(fired(fd, waitingMilliseconds: 1000) == 1)
        #expect(try client.read(Self.tableBAR, offset: Self.pbaOffset, as: UInt64.self) == 0)
    }

    @Test func tableEntriesKeepWhatTheClientWrites() throws {
        let server = try TestServer(model: CapabilityTestDevice())
        let client = try server.attach()
        try client.write(Self.tableBAR, offset: 2047 * 16, value: UInt64(0xFEE0_1000))
        try client.write(Self.tableBAR, offset: 2047 * 16 + 8, value: UInt32(0x4041))
        #expect(try client.read(Self.tableBAR, offset: 2047 * 16, as: UInt64.self) == 0xFEE0_1000)
        #expect(server.device.function.msixEntry(2047)! == (0xFEE0_1000, 0x4041))
        // Power-on state: every vector masked; the last QWORD of the PBA covers vectors 1984-2047.
        #expect(try client.read(Self.tableBAR, offset: 5 * 16 + 12, as: UInt32.self) == 1)
        #expect(try client.read(Self.tableBAR, offset: Self.pbaOffset + 248, as: UInt64.self) == 0)
        try client.write(Self.tableBAR, offset: Self.pbaOffset, value: UInt64.max) // the PBA is read-only
        #expect(try client.read(Self.tableBAR, offset: Self.pbaOffset, as: UInt64.self) == 0)
    }

    @Test func msixEnableInConfigSpaceAndSETIRQSAgree() throws {
        let server = try TestServer(model: CapabilityTestDevice())
        let client = try server.attach()
        let control: UInt64 = 0x62
        #expect(try client.read(.config, offset: control, as: UInt16.self) & 0x8000 == 0)
        let fd = try OwnedFileDescriptor.eventfd()
        try client.setIRQs(.msix, [.dataEventfd, .actionTrigger], start: 0, count: 1, fds: [fd.descriptor])
        #expect(try client.read(.config, offset: control, as: UInt16.self) & 0x8000 != 0)
        try client.setIRQs(.msix, [.dataNone, .actionTrigger], count: 0)
        #expect(try client.read(.config, offset: control, as: UInt16.self) & 0x8000 == 0)
        try client.write(.config, offset: control, value: UInt16(0x8000))
        #expect(server.device.function.interrupts.isEnabled(.msix))
        #expect(server.device.function.interruptMode == .msix)
        try client.write(.config, offset: control, value: UInt16(0))
        #expect(server.device.function.interruptMode == .intx)
    }

    @Test func msiPerVectorMaskBitsInConfigSpaceHoldAndPendingBitsShow() throws {
        let server = try TestServer(model: CapabilityTestDevice())
        let client = try server.attach()
        let fds = try (0..<4).map { _ in try OwnedFileDescriptor.eventfd(nonBlocking: true) }
        try client.setIRQs(.msi, [.dataEventfd, .actionTrigger], start: 0, count: 4, fds: fds.map(\.descriptor))
        #expect(try client.read(.config, offset: 0x4A, as: UInt16.self) & 1 == 1) // MSI enabled, in step
        try client.write(.config, offset: 0x58, value: UInt32(0b0100)) // mask vector 2
        try client.write(.bar0, offset: 0x04, value: UInt32(2))
        try client.write(.bar0, offset: 0x04, value: UInt32(1))
        #expect(fds.map { fired($0) } == [0, 1, 0, 0])
        #expect(try client.read(.config, offset: 0x5C, as: UInt32.self) == 0b0100) // pending bits
        try client.write(.config, offset: 0x58, value: UInt32(0))
        #expect(fired(fds[2], waitingMilliseconds: 1000) == 1)
        #expect(try client.read(.config, offset: 0x5C, as: UInt32.self) == 0)
    }

    @Test func setIRQsMaskAndUnmaskWorkOnMSIXVectors() throws {
        let server = try TestServer(model: CapabilityTestDevice())
        let client = try server.attach()
        let fd = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try client.setIRQs(.msix, [.dataEventfd, .actionTrigger], start: 3, count: 1, fds: [fd.descriptor])
        try client.setIRQs(.msix, [.dataNone, .actionMask], start: 3, count: 1)
        try client.write(.bar0, offset: 0x00, value: UInt32(3))
        #expect(fired(fd) == 0)
        #expect(try client.read(Self.tableBAR, offset: 3 * 16 + 12, as: UInt32.self) == 1) // the table agrees
        try client.setIRQs(.msix, [.dataBool, .actionUnmask], start: 3, count: 1, data: [1])
        #expect(fired(fd, waitingMilliseconds: 1000) == 1)
    }

    @Test func errAndReqNotificationsReachTheirEventfds() throws {
        let server = try TestServer(model: CapabilityTestDevice())
        let client = try server.attach()
        let err = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        let req = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try client.setIRQs(.err, [.dataEventfd, .actionTrigger], fds: [err.descriptor])
        try client.setIRQs(.req, [.dataEventfd, .actionTrigger], fds: [req.descriptor])
        try client.write(.bar0, offset: 0x0C, value: UInt32(1))
        try client.write(.bar0, offset: 0x10, value: UInt32(1))
        #expect(fired(err, waitingMilliseconds: 1000) == 1)
        #expect(fired(req, waitingMilliseconds: 1000) == 1)
    }

    @Test func functionLevelResetThroughConfigSpaceResetsTheDevice() throws {
        let model = CapabilityTestDevice()
        let server = try TestServer(model: model)
        let client = try server.attach()
        try client.write(.config, offset: 0x04, value: UInt16(0x0006))
        try client.write(.config, offset: 0x6C + 8, value: UInt16(0x8000))
        #expect(try client.read(.bar0, offset: 0x20, as: UInt32.self) == 1)
        #expect(try client.read(.config, offset: 0x04, as: UInt16.self) == 0)
    }

    @Test func extendedConfigSpaceIs4096BytesWithTheSerialNumber() throws {
        let server = try TestServer(model: CapabilityTestDevice())
        let client = try server.attach()
        #expect(try client.regionInfo(.config).info.size == 4096)
        #expect(try client.read(.config, offset: 0x100, count: 12) == [0x03, 0x00, 0x01, 0x00, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01])
        #expect(try client.read(.config, offset: 0xFFC, as: UInt32.self) == 0)
    }
}

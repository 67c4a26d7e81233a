import RegionEmulation
import Support
import TestSupport
import Testing
import VfioUserProto

/// The capabilities of the conformance tests' capability device, built here directly.
func capabilityFunction() throws -> PCIFunction {
    try makeFunction(
        capabilities: [
            .powerManagement,
            .msi(vectors: 4, is64Bit: true, perVectorMasking: true),
            .msix(MSIXLayout(vectors: 2048, tableBAR: 2, tableOffset: 0, pbaBAR: 2, pbaOffset: 0x8000)),
            .pciExpress(.endpoint, functionLevelReset: true),
            .vendorSpecific(payload: [0xAA, 0xBB, 0xCC, 0, 0], writableMask: [0, 0, 0xFF, 0, 0]),
        ],
        extended: [.deviceSerialNumber(0x0102_0304_0506_0708)],
        configSize: 4096,
        bars: [.memory(size: 4096), nil, .memory(size: 0x10000, is64Bit: true), nil])
}

extension PCIFunction {
    func configBytes(_ offset: Int, _ count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { readConfig(offset: offset, into: $0) }
        return bytes
    }
}

@Suite("Capability list")
struct CapabilityTests {
    @Test func theChainIsLinkedInDeclarationOrder() throws {
        let f = try capabilityFunction()
        #expect(f.config(0x06, as: UInt16.self) & 0x10 != 0) // Capabilities List
        var offsets: [Int] = []
        var ids: [UInt8] = []
        var next = Int(f.config(0x34, as: UInt8.self))
        while next != 0 && offsets.count < 48 {
            offsets.append(next)
            ids.append(f.config(next, as: UInt8.self))
            next = Int(f.config(next + 1, as: UInt8.self))
        }
        #expect(ids == [0x01, 0x05, 0x11, 0x10, 0x09])
        #expect(offsets == [0x40, 0x48, 0x60, 0x6C, 0xA8])
        #expect(f.layout.msixOffset == 0x60 && f.layout.expressOffset == 0x6C)
    }

    @Test func exactBytesOfEachStructure() throws {
        let f = try capabilityFunction()
        #expect(f.configBytes(0x40, 8) == [0x01, 0x48, 0x03, 0x00, 0x08, 0x00, 0x00, 0x00])
        // MSI: 4 vectors capable (2 << 1), 64-bit, per-vector masking; then address, data, mask, pending.
        #expect(f.configBytes(0x48, 24) == [0x05, 0x60, 0x84, 0x01] + Array(repeating: 0, count: 20))
        // MSI-X: 2048 vectors, table at BAR2+0, PBA at BAR2+0x8000.
        #expect(f.configBytes(0x60, 12) == [0x11, 0x6C, 0xFF, 0x07, 0x02, 0x00, 0x00, 0x00, 0x02, 0x80, 0x00, 0x00])
        // PCIe v2 endpoint: FLR and role-based error reporting, a x1 2.5 GT/s link.
        #expect(f.configBytes(0x6C, 20) == [0x10, 0xA8, 0x02, 0x00, 0x00, 0x80, 0x00, 0x10, 0x10, 0x28, 0x00, 0x00,
                                          0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x11, 0x00])
        #expect(f.configBytes(0xA8, 8) == [0x09, 0x00, 0x08, 0xAA, 0xBB, 0xCC, 0x00, 0x00])
        // Device Serial Number, the only extended capability.
        #expect(f.configBytes(0x100, 12) == [0x03, 0x00, 0x01, 0x00, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01])
    }

    @Test func headersAndReadOnlyFieldsIgnoreWrites() throws {
        let f = try capabilityFunction()
        let before = f.configBytes(0x40, 0x70)
        for offset in stride(from: 0x40, to: 0xB0, by: 4) where ![0x44, 0x48, 0x4C, 0x50, 0x54, 0x58, 0x60, 0x74, 0x78, 0x94, 0xA8, 0xAC].contains(offset) {
            f.setConfig(offset, UInt32.max)
        }
        // Capability headers (ID, next) and the read-only words are untouched.
        for header in [0x40, 0x48, 0x60, 0x6C, 0xA8] { #expect(f.configBytes(header, 2) == Array(before[(header - 0x40)..<(header - 0x40 + 2)])) }
        #expect(f.configBytes(0x64, 8) == [0x02, 0x00, 0x00, 0x00, 0x02, 0x80, 0x00, 0x00]) // MSI-X table/PBA
        #expect(f.configBytes(0x70, 4) == [0x00, 0x80, 0x00, 0x10]) // Device Capabilities
        f.setConfig(0x100, UInt32.max)
        f.setConfig(0x104, UInt64.max)
        #expect(f.configBytes(0x100, 12) == [0x03, 0x00, 0x01, 0x00, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01])
    }

    @Test func writableFieldsTakeTheirBitsOnly() throws {
        let f = try capabilityFunction()
        f.setConfig(0x44, UInt16.max) // PMCSR: power state bits only (D3hot = 3 is supported)
        #expect(f.config(0x44, as: UInt16.self) == 0x000B)
        f.setConfig(0x44, UInt16(0x0001)) // D1 is not supported: the state is kept
        #expect(f.config(0x44, as: UInt16.self) == 0x000B)
        f.setConfig(0x4C, UInt32.max) // MSI address: DWORD aligned
        #expect(f.config(0x4C, as: UInt32.self) == 0xFFFF_FFFC)
        f.setConfig(0x62, UInt16.max) // MSI-X control: enable and function mask only
        #expect(f.config(0x62, as: UInt16.self) == 0xC7FF)
        f.setConfig(0xAD, UInt8(0x77)) // the vendor cap's one writable byte
        #expect(f.config(0xAD, as: UInt8.self) == 0x77)
        f.setConfig(0xAC, UInt8(0x77))
        #expect(f.config(0xAC, as: UInt8.self) == 0xBB) // payload starts at 0xAB: AA BB [CC]
    }

    @Test func msiMultipleMessageEnableCannotExceedCapable() throws {
        let f = try capabilityFunction()
        f.setConfig(0x4A, UInt16(0x0071)) // enable, ask for 32 vectors
        #expect(f.config(0x4A, as: UInt16.self) & 0x70 == 0x20) // clamped to the 4 capable
        #expect(f.enabledMSIVectors == 4)
        #expect(f.interrupts.isEnabled(.msi))
    }

    @Test func functionLevelResetIsRequestedThroughDeviceControl() throws {
        let f = try capabilityFunction()
        #expect(f.setConfig(0x74, UInt16(0x8000)) == .functionLevelReset)
        #expect(f.config(0x74, as: UInt16.self) & 0x8000 == 0) // reads back 0
        #expect(f.setConfig(0x74, UInt16(0x0010)) == .none)
    }

    @Test func capabilitiesThatDoNotFitAreRefused() throws {
        let many = Array(repeating: PCICapability.pciExpress(.endpoint, functionLevelReset: false), count: 4)
        #expect(throws: CapabilityBuilder.Failure.self) { try makeFunction(capabilities: many) }
        #expect(throws: CapabilityBuilder.Failure.needsExpressConfigSpace) {
            try makeFunction(extended: [.deviceSerialNumber(1)], configSize: 256)
        }
    }
}

@Suite("Interrupt engine: MSI and MSI-X")
struct MessageSignalledTests {
    func engine(msix: Int = 8) -> InterruptEngine {
        InterruptEngine(intx: true, msiVectors: 4, msiMaskable: true, msixVectors: msix)
    }

    func assign(_ engine: InterruptEngine, _ index: IRQIndex, start: UInt32, _ eventfds: [OwnedFileDescriptor]) throws {
        try engine.apply(SetIRQs(flags: [.dataEventfd, .actionTrigger], index: index, start: start, count: UInt32(eventfds.count)), fds: eventfds)
    }

    @Test func aMaskedVectorRecordsPendingAndFiresOnUnmask() throws {
        let e = engine()
        let fd = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try assign(e, .msix, start: 3, [fd])
        e.setMasked(.msix, vector: 3, true)
        #expect(!e.trigger(.msix, vector: 3))
        #expect(e.pendingBits(.msix) == [0b1000])
        #expect(fired(fd) == 0)
        e.setMasked(.msix, vector: 3, false)
        #expect(fired(fd) == 1)
        #expect(e.pendingBits(.msix) == [0])
    }

    @Test func anUnassignedVectorRecordsPendingAndFiresWhenAssigned() throws {
        let e = engine()
        e.setEnabled(.msix, true)
        #expect(!e.trigger(.msix, vector: 5))
        #expect(e.isPending(.msix, vector: 5))
        let fd = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try assign(e, .msix, start: 5, [fd])
        #expect(fired(fd) == 1)
    }

    @Test func theFunctionMaskHoldsEveryVector() throws {
        let e = engine()
        let fds = try (0..<2).map { _ in try OwnedFileDescriptor.eventfd(nonBlocking: true) }
        try assign(e, .msix, start: 0, fds)
        e.setFunctionMasked(.msix, true)
        e.trigger(.msix, vector: 0)
        e.trigger(.msix, vector: 1)
        #expect(fds.map { fired($0) } == [0, 0])
        e.setFunctionMasked(.msix, false)
        #expect(fds.map { fired($0) } == [1, 1])
    }

    @Test func aDisabledIndexDropsTriggersAndClearsPending() throws {
        let e = engine()
        e.setEnabled(.msix, true)
        e.trigger(.msix, vector: 1)
        #expect(e.isPending(.msix, vector: 1))
        try e.apply(SetIRQs(flags: [.dataNone, .actionTrigger], index: .msix, start: 0, count: 0), fds: [])
        #expect(!e.isEnabled(.msix) && !e.isPending(.msix, vector: 1))
        #expect(!e.trigger(.msix, vector: 1))
    }

    @Test func triggeringFromManyThreadsLosesNothing() throws {
        let e = engine()
        let fd = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try assign(e, .msi, start: 0, [fd])
        let threads = (0..<4).map { _ in Thread { for _ in 0..<10_000 { e.trigger(.msi, vector: 0) } } }
        threads.forEach { $0.join() }
        #expect(fired(fd) == 40_000)
        #expect(e.signalledCount(.msi) == 40_000)
    }
}

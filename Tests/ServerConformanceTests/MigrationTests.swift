import MbochsDevice
import MttyDevice
import RegionEmulation
import Support
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

@Suite("Migration v2 over the socket")
struct MigrationTests {
    /// A device feature request as raw bytes: argsz, flags, data.
    func feature(_ client: VfioUserClient, argsz: UInt32, flags: UInt32, data: [UInt8] = []) throws -> [UInt8] {
        try client.request(.deviceFeature, payload: le(argsz) + le(flags) + data)!.payload
    }

    static let get: UInt32 = 1 << 16, set: UInt32 = 1 << 17, probe: UInt32 = 1 << 18

    /// The stream's layout: records of tag u32, length u32, payload. The stream header's payload is
    /// magic 8, version 4, vendor, device, subsystem vendor, subsystem 2 each, class 4, revision 1,
    /// config size 4; mtty's header is magic 8, major 4, minor 4, ports 4, flags 4.
    static let streamHeaderRecord = 8 + 29
    static let mttyHeaderRecord = 8 + 24

    @Test func theMigrationFeatureOffersStopCopyP2PAndPreCopy() throws {
        let server = try TestServer()
        let client = try server.attach()
        #expect(try client.migrationCapabilities() == [.stopCopy, .p2p, .preCopy])
        #expect(try feature(client, argsz: 16, flags: 1 | Self.get) == le(UInt32(16)) + le(1 | Self.get) + le(UInt64(7)))
        #expect(try feature(client, argsz: 16, flags: 1 | Self.get | Self.probe) == le(UInt32(16)) + le(1 | Self.get | Self.probe),
                "PROBE only checks, and its reply repeats the request")
        expectErrno(.invalidArgument) { try feature(client, argsz: 16, flags: 1 | Self.set) }
        expectErrno(.invalidArgument) { try feature(client, argsz: 16, flags: 1 | Self.get | Self.set) }
        expectErrno(.invalidArgument) { try feature(client, argsz: 12, flags: 1 | Self.get) }
        expectErrno(.invalidArgument) { try feature(client, argsz: 16, flags: 1) }
        expectErrno(.inappropriateIOCTLForDevice) { try feature(client, argsz: 16, flags: 3 | Self.get) }
        expectErrno(.invalidArgument) { try feature(client, argsz: 16, flags: 1 | Self.get | 1 << 20) }
        #expect(try client.migrationState() == .running)
    }

    /// A model that implements only what `MigratableDevice` requires: one register to carry.
    final class MinimalMigratable: MigratableDevice {
        let function = try! PCIFunction(PCIFunctionDescription(
            identity: PCIIdentity(vendorID: 0x1B36, deviceID: 0x10F1, subsystemVendorID: 0x1B36, subsystemID: 0,
                                  revision: 0, classCode: 0xFF_00_00),
            bars: [.memory(size: 0x1000)]))
        let register = Locked(UInt8(0))
        func readBAR(_ bar: Int, offset: UInt64, size: Int) -> UInt64 { UInt64(register.withLock { $0 }) }
        func writeBAR(_ bar: Int, offset: UInt64, size: Int, value: UInt64) { register.withLock { $0 = UInt8(truncatingIfNeeded: value) } }
        func reset(_ reason: ResetReason) { register.withLock { $0 = 0 } }
        func migrationHeader() -> [UInt8] { [0x4D] }
        func checkMigrationHeader(_ header: [UInt8]) throws(MigrationError) {
            guard header == [0x4D] else { throw .invalidStream("not ours") }
        }
        func saveMigrationState() throws(MigrationError) -> [UInt8] { [register.withLock { $0 }] }
        func loadMigrationState(_ state: [UInt8]) throws(MigrationError) {
            guard state.count == 1 else { throw .invalidStream("one byte") }
            register.withLock { $0 = state[0] }
        }
    }

    /// P2P and PRE_COPY are offered only by a model that says so: one that declares nothing offers
    /// STOP_COPY (VFIO_MIGRATION_STOP_COPY = 1) and refuses the states of the other arcs.
    @Test func aModelThatDeclaresNoArcsOffersStopCopyOnly() throws {
        let server = try TestServer(model: MinimalMigratable())
        let client = try server.attach()
        #expect(try feature(client, argsz: 16, flags: 1 | Self.get) == le(UInt32(16)) + le(1 | Self.get) + le(UInt64(1)))
        expectErrno(.invalidArgument) { try client.setMigrationState(.runningP2P) }
        expectErrno(.invalidArgument) { try client.setMigrationState(.preCopy) }
        #expect(try client.migrationState() == .running)
        try client.write(.bar0, offset: 0, data: [0x5C])
        try client.setMigrationState(.stop)
        try client.setMigrationState(.stopCopy)
        #expect(try client.migrationDataRead(size: 4096).isEmpty == false)
    }

    @Test func aDeviceModelThatCannotMigrateAnswersENOTTY() throws {
        let server = try TestServer(model: CopyEngineDevice())
        let client = try server.attach()
        expectErrno(.inappropriateIOCTLForDevice) { try client.migrationCapabilities() }
        expectErrno(.inappropriateIOCTLForDevice) { try client.setMigrationState(.stop) }
        expectErrno(.inappropriateIOCTLForDevice) { try client.migrationDataRead(size: 16) }
    }

    /// From every state, a request for every state number: a path exists for all but ERROR, the
    /// numbers past PRE_COPY_P2P and STOP_COPY → PRE_COPY(_P2P), which are EINVAL and change nothing.
    /// Leaving RESUMING loads the stream; with none written that fails, in ERROR ("to abort a
    /// RESUMING session the device must be reset", linux/vfio.h).
    @Test func everyTransitionSucceedsOrIsRefusedWithEINVAL() throws {
        let server = try TestServer()
        let client = try server.attach()
        let machine = MigrationStateMachine(capabilities: [.stopCopy, .p2p, .preCopy])
        for from in machine.states {
            for target: UInt32 in 0...9 {
                try client.reset()
                try client.setMigrationState(from)
                #expect(try client.migrationState() == from)
                let refused = target == 0 || target > 7 || (from == .stopCopy && (target == 6 || target == 7))
                if refused {
                    expectErrno(.invalidArgument) { try client.setMigrationState(raw: target) }
                    #expect(try client.migrationState() == from, "a refused request changes nothing")
                } else if from == .resuming && target != from.rawValue {
                    expectErrno(.invalidArgument) { try client.setMigrationState(raw: target) }
                    #expect(try client.migrationState() == .error)
                    expectErrno(.invalidArgument) { try client.setMigrationState(.running) }
                } else {
                    try client.setMigrationState(raw: target)
                    #expect(try client.migrationState().rawValue == target)
                }
            }
        }
        try client.reset()
        #expect(try client.migrationState() == .running, "DEVICE_RESET returns to RUNNING")
    }

    @Test func eachStateAllowsWhatItShould() throws {
        let server = try TestServer()
        let client = try server.attach()
        expectErrno(.invalidArgument) { try client.migrationDataRead(size: 16) }
        expectErrno(.invalidArgument) { try client.migrationDataWrite([1, 2, 3]) }

        try client.setMigrationState(.stop)
        try client.write(.bar0, offset: 7, value: UInt8(0x11)) // STOP: accesses still answered
        #expect(try client.read(.bar0, offset: 7, as: UInt8.self) == 0x11)

        try client.setMigrationState(.stopCopy)
        expectErrno(.resourceBusy) { try client.read(.bar0, offset: 7, as: UInt8.self) }
        expectErrno(.resourceBusy) { try client.write(.bar1, offset: 7, value: UInt8(1)) }
        expectErrno(.resourceBusy) { try client.write(.config, offset: 0x3C, value: UInt8(5)) }
        #expect(try client.read(.config, offset: 0, as: UInt32.self) == 0x3253_4348, "config space stays readable")
        expectErrno(.invalidArgument) { try client.migrationDataWrite([1]) }
        #expect(try client.migrationDataRead(size: 8).count == 8)

        try client.setMigrationState(.resuming)
        expectErrno(.resourceBusy) { try client.read(.bar0, offset: 7, as: UInt8.self) }
        try client.write(.config, offset: 0x3C, value: UInt8(5)) // QEMU restores config space while resuming
        expectErrno(.invalidArgument) { try client.migrationDataRead(size: 8) }

        try client.reset()
        #expect(try client.read(.bar0, offset: 7, as: UInt8.self) == 0, "reset: RUNNING, registers at power-on")
    }

    @Test func migrationDataRespectsTheTransferLimitAndArgsz() throws {
        let server = try TestServer()
        let client = try server.attach()
        try client.setMigrationState(.stopCopy)
        let max = UInt32(1 << 20)
        expectErrno(.invalidArgument) { try client.migrationDataRead(size: max + 1) }
        expectErrno(.invalidArgument) { try client.migrationDataRead(size: 64, argsz: 8 + 63) }
        let first = try client.migrationDataRead(size: max)
        #expect(first.count > 100 && first.count < 1000, "the whole mtty stream in one read")
        #expect(try client.migrationDataRead(size: 64).isEmpty, "then nothing: end of stream")
        try client.setMigrationState(.stop)
        try client.setMigrationState(.resuming)
        expectErrno(.invalidArgument) {
            try client.request(.migDataWrite, payload: le(UInt32(8 + 4)) + le(UInt32(4)) + [1, 2, 3])
        }
        expectErrno(.invalidArgument) {
            try client.request(.migDataWrite, payload: le(UInt32(8)) + le(UInt32(4)) + [1, 2, 3, 4])
        }
    }

    // MARK: mtty state

    /// Puts bytes in port 0's FIFO, a divisor with DLAB left set on port 1, scratch and IER values.
    func dirty(_ client: VfioUserClient) throws {
        try client.write(.bar0, offset: 2, value: UART16550.fcrEnable | 0x80) // FIFO on, trigger 8
        try client.write(.bar0, offset: 1, value: UART16550.ierRDI | UART16550.ierRLSI)
        for byte in Array("migrate".utf8) { try client.write(.bar0, offset: 0, value: byte) }
        try client.write(.bar0, offset: 7, value: UInt8(0xA5))
        try client.write(.bar0, offset: 4, value: UInt8(0x0B))
        try client.write(.bar1, offset: 3, value: UInt8(0x83)) // DLAB, 8N1
        try client.write(.bar1, offset: 0, value: UInt8(0x0C)) // divisor 0x000C: 9600 baud
        try client.write(.bar1, offset: 1, value: UInt8(0x00))
        try client.write(.bar1, offset: 7, value: UInt8(0x5A))
    }

    @Test func anMttyRoundTripGivesTheDestinationExactlyTheSourcesRegisters() throws {
        let sourceModel = MttyDevice(ports: 2), destinationModel = MttyDevice(ports: 2)
        let source = try TestServer(model: sourceModel), destination = try TestServer(model: destinationModel)
        let from = try source.attach(), to = try destination.attach()
        try dirty(from)
        let before = sourceModel.portStates
        let report = try MigrationDriver(chunkSize: 32).migrate(from: from, to: to)
        #expect(report.preCopyBytes == Self.streamHeaderRecord + Self.mttyHeaderRecord, "PRE_COPY gives the stream and mtty headers early")
        #expect(report.stopCopyBytes > 0)
        #expect(destinationModel.portStates == before)
        #expect(try from.migrationState() == .stop)
        #expect(try to.migrationState() == .running)

        // The destination reads back what the source held.
        #expect(try to.read(.bar1, offset: 3, as: UInt8.self) == 0x83)
        #expect(try to.read(.bar1, offset: 0, as: UInt8.self) == 0x0C, "divisor latch low")
        #expect(try to.read(.bar1, offset: 1, as: UInt8.self) == 0x00, "divisor latch high")
        #expect(try to.read(.bar1, offset: 7, as: UInt8.self) == 0x5A)
        #expect(try to.read(.bar0, offset: 7, as: UInt8.self) == 0xA5)
        #expect(try to.read(.bar0, offset: 4, as: UInt8.self) == 0x0B)
        #expect(try to.read(.bar0, offset: 1, as: UInt8.self) == UART16550.ierRDI | UART16550.ierRLSI)
        let echoed = try (0..<7).map { _ in try to.read(.bar0, offset: 0, as: UInt8.self) }
        #expect(echoed == Array("migrate".utf8), "the FIFO's bytes, in order")
        #expect(try to.read(.bar0, offset: 5, as: UInt8.self) & UART16550.lsrDataReady == 0)
    }

    @Test func theDestinationRaisesTheInterruptTheSourceHadPending() throws {
        let source = try TestServer(), destination = try TestServer()
        let from = try source.attach(), to = try destination.attach()
        try from.write(.bar0, offset: 2, value: UART16550.fcrEnable)
        try from.write(.bar0, offset: 1, value: UART16550.ierRDI)
        try from.setMigrationState(.stop)
        try from.write(.bar0, offset: 0, value: UInt8(0x42)) // in STOP: recorded, not signalled
        try MigrationDriver().migrate(from: from, to: to)
        let intx = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try to.setIRQs(.intx, [.dataEventfd, .actionTrigger], fds: [intx.descriptor])
        #expect(fired(intx, waitingMilliseconds: 1000) == 1, "the line came up with the loaded state")
        #expect(try to.read(.bar0, offset: 0, as: UInt8.self) == 0x42)
    }

    @Test func anMtty2StreamIsRefusedByAnMtty1AtItsHeader() throws {
        let source = try TestServer(), destination = try TestServer(model: MttyDevice(ports: 1))
        let from = try source.attach(), to = try destination.attach()
        try from.setMigrationState(.preCopy)
        let headers = try from.migrationDataRead(size: 4096)
        try to.setMigrationState(.resuming)
        try to.migrationDataWrite(Array(headers.prefix(Self.streamHeaderRecord))) // the stream header fits
        expectErrno(.invalidArgument) { try to.migrationDataWrite(Array(headers.dropFirst(Self.streamHeaderRecord))) }
        expectErrno(.invalidArgument) { try to.setMigrationState(.stop) }
        #expect(try to.migrationState() == .error)
        expectErrno(.ioError) { try to.read(.bar0, offset: 7, as: UInt8.self) }
        try to.reset()
        try to.write(.bar0, offset: 7, value: UInt8(0x77))
        #expect(try to.read(.bar0, offset: 7, as: UInt8.self) == 0x77, "usable again after the reset")
    }

    struct StreamCorruption: Sendable, CustomTestStringConvertible {
        let name: String
        /// Refused by the MIG_DATA_WRITE that carries it (records are checked as they complete),
        /// or only when the destination leaves RESUMING (the state records are decoded then).
        let atWrite: Bool
        let apply: @Sendable (inout [UInt8]) -> Void
        init(_ name: String, atWrite: Bool = true, _ apply: @escaping @Sendable (inout [UInt8]) -> Void) {
            self.name = name
            self.atWrite = atWrite
            self.apply = apply
        }
        var testDescription: String { name }
    }

    /// Mutations of a good stream that a destination must refuse.
    static let corruptions: [StreamCorruption] = [
        StreamCorruption("bad magic") { $0[8] ^= 0xFF },
        StreamCorruption("stream version 2") { $0[16] = 2 },
        StreamCorruption("another PCI device") { $0[20] ^= 1 },
        StreamCorruption("mtty magic") { $0[streamHeaderRecord + 8] ^= 1 },
        StreamCorruption("mtty version 2.0") { $0[streamHeaderRecord + 16] = 2 },
        StreamCorruption("unknown record tag") { $0[streamHeaderRecord] = 9 },
        StreamCorruption("truncated", atWrite: false) { $0.removeLast(9) },
        StreamCorruption("trailing bytes") { $0 += [0] },
        StreamCorruption("end record with data") {
            $0.removeLast(8)
            $0 += le(UInt32(5)) + le(UInt32(1)) + [0]
        },
        // The last port's FIFO count: before its two u64 counters and the 8-byte end record.
        StreamCorruption("FIFO count past the FIFO", atWrite: false) { $0[$0.count - 8 - 16 - 1] = 17 },
    ]

    @Test(arguments: corruptions)
    func aCorruptedStreamIsRefusedAndTheDestinationStaysUsable(_ corruption: StreamCorruption) throws {
        let name = corruption.name
        let source = try TestServer(), destination = try TestServer()
        let from = try source.attach(), to = try destination.attach()
        try from.setMigrationState(.stopCopy)
        var stream = try from.migrationDataRead(size: 4096)
        corruption.apply(&stream)
        try to.setMigrationState(.resuming)
        var refused = false
        do { try to.migrationDataWrite(stream) } catch { refused = true }
        #expect(refused == corruption.atWrite, "\(name)")
        if refused {
            expectErrno(.invalidArgument) { try to.migrationDataWrite([0]) }
        }
        expectErrno(.invalidArgument) { try to.setMigrationState(.running) }
        #expect(try to.migrationState() == .error, "\(name): refused")
        try to.reset()
        #expect(try to.migrationState() == .running)
        try to.write(.bar1, offset: 7, value: UInt8(0x31))
        #expect(try to.read(.bar1, offset: 7, as: UInt8.self) == 0x31)
    }

    @Test func theMigrateCommandMovesAnInstanceToAnother() throws {
        let server = try ServerProcess()
        defer { server.terminate() }
        let control = try ControlClient(path: server.controlPath)
        let started = try control.send(.start(type: "mtty-2", uuid: nil, parameters: [:]))
        let socket = try #require(started["instance"]?["socket"]?.stringValue, "no socket in \(started.text)")
        let run = try ServerProcess.run(["migrate", "--from", server.path, "--to", socket, "--chunk", "16", "--json"])
        #expect(run.status == 0, "\(run.errors)")
        let report = try JSONValue(parsing: run.output.trimmingTrailingNewline)
        #expect(report["pre_copy_bytes"] == .int(Int64(Self.streamHeaderRecord + Self.mttyHeaderRecord)))
        let stopCopy = try #require(report["stop_copy_bytes"]?.intValue, "\(run.output)")
        #expect(stopCopy > 0)

        let refused = try ServerProcess.run(["migrate", "--from", server.path, "--to", server.directory.path + "/nowhere.sock"])
        #expect(refused.status != 0)
        #expect(refused.errors.contains("migration failed"), "\(refused.errors)")
    }
}

/// The 24-byte headers mtty and mbochs states start with, byte for byte, and what a destination
/// refuses before anything else arrives.
@Suite("Device migration headers")
struct DeviceMigrationHeaderTests {
    @Test func mttyWritesTheSamplesHeaderAndRefusesAnotherShape() throws {
        let mtty = MttyDevice(ports: 2)
        // Magic 0x7e9d09898c3e2c4e, version 1.0, 2 ports, flags 0: all little-endian.
        let expected: [UInt8] = [0x4E, 0x2C, 0x3E, 0x8C, 0x89, 0x09, 0x9D, 0x7E, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]
        #expect(mtty.migrationHeader() == expected)
        try mtty.checkMigrationHeader(expected)
        var onePort = expected
        onePort[16] = 1
        #expect(throws: MigrationError.invalidStream("the source is an mtty-1; this is an mtty-2")) { try mtty.checkMigrationHeader(onePort) }
        var flagged = expected
        flagged[20] = 1
        #expect(throws: MigrationError.invalidStream("mtty header flags 0x1")) { try mtty.checkMigrationHeader(flagged) }
        var newer = expected
        newer[8] = 2
        #expect(throws: MigrationError.invalidStream("an mtty state version 2.0; this device reads 1.0")) { try mtty.checkMigrationHeader(newer) }
        #expect(throws: MigrationError.invalidStream("an mtty header of 23 bytes, not 24")) { try mtty.checkMigrationHeader(Array(expected.dropLast())) }
    }

    @Test func mbochsSaysItsFramebufferSizeAndRefusesAnother() throws {
        let small = try MbochsDevice(memorySize: 4 << 20, width: 800, height: 600)
        let medium = try MbochsDevice(memorySize: 16 << 20, width: 1024, height: 768)
        // "MBOCHS" and version byte 1, then 1.0 and 4 MiB.
        let expected: [UInt8] = [0x4D, 0x42, 0x4F, 0x43, 0x48, 0x53, 0x01, 0x00, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0]
        #expect(small.migrationHeader() == expected)
        #expect(throws: MigrationError.invalidStream("the source has a 4 MiB framebuffer; this one has 16 MiB")) {
            try medium.checkMigrationHeader(expected)
        }
        #expect(throws: MigrationError.invalidStream("not an mbochs state (magic 0x7e9d09898c3e2c4e)")) {
            try small.checkMigrationHeader(MttyDevice(ports: 2).migrationHeader())
        }
    }
}

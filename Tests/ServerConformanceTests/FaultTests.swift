import CLinux
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

/// Clients that go away mid-message, come and go by the thousand, stop reading, or pull their
/// memory from under a mapping: the server keeps serving and keeps nothing it should not.
@Suite("Faults")
struct FaultTests {
    /// Open fds of this process that refer to the memfd called `name` (a name of its own per test,
    /// so that a leaked copy can be spotted among the fds of this shared, parallel test process).
    static func openCopies(ofMemfd name: String) -> Int {
        openFileTargets(of: getpid()).filter { $0 == "/memfd:\(name) (deleted)" }.count
    }

    @Test func disconnectingAtEveryByteOfEveryMessageLeavesNothingBehind() throws {
        let server = try TestServer()
        let name = "cut-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let memory = try Memfd(size: 0x1_0000, name: name)
        let messages = Conversation.messages
        var cuts = 0
        for (index, message) in messages.enumerated() {
            for cut in 1..<message.bytes.count {
                let served = server.endpoint.sessionsServed
                let client = try server.connect()
                if index > 0 { try client.negotiate() }
                try client.sendRaw(Array(message.bytes[..<cut]), fds: message.carriesFD ? [memory.fd.descriptor] : [])
                UnixSocket.shutdown(client.socket)
                for _ in 0..<5000 where server.endpoint.sessionsServed == served { usleep(100) } // accepted (VERSION cuts send no reply)
                #expect(server.endpoint.waitUntilDetached(milliseconds: 5000), "\(message.name) cut at \(cut)")
                cuts += 1
            }
        }
        #expect(cuts > 500)
        #expect(Self.openCopies(ofMemfd: name) == 1, "only the test's own fd: every fd sent with a cut message was closed")
        #expect(server.device.dma.mappingCount == 0)
        // The whole conversation still goes through, fds and all.
        try Conversation.run(on: try server.connect(), fd: memory.fd.descriptor)
        #expect(server.device.dma.mappingCount == 1)
        withExtendedLifetime(memory) {}
    }

    @Test func aThousandAttachCyclesKeepFDsAndMemoryFlat() throws {
        let server = try ServerProcess()
        defer { _ = server.terminate() }
        let baseline = server.openFDCount
        let memory = try Memfd(size: 1 << 20)
        var residentAt100 = 0
        for cycle in 1...1000 {
            let client = try Self.attachWhenFree(server.path)
            let eventfd = try OwnedFileDescriptor.eventfd()
            try client.setIRQs(.err, [.dataEventfd, .actionTrigger], fds: [eventfd.descriptor])
            try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Conversation.iova, size: 1 << 20), fd: memory.fd.descriptor)
            #expect(try client.read(.config, offset: 0, as: UInt16.self) == 0x4348)
            UnixSocket.shutdown(client.socket)
            if cycle == 100 {
                #expect(server.waitForFDCount(baseline) == baseline)
                residentAt100 = residentKiB(server.pid)
            }
        }
        #expect(server.waitForFDCount(baseline) == baseline, "the same fds after 1,000 cycles as before the first")
        #if !SANITIZER // a sanitizer's shadow memory and histories grow with the work done, by design
        let residentAt1000 = residentKiB(server.pid)
        #expect(residentAt1000 - residentAt100 < 1024, "resident \(residentAt100) KiB after 100 cycles, \(residentAt1000) KiB after 1,000")
        #endif
    }

    /// Connects and negotiates, retrying while the previous client's session is still winding down (EBUSY).
    static func attachWhenFree(_ path: String) throws -> VfioUserClient {
        for _ in 0..<2000 {
            let client = try VfioUserClient(path: path)
            do {
                try client.negotiate()
                return client
            } catch {
                guard case let .errorReply(_, errno) = error, errno == .resourceBusy else { throw error }
                usleep(1000)
            }
        }
        throw Errno.resourceBusy
    }

    @Test func aClientThatStopsReadingHoldsUpOnlyItsOwnInstance() throws {
        let directory = TemporaryDirectory()
        let (first, second) = ("5f0e0c1a-0000-4000-8000-000000000001", "5f0e0c1a-0000-4000-8000-000000000002")
        let config = directory.path + "/devices.json"
        let text = #"{"devices": [{"uuid": "\#(first)", "type": "mtty-1"}, {"uuid": "\#(second)", "type": "mtty-1"}]}"#
        let file = fopen(config, "w")
        fputs(text, file)
        fclose(file)
        let server = try ServerProcess(arguments: ["--config", config], firstDevice: false)
        defer { _ = server.terminate() }
        let sockets = server.directory.path // --socket-dir, which the file's socket_dir gives way to
        let stalled = try Self.attachWhenFree(sockets + "/\(first).sock")
        #if !SANITIZER
        let before = residentKiB(server.pid)
        #endif

        // Requests until the socket takes no more: the server's replies fill our receive buffer,
        // its session blocks sending, stops reading, and then our sends fill its receive buffer.
        _ = fcntl(stalled.socket.rawValue, F_SETFL, fcntl(stalled.socket.rawValue, F_GETFL) | O_NONBLOCK)
        var request = ByteWriter()
        MessageHeader(id: 1, command: .regionRead, messageSize: 32).encode(into: &request)
        RegionAccess(offset: 0, region: .config, count: 256).encode(into: &request)
        var sent = 0
        var idle = 0
        while idle < 50 {
            let written = request.bytes.withUnsafeBytes { Glibc.send(stalled.socket.rawValue, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL)) }
            if written == 32 {
                sent += 1
                idle = 0
            } else {
                // A short write would leave half a message: this test sends whole ones only.
                #expect(written < 0 && errno == EAGAIN)
                idle += 1
                usleep(2000)
            }
        }
        #expect(sent > 100)
        #if !SANITIZER
        let during = residentKiB(server.pid)
        #expect(during - before < 4096, "the stalled session does not buffer without bound: \(before) → \(during) KiB after \(sent) requests")
        #endif

        // The other instance serves as usual meanwhile.
        let other = try Self.attachWhenFree(sockets + "/\(second).sock")
        try other.write(.bar0, offset: 0, value: UInt8(0x55))
        #expect(try other.read(.config, offset: 0, as: UInt16.self) == 0x4348)
        UnixSocket.shutdown(other.socket)

        // Once the stalled client goes, its instance takes the next one.
        UnixSocket.shutdown(stalled.socket)
        let next = try Self.attachWhenFree(sockets + "/\(first).sock")
        #expect(try next.read(.config, offset: 0, as: UInt16.self) == 0x4348)
    }

    @Test func aFileShrunkUnderAMappingFailsDeviceAccessWithEFAULTInsteadOfSIGBUS() throws {
        let model = CopyEngineDevice()
        let server = try TestServer(model: model)
        let client = try server.attach()
        let memory = try Memfd(size: 0x4000)
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Conversation.iova, size: 0x4000), fd: memory.fd.descriptor)

        let copy = { (source: UInt64, destination: UInt64) throws -> UInt32 in try Self.copy(client, model, from: source, to: destination) }
        #expect(try copy(Conversation.iova, Conversation.iova + 0x2000) == 2)

        // The client takes the memory back: touching it now would be a SIGBUS.
        #expect(ftruncate(memory.fd.rawValue, 0) == 0)
        let status = try copy(Conversation.iova + 0x1000, Conversation.iova + 0x3000)
        #expect(status & 0xFF == 3 && status >> 8 == UInt32(Errno.badAddress.rawValue), "status 0x\(String(status, radix: 16))")
        #expect(throws: DMAError.memoryGone(Conversation.iova)) { try server.device.dma.pin(Conversation.iova, length: 8, access: .read) }

        // The session goes on; the mapping can be dropped and the memory, grown again, mapped anew.
        #expect(try client.read(.config, offset: 0, as: UInt16.self) == 0x1B36)
        try client.dmaUnmap(DMAUnmapRequest(address: Conversation.iova, size: 0x4000))
        #expect(ftruncate(memory.fd.rawValue, 0x4000) == 0)
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Conversation.iova, size: 0x4000), fd: memory.fd.descriptor)
        #expect(try copy(Conversation.iova, Conversation.iova + 0x2000) == 2)
    }

    /// Has the copy engine copy 64 bytes; its status (2 done, 3 | errno << 8 failed).
    static func copy(_ client: VfioUserClient, _ model: CopyEngineDevice, from source: UInt64, to destination: UInt64) throws -> UInt32 {
        try client.write(.bar0, offset: 0x00, value: source)
        try client.write(.bar0, offset: 0x08, value: destination)
        try client.write(.bar0, offset: 0x10, value: UInt32(64))
        try client.write(.bar0, offset: 0x14, value: UInt32(1)) // not posted: the copy has begun when this returns
        for _ in 0..<500 where !model.isFinished { usleep(2000) }
        return try client.read(.bar0, offset: 0x18, as: UInt32.self)
    }
}

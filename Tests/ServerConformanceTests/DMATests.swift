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

@Suite("DMA map, unmap and translation")
struct DMATests {
    static let iova: UInt64 = 0x1_0000_0000

    func setUp(memory: Int = 1 << 20) throws -> (TestServer, VfioUserClient, Memfd) {
        let server = try TestServer(model: CopyEngineDevice())
        let client = try server.attach()
        return (server, client, try Memfd(size: memory))
    }

    @Test func deviceWritesLandInTheClientsMemoryAndTheReverse() throws {
        let (server, client, memory) = try setUp()
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Self.iova, size: 1 << 20), fd: memory.fd.descriptor)
        let dma = server.device.dma
        try Array("from the device".utf8).withUnsafeBytes { try dma.write(Self.iova + 0x100, from: $0) }
        #expect(memory.read(0x100, 15) == Array("from the device".utf8))
        memory.write(0x8000, Array("from the client".utf8))
        var seen = [UInt8](repeating: 0, count: 15)
        try seen.withUnsafeMutableBytes { try dma.read(Self.iova + 0x8000, into: $0) }
        #expect(seen == Array("from the client".utf8))
    }

    @Test func aPinGivesHostBuffersTheDeviceUsesDirectly() throws {
        let (server, client, memory) = try setUp()
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Self.iova, size: 1 << 20), fd: memory.fd.descriptor)
        let pin = try server.device.dma.pin(Self.iova + 0x2000, length: 64, access: [.read, .write])
        #expect(pin.segments.count == 1 && pin.length == 64)
        pin.segments[0].storeBytes(of: UInt64(0x1122_3344_5566_7788).littleEndian, as: UInt64.self)
        #expect(memory.read(0x2000, 8) == [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11])
        pin.release()
    }

    @Test func anUnalignedFileOffsetIsHonoured() throws {
        let (server, client, memory) = try setUp()
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0x1800, address: Self.iova, size: 0x1000), fd: memory.fd.descriptor)
        try [UInt8(0xAB)].withUnsafeBytes { try server.device.dma.write(Self.iova, from: $0) }
        #expect(memory.read(0x1800, 1) == [0xAB])
    }

    @Test func aPinMaySpanAdjacentMappings() throws {
        let (server, client, memory) = try setUp()
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Self.iova, size: 0x1000), fd: memory.fd.descriptor)
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0x10000, address: Self.iova + 0x1000, size: 0x1000), fd: memory.fd.descriptor)
        let pin = try server.device.dma.pin(Self.iova + 0x1000 - 8, length: 16, access: .write)
        #expect(pin.segments.map(\.count) == [8, 8])
        for segment in pin.segments { segment.initializeMemory(as: UInt8.self, repeating: 0x5A) }
        #expect(memory.read(0x1000 - 8, 8) == Array(repeating: 0x5A, count: 8))
        #expect(memory.read(0x10000, 8) == Array(repeating: 0x5A, count: 8))
        #expect(memory.read(0x1000, 8) == Array(repeating: 0, count: 8))
        pin.release()
    }

    @Test func pinsFailCleanlyWithTypedErrors() throws {
        let (server, client, memory) = try setUp()
        try client.dmaMap(DMAMapRequest(flags: .read, offset: 0, address: Self.iova, size: 0x1000), fd: memory.fd.descriptor)
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Self.iova + 0x10000, size: 0x1000))
        let dma = server.device.dma
        #expect(throws: DMAError.notMapped(Self.iova + 0x5000)) { try dma.pin(Self.iova + 0x5000, length: 8, access: .read) }
        #expect(throws: DMAError.accessDenied(address: Self.iova, write: true)) { try dma.pin(Self.iova, length: 8, access: .write) }
        #expect(throws: DMAError.messageMode(Self.iova + 0x10000)) { try dma.pin(Self.iova + 0x10000, length: 8, access: .read) }
        #expect(throws: DMAError.notMapped(Self.iova + 0x1000)) { try dma.pin(Self.iova + 0xFF8, length: 16, access: .read) }
        try client.dmaUnmap(DMAUnmapRequest(address: Self.iova, size: 0x1000))
        #expect(throws: DMAError.notMapped(Self.iova)) { try dma.pin(Self.iova, length: 8, access: .read) }
    }

    @Test func unmapMustMatchExactlyAndEchoesTheRequest() throws {
        let (server, client, memory) = try setUp()
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Self.iova, size: 0x4000), fd: memory.fd.descriptor)
        expectErrno(.noSuchFileOrDirectory) { try client.dmaUnmap(DMAUnmapRequest(address: Self.iova, size: 0x1000)) }
        expectErrno(.noSuchFileOrDirectory) { try client.dmaUnmap(DMAUnmapRequest(address: Self.iova + 0x1000, size: 0x3000)) }
        let request = DMAUnmapRequest(address: Self.iova, size: 0x4000)
        #expect(try client.dmaUnmap(request) == request)
        #expect(server.device.dma.mappingCount == 0)
    }

    @Test func overlapsAreEEXISTAndAnExactRepeatIsAccepted() throws {
        let (server, client, memory) = try setUp()
        let map = DMAMapRequest(flags: [.read, .write], offset: 0, address: Self.iova + 0x2000, size: 0x2000)
        try client.dmaMap(map, fd: memory.fd.descriptor)
        for (address, size) in [(Self.iova + 0x1000, UInt64(0x2000)), (Self.iova + 0x3000, UInt64(0x2000)),
                                (Self.iova + 0x2800, UInt64(0x100)), (Self.iova, UInt64(0x10000))] {
            expectErrno(.fileExists) { try client.dmaMap(DMAMapRequest(flags: .read, offset: 0, address: address, size: size), fd: memory.fd.descriptor) }
        }
        try client.dmaMap(map, fd: memory.fd.descriptor) // same range, flags and file position: a no-op
        try client.dmaMap(DMAMapRequest(flags: .read, offset: 0, address: Self.iova + 0x4000, size: 0x1000), fd: memory.fd.descriptor)
        #expect(server.device.dma.mappingCount == 2)
    }

    @Test func unmapAllRemovesEverything() throws {
        let (server, client, memory) = try setUp()
        for i in 0..<10 {
            try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: UInt64(i) * 0x1000, address: Self.iova + UInt64(i) * 0x2000, size: 0x1000),
                              fd: i % 2 == 0 ? memory.fd.descriptor : nil)
        }
        expectErrno(.invalidArgument) { try client.dmaUnmap(DMAUnmapRequest(flags: .all, address: Self.iova, size: 0)) }
        try client.dmaUnmap(DMAUnmapRequest(flags: .all, address: 0, size: 0))
        #expect(server.device.dma.mappingCount == 0)
    }

    @Test func badMapRequests() throws {
        let (server, client, memory) = try setUp()
        defer { withExtendedLifetime(server) {} }
        let fd = memory.fd.descriptor
        expectErrno(.invalidArgument) { try client.dmaMap(DMAMapRequest(flags: DMAMapFlags(rawValue: 8), offset: 0, address: Self.iova, size: 0x1000), fd: fd) }
        expectErrno(.invalidArgument) { try client.dmaMap(DMAMapRequest(flags: [], offset: 0, address: Self.iova, size: 0x1000), fd: fd) }
        expectErrno(.invalidArgument) { try client.dmaMap(DMAMapRequest(flags: .read, offset: 0, address: Self.iova, size: 0), fd: fd) }
        expectErrno(.invalidArgument) { try client.dmaMap(DMAMapRequest(flags: .read, offset: 0, address: UInt64.max - 0xFFF, size: 0x2000)) }
        expectErrno(.invalidArgument) { try client.dmaMap(DMAMapRequest(flags: .read, offset: 0x10_0000, address: Self.iova, size: 0x1000), fd: fd) }
        expectErrno(.invalidArgument) { try client.dmaMap(DMAMapRequest(argsz: 16, flags: .read, offset: 0, address: Self.iova, size: 0x1000), fd: fd) }
        expectErrno(.invalidArgument) {
            var writer = ByteWriter()
            DMAMapRequest(flags: .read, offset: 0, address: Self.iova, size: 0x1000).encode(into: &writer)
            try client.request(.dmaMap, payload: writer.bytes, fds: [fd, fd])
        }
    }

    @Test func tableHolds65535MappingsAndRefusesOneMore() throws {
        let (server, client, memory) = try setUp(memory: 65536 * 4096)
        for i in 0..<65535 {
            try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: UInt64(i) * 4096, address: Self.iova + UInt64(i) * 8192, size: 4096),
                              fd: memory.fd.descriptor)
        }
        #expect(server.device.dma.mappingCount == 65535)
        expectErrno(.noSpace) {
            try client.dmaMap(DMAMapRequest(flags: .read, offset: 0, address: Self.iova - 0x1000, size: 0x1000), fd: memory.fd.descriptor)
        }
        // Every mapping still translates to its own page of the memfd.
        memory.write(65534 * 4096 + 5, [0x77])
        var byte: UInt8 = 0
        try withUnsafeMutableBytes(of: &byte) { try server.device.dma.read(Self.iova + 65534 * 8192 + 5, into: $0) }
        #expect(byte == 0x77)
        try client.dmaUnmap(DMAUnmapRequest(flags: .all, address: 0, size: 0))
        #expect(server.device.dma.mappingCount == 0)
    }

    @Test func unmapWaitsForAPinHeldByAnotherThread() throws {
        let (server, client, memory) = try setUp()
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Self.iova, size: 0x1000), fd: memory.fd.descriptor)
        let pin = try server.device.dma.pin(Self.iova, length: 16, access: .read)
        let releasedAt = Shared<UInt64>(0)
        let holder = Thread {
            usleep(200_000)
            releasedAt.value = monotonicNanoseconds()
            pin.release()
        }
        try client.dmaUnmap(DMAUnmapRequest(address: Self.iova, size: 0x1000))
        let repliedAt = monotonicNanoseconds()
        holder.join()
        #expect(releasedAt.value > 0 && repliedAt >= releasedAt.value, "the reply came after the release")
        #expect(server.device.dma.mappingCount == 0)
    }

    /// A client that floods commands while its unmap waits for a pin fills its own socket, not the
    /// server's memory: the session sets aside at most `maxDeferredBytes` of them, then stops
    /// reading. Once the pin goes, the unmap is answered and every command is handled, in order.
    @Test func commandsFloodedWhileAnUnmapWaitsAreBoundedThenAllHandledInOrder() throws {
        let (server, client, memory) = try setUp()
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Self.iova, size: 0x1000), fd: memory.fd.descriptor)
        let pin = try server.device.dma.pin(Self.iova, length: 16, access: .read)
        var unmap = ByteWriter()
        DMAUnmapRequest(address: Self.iova, size: 0x1000).encode(into: &unmap)
        let unmapID = try client.send(.dmaUnmap, payload: unmap.bytes)
        // Posted 8-byte writes of 1, 2, 3... to the engine's source register, 2,000 per batch,
        // sent without blocking until the socket has taken nothing for 300 ms.
        let fd = client.socket.rawValue
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        var accepted = 0, written: UInt64 = 0
        var unsent: [UInt8] = []
        var stalledSince: UInt64?
        while accepted < 16 << 20 {
            if unsent.isEmpty {
                for value in written + 1 ... written + 2000 {
                    unsent += rawMessage(id: UInt16(truncatingIfNeeded: value), command: Command.regionWrite.rawValue, payload: le(UInt64(0)) + le(UInt32(0)) + le(UInt32(8)) + le(value),
                                         flags: MessageFlags.noReply.rawValue)
                }
                written += 2000
            }
            let sent = unsent.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL)) }
            if sent > 0 {
                accepted += sent
                unsent.removeFirst(sent)
                stalledSince = nil
                continue
            }
            let now = monotonicNanoseconds()
            if let since = stalledSince, now - since > 300_000_000 { break }
            stalledSince = stalledSince ?? now
            usleep(5000)
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        #expect(accepted < 8 << 20, "the server stopped reading: \(accepted >> 10) KiB taken while the unmap waited")
        pin.release()
        try client.sendRaw(unsent) // the rest of the last batch, now that the server reads again
        _ = try client.awaitReply(id: unmapID, command: .dmaUnmap, timeoutMilliseconds: 10_000)
        let last = try client.read(.bar0, offset: 0, as: UInt64.self)
        #expect(last == written, "every write was handled, the last one last: \(last) of \(written), \(accepted) bytes")
        #expect(server.device.dma.mappingCount == 0)
    }

    /// While an unmap waits for a pin, its mapping is already closed to new accesses (the table
    /// marks it removing, a bit packed beside its size and flags); the mapping beside it keeps its
    /// size and flags.
    @Test func aMappingBeingUnmappedRefusesNewAccesses() throws {
        let (server, client, memory) = try setUp()
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Self.iova, size: 0x1000), fd: memory.fd.descriptor)
        try client.dmaMap(DMAMapRequest(flags: .read, offset: 0x1000, address: Self.iova + 0x1000, size: 0x1000), fd: memory.fd.descriptor)
        let dma = server.device.dma
        let pin = try dma.pin(Self.iova, length: 16, access: .read)
        let refused = Shared<Bool>(false)
        let neighbourIntact = Shared<Bool>(false)
        let holder = Thread {
            let deadline = monotonicNanoseconds() + 5_000_000_000
            while !refused.value && monotonicNanoseconds() < deadline {
                do throws(DMAError) {
                    try dma.pin(Self.iova + 8, length: 8, access: .read).release()
                    usleep(1000)
                } catch {
                    refused.value = error == .notMapped(Self.iova + 8)
                }
            }
            let readable = (try? dma.withPinned(Self.iova + 0x1000, length: 0x1000, access: .read) { $0.count }) == 0x1000
            let writeRefused: Bool
            do throws(DMAError) { try dma.pin(Self.iova + 0x1000, length: 8, access: .write).release(); writeRefused = false } catch {
                writeRefused = error == .accessDenied(address: Self.iova + 0x1000, write: true)
            }
            neighbourIntact.value = readable && writeRefused
            pin.release()
        }
        try client.dmaUnmap(DMAUnmapRequest(address: Self.iova, size: 0x1000))
        holder.join()
        #expect(refused.value, "a new pin while the unmap waited was refused")
        #expect(neighbourIntact.value)
        #expect(dma.mappings.map(\.iova) == [Self.iova + 0x1000])
    }

    @Test func unmapWaitsForAnAccessInProgressOnAnotherThread() throws {
        let (server, client, memory) = try setUp()
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Self.iova, size: 0x1000), fd: memory.fd.descriptor)
        let dma = server.device.dma
        let inside = Shared(false), leftAt = Shared<UInt64>(0)
        let holder = Thread {
            _ = try? dma.withPinned(Self.iova, length: 16, access: .write) { buffer in
                inside.value = true
                usleep(200_000)
                buffer.storeBytes(of: 0x5A, toByteOffset: 0, as: UInt8.self)
                leftAt.value = monotonicNanoseconds()
            }
        }
        while !inside.value { usleep(1000) }
        try client.dmaUnmap(DMAUnmapRequest(address: Self.iova, size: 0x1000))
        let repliedAt = monotonicNanoseconds()
        holder.join()
        #expect(leftAt.value > 0 && repliedAt >= leftAt.value, "the unmap's reply came after the access ended")
        #expect(memory.read(0, 1) == [0x5A])
        #expect(dma.mappingCount == 0)
        #expect(throws: DMAError.self) { try dma.withPinned(Self.iova, length: 16, access: .read) { _ in 0 } }
    }

    /// The table packs each mapping's flags with its size, or with a note that the size is the
    /// mapping's: the largest size allowed (2^52) and the flags both survive (its last page
    /// overlaps, the next byte does not; a read-only mapping refuses writes; an unmap must name
    /// the exact size).
    @Test func theLargestMappingKeepsItsSizeAndFlagsInTheTable() throws {
        let (server, client, _) = try setUp()
        let size = DMASpace.maxMappingSize
        try client.dmaMap(DMAMapRequest(flags: .read, offset: 0, address: 0, size: size))
        expectErrno(.fileExists) { try client.dmaMap(DMAMapRequest(flags: .read, offset: 0, address: size - 0x1000, size: 0x1000)) }
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: size, size: 0x1000))
        let dma = server.device.dma
        #expect(throws: DMAError.accessDenied(address: size - 1, write: true)) { try dma.pin(size - 1, length: 1, access: .write) }
        #expect(throws: DMAError.messageMode(size - 1)) { try dma.pin(size - 1, length: 1, access: .read) }
        #expect(throws: DMAError.messageMode(size)) { try dma.pin(size, length: 1, access: .write) }
        expectErrno(.invalidArgument) { try client.dmaMap(DMAMapRequest(flags: .read, offset: 0, address: 1 << 53, size: size + 1)) }
        expectErrno(.noSuchFileOrDirectory) { try client.dmaUnmap(DMAUnmapRequest(address: 0, size: size - 0x1000)) }
        try client.dmaUnmap(DMAUnmapRequest(address: 0, size: size))
        #expect(dma.mappings.map(\.iova) == [size])
    }

    /// The table keeps a page-sized mapping up to 64 GiB in its entry and anything else (a size in
    /// bytes, a larger one) in the mapping: each form ends where it should, with the right memory.
    @Test func entriesInTheTableAndEntriesThatEscapeItEndWhereTheyShould() throws {
        let (server, client, memory) = try setUp()
        let dma = server.device.dma
        // Message mode: 64 GiB is the largest kept in the entry, 64 GiB and a page is not.
        for (address, size) in [(UInt64(1) << 40, UInt64(1) << 36), (UInt64(1) << 41, (UInt64(1) << 36) + 0x1000)] {
            try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: address, size: size))
            expectErrno(.fileExists) { try client.dmaMap(DMAMapRequest(flags: .read, offset: 0, address: address + size - 0x1000, size: 0x1000)) }
            try client.dmaMap(DMAMapRequest(flags: .read, offset: 0, address: address + size, size: 0x1000))
            #expect(throws: DMAError.messageMode(address + size - 1)) { try dma.pin(address + size - 1, length: 1, access: .write) }
            #expect(throws: DMAError.accessDenied(address: address + size, write: true)) { try dma.pin(address + size, length: 1, access: .write) }
        }
        // With an fd: a size in bytes (0x1800), then a page-sized neighbour right after it.
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0x3000, address: Self.iova, size: 0x1800), fd: memory.fd.descriptor)
        expectErrno(.fileExists) { try client.dmaMap(DMAMapRequest(flags: .read, offset: 0, address: Self.iova + 0x17FF, size: 0x1000), fd: memory.fd.descriptor) }
        #expect(throws: DMAError.notMapped(Self.iova + 0x1800)) { try dma.pin(Self.iova + 0x1800, length: 1, access: .read) }
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0x8000, address: Self.iova + 0x1800, size: 0x1000), fd: memory.fd.descriptor)
        try [UInt8(0xA1), 0xB2].withUnsafeBytes { try dma.write(Self.iova + 0x17FF, from: $0) }
        #expect(memory.read(0x3000 + 0x17FF, 1) == [0xA1])
        #expect(memory.read(0x8000, 1) == [0xB2])
        let pin = try dma.pin(Self.iova + 0x17FE, length: 4, access: .read)
        #expect(pin.segments.map(\.count) == [2, 2])
        pin.release()
    }

    @Test func aMappingThatEndsAtTwoToTheSixtyFourIsReachedWithoutOverflow() throws {
        let (server, client, memory) = try setUp()
        let top = UInt64.max - 0xFFF // the last page of the 64-bit space: iova + size is 2^64
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: top, size: 0x1000), fd: memory.fd.descriptor)
        let dma = server.device.dma
        try [UInt8(1), 2, 3, 4].withUnsafeBytes { try dma.write(UInt64.max - 3, from: $0) }
        #expect(memory.read(0xFFC, 4) == [1, 2, 3, 4])
        #expect(try dma.withPinned(top, length: 0x1000, access: .read) { $0.count } == 0x1000)
        #expect(throws: DMAError.self) { try dma.withPinned(top + 1, length: 0x1000, access: .read) { _ in 0 } }
        let pin = try dma.pin(UInt64.max - 15, length: 16, access: .read)
        #expect(pin.length == 16)
        pin.release()
        // Ranges that would wrap past 2^64 to address 0, mapped too, in message mode: refused.
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: 0, size: 0x1000))
        var buffer = [UInt8](repeating: 0, count: 8)
        #expect(throws: DMAError.notMapped(0)) { try buffer.withUnsafeMutableBytes { try dma.read(UInt64.max - 3, into: $0) } }
        #expect(throws: DMAError.notMapped(0)) { try dma.pin(UInt64.max - 3, length: 8, access: .read) }
        // A device thread's translation cache (virtio-net's rings and buffers) too.
        let cache = DMATranslationCache(dma: dma)
        #expect(try cache.host(UInt64.max, length: 1, access: .write) != nil)
        #expect(try cache.host(top, length: 0x1000, access: .read) != nil)
        #expect(try cache.host(top + 1, length: 0x1000, access: .read) == nil) // would run past 2^64: copy path refuses
        cache.releaseAll()
        try client.dmaUnmap(DMAUnmapRequest(address: top, size: 0x1000))
    }

    /// A device thread's translation cache pins at most eight mappings, the oldest going first;
    /// its pointers reach the client's memory, and writes through it are marked dirty, again after
    /// a report clears them.
    @Test func theTranslationCachePinsEightMappingsAtMostOldestOutFirst() throws {
        let (server, client, memory) = try setUp()
        for i in 0..<9 { // 4 KiB each, 8 KiB apart in IOVA, packed in the file
            try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: UInt64(i) * 0x1000, address: Self.iova + UInt64(i) * 0x2000,
                                            size: 0x1000), fd: memory.fd.descriptor)
        }
        let dma = server.device.dma
        let cache = DMATranslationCache(dma: dma)
        defer { cache.releaseAll() }
        for i in 0..<9 {
            let host = try #require(try cache.host(Self.iova + UInt64(i) * 0x2000 + 0x10, length: 1, access: .write))
            host.storeBytes(of: UInt8(i + 1), as: UInt8.self)
            #expect(memory.read(i * 0x1000 + 0x10, 1) == [UInt8(i + 1)])
        }
        let oldestOut = [0] + Array(repeating: 1, count: 8)
        #expect(dma.mappings.map(\.pins) == oldestOut)
        // A hit pins nothing more; a range running out of its mapping is left to the copy path.
        #expect(try cache.host(Self.iova + 0x2000, length: 0x1000, access: .read) != nil)
        #expect(try cache.host(Self.iova + 0x2010, length: 0x1000, access: .read) == nil)
        #expect(dma.mappings.map(\.pins) == oldestOut)
        #expect(try dma.dirtyBitmap(Self.iova, size: 0x12000, pageSize: 4096, clear: true) == [0x15555]) // pages 0, 2, ..., 16
        _ = try cache.host(Self.iova + 0x4000, length: 8, access: .write)
        #expect(try dma.dirtyBitmap(Self.iova, size: 0x12000, pageSize: 4096, clear: false) == [1 << 4])
        cache.releaseAll()
        #expect(dma.mappings.allSatisfy { $0.pins == 0 })
    }

    @Test func unmapTellsTheDeviceWhichReleasesItsPins() throws {
        let model = CopyEngineDevice()
        let server = try TestServer(model: model)
        let client = try server.attach()
        let memory = try Memfd(size: 0x10000)
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Self.iova, size: 0x10000), fd: memory.fd.descriptor)
        try model.pinAndHold(Self.iova + 0x100, length: 0x100)
        #expect(server.device.dma.mappings.first?.pins == 1)
        try client.dmaUnmap(DMAUnmapRequest(address: Self.iova, size: 0x10000))
        #expect(server.device.dma.mappingCount == 0)
    }

    @Test func devicePagesWrittenShowInTheDirtyBitmapUntilCleared() throws {
        let (server, client, memory) = try setUp()
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Self.iova, size: 0x10_0000), fd: memory.fd.descriptor)
        let dma = server.device.dma
        try [UInt8(1)].withUnsafeBytes { try dma.write(Self.iova + 0x3000, from: $0) }
        try [UInt8](repeating: 1, count: 0x1001).withUnsafeBytes { try dma.write(Self.iova + 0x7FFF, from: $0) }
        let pin = try dma.pin(Self.iova + 0x20000, length: 0x2000, access: .write)
        pin.release()
        _ = try dma.pin(Self.iova + 0x40000, length: 0x1000, access: .read) // reads do not dirty
        let bitmap = try dma.dirtyBitmap(Self.iova, size: 0x10_0000, pageSize: 4096, clear: true)
        let pages = (0..<256).filter { bitmap[$0 / 64] & (1 << UInt64($0 % 64)) != 0 }
        #expect(pages == [0x3, 0x7, 0x8, 0x20, 0x21]) // 0x7FFF + 0x1001 bytes end at 0x8FFF
        #expect(try dma.dirtyBitmap(Self.iova, size: 0x10_0000, pageSize: 4096, clear: false).allSatisfy { $0 == 0 })
        // At 64 KiB pages, the same writes cover pages 0 (0x3000, 0x7fff-0x9000) and 2 (0x20000).
        try [UInt8(1)].withUnsafeBytes { try dma.write(Self.iova + 0x3000, from: $0) }
        try [UInt8(1)].withUnsafeBytes { try dma.write(Self.iova + 0x21000, from: $0) }
        #expect(try dma.dirtyBitmap(Self.iova, size: 0x10_0000, pageSize: 0x10000, clear: false) == [0b101])
    }

    /// The server is not told the layout: it asks each client with its probe.
    @Test func fdLessMapsAreReachedWithDMAMessagesInBothLayouts() throws {
        for layout in [DMATransferLayout.spec, .qemu] {
            let model = CopyEngineDevice()
            let server = try TestServer(model: model)
            let client = try server.attach()
            client.dmaLayout = layout
            let memory = try Memfd(size: 0x40_0000)
            client.dmaHandler = memory.handler(at: Self.iova)
            try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Self.iova, size: 0x40_0000))
            // 3 MiB: more than one message at max_data_xfer_size (1 MiB), in each direction.
            let data = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
            memory.write(0, data)
            try client.write(.bar0, offset: 0x00, value: Self.iova)
            try client.write(.bar0, offset: 0x08, value: Self.iova + 0x10_0000)
            try client.write(.bar0, offset: 0x10, value: UInt32(data.count))
            try client.write(.bar0, offset: 0x14, value: UInt32(1), posted: true)
            try client.serveRequests(milliseconds: 10_000) { model.isFinished }
            #expect(try client.read(.bar0, offset: 0x18, as: UInt32.self) == 2, "\(layout)")
            #expect(memory.read(0x10_0000, data.count) == data, "\(layout)")
            #expect(client.servedRequests >= 7, "\(layout): the probe, then 3 reads and 3 writes of 1 MiB")
        }
    }

    /// A device's read of fd-less memory is sent whole before any reply is awaited: a copy of
    /// 3 MiB is three DMA_READs at `max_data_xfer_size` (1 MiB), one round trip. This peer, written
    /// from the spec on the raw socket, answers none of them until it holds all three; a server
    /// that waited for each reply would never send the second.
    @Test func theDMAReadsOfOneCopyGoOutBeforeAnyReplyIsAwaited() throws {
        let model = CopyEngineDevice()
        let server = try TestServer(model: model)
        let client = try server.attach()
        let memory = try Memfd(size: 0x80_0000)
        let data = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
        memory.write(0, data)
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Self.iova, size: 0x80_0000))
        try client.write(.bar0, offset: 0x00, value: Self.iova)
        try client.write(.bar0, offset: 0x08, value: Self.iova + 0x40_0000)
        try client.write(.bar0, offset: 0x10, value: UInt32(data.count))
        try client.write(.bar0, offset: 0x14, value: UInt32(1), posted: true)
        // From here the test is the client, on the raw socket.
        let receiver = MessageReceiver(socket: client.socket.descriptor, maxMessageSize: 2 << 20)
        let sender = MessageSender(socket: client.socket.descriptor)
        typealias Request = (command: Command, id: UInt16, address: UInt64, count: Int, data: [UInt8])
        /// The server's next request, with the spec's u64 address and count; nil after 3 s of silence.
        func next() throws -> Request? {
            guard try receiver.waitReadable(milliseconds: 3000), let message = try receiver.receive() else { return nil }
            let bytes = Array(message.payload)
            guard bytes.count >= 16 else { Issue.record("a \(message.header.command) of \(bytes.count) payload bytes"); return nil }
            let address = bytes[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let count = bytes[8..<16].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            return (message.header.command, message.header.id, address, Int(count), Array(bytes[16...]))
        }
        /// The spec's reply: the header (flags 1: a reply), address and count again, a read's data.
        func reply(_ request: Request) throws {
            let offset = Int(request.address - Self.iova)
            let data = request.command == .dmaRead ? memory.read(offset, request.count) : []
            if request.command == .dmaWrite { memory.write(offset, request.data) }
            try sender.send(le(request.id) + le(request.command.rawValue) + le(UInt32(32 + data.count)) + le(UInt32(1)) + le(UInt32(0))
                            + le(request.address) + le(UInt64(request.count)) + data)
        }
        var reads: [Request] = []
        while reads.count < 3, let request = try next() {
            // The layout probe, an empty DMA_WRITE, waits for its answer.
            if request.command == .dmaWrite && request.count == 0 { try reply(request) } else { reads.append(request) }
        }
        #expect(reads.map(\.command) == [.dmaRead, .dmaRead, .dmaRead], "what came before the server waited: \(reads.map(\.command))")
        #expect(reads.map(\.address) == [Self.iova, Self.iova + 0x10_0000, Self.iova + 0x20_0000])
        #expect(reads.map(\.count) == [1 << 20, 1 << 20, 1 << 20])
        for request in reads { try reply(request) }
        for _ in 0..<3 { // the writes, one at a time
            let request = try #require(try next())
            #expect(request.command == .dmaWrite)
            try reply(request)
        }
        #expect(pollUntil({ model.isFinished }, milliseconds: 5000))
        #expect(try client.read(.bar0, offset: 0x18, as: UInt32.self) == 2)
        let copied = memory.read(0x40_0000, data.count) == data // not in #expect: a failure would diff 3 MiB
        #expect(copied)
    }

    @Test func theClientRefusingAMessageDMAFailsTheDeviceOperationCleanly() throws {
        let model = CopyEngineDevice()
        let server = try TestServer(model: model)
        let client = try server.attach()
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: Self.iova, size: 0x1000))
        try client.write(.bar0, offset: 0x00, value: Self.iova)
        try client.write(.bar0, offset: 0x08, value: Self.iova + 0x800)
        try client.write(.bar0, offset: 0x10, value: UInt32(16))
        try client.write(.bar0, offset: 0x14, value: UInt32(1), posted: true)
        // No handler: the client answers ENOSYS, as QEMU does for requests it does not serve.
        try client.serveRequests(milliseconds: 5000) { model.isFinished }
        let status = try client.read(.bar0, offset: 0x18, as: UInt32.self)
        #expect(status & 0xFF == 3 && status >> 8 == UInt32(Errno.noFunction.rawValue))
    }
}

@Suite("DMA and the connection")
struct DMAConnectionTests {
    @Test func reconnectLeavesNoMappingAndNoFDBehind() throws {
        let server = try ServerProcess()
        let baseline = server.openFDCount
        for _ in 0..<2 {
            let client = try VfioUserClient(path: server.path)
            try client.negotiate()
            let memory = try Memfd(size: 1 << 20)
            for i in 0..<64 {
                try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: UInt64(i) * 4096, address: DMATests.iova + UInt64(i) * 4096, size: 4096),
                                  fd: i % 4 == 0 ? nil : memory.fd.descriptor)
            }
            #expect(server.openFDCount == baseline + 1, "DMA fds are not kept open: only the connection")
            UnixSocket.shutdown(client.socket)
            #expect(server.waitForFDCount(baseline) == baseline)
        }
        #expect(server.terminate() == 0)
    }

    @Test func disconnectRemovesEveryMapping() throws {
        let server = try TestServer()
        do {
            let client = try server.attach()
            try client.dmaMap(DMAMapRequest(flags: .read, offset: 0, address: DMATests.iova, size: 0x1000))
            #expect(server.device.dma.mappingCount == 1)
        }
        server.waitDetached()
        #expect(server.device.dma.mappingCount == 0)
    }
}

@Suite("Guest RAM without fds")
struct MessageRAMAdviceTests {
    /// A user whose QEMU maps RAM without fds hears, at start and at the first such map, what it
    /// costs and what to write instead. ROMs (read-only, fd-less even with shared RAM) say nothing.
    @Test func theServerSaysOnceWhatRAMWithoutAnFdCostsAndHowToFixIt() throws {
        let server = try ServerProcess()
        defer { _ = server.terminate() }
        #expect(server.output.contains("memory-backend-memfd,id=mem,size=512M,share=on"), "\(server.output)")
        #expect(server.output.contains("With plain -m every DMA is"), "\(server.output)")
        let client = try VfioUserClient(path: server.path)
        try client.negotiate()
        try client.dmaMap(DMAMapRequest(flags: [.read], offset: 0, address: 0xFFFC_0000, size: 0x40000), fd: nil)
        #expect(!server.errors.contains("without an fd"), "a ROM: \(server.errors)")
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: 0x10_0000, size: 0xFF0_0000), fd: nil)
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: 0, size: 0xC_0000), fd: nil)
        _ = try client.deviceInfo() // a round trip: both maps are handled
        let warnings = server.errors.split(separator: "\n").filter { $0.contains("without an fd") }
        #expect(warnings.count == 1, "\(server.errors)")
        #expect(warnings.first?.contains("[0x100000, 0x10000000)") == true)
        #expect(warnings.first?.contains("-object memory-backend-memfd,id=mem,size=<RAM size>,share=on -machine memory-backend=mem") == true)
    }
}

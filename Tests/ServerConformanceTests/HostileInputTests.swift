import MttyDevice
import Support
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

/// Every index, offset, count, size and argsz field pushed to its limits and past them: each
/// request is answered (with the errno the spec's rules give, or a result where it is in range)
/// and the session goes on. The expected outcome is computed from the rules and the mtty-2's
/// region and IRQ info as the device reports it; those replies are pinned by hand, byte for byte,
/// in `DeviceQueryTests` (`deviceInfoIsPCIWithResetNineRegionsFiveIRQs`, `mtty2Regions`,
/// `irqInfoPerIndex`), so a wrong info reply fails there rather than moving the goalposts here.
@Suite("Hostile input at the limits")
struct HostileInputTests {
    static let indexes: [UInt32] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0x7FFF_FFFF, UInt32.max]

    /// The outcome of one request: nil for a success, else the errno of the error reply.
    static func outcome(_ client: VfioUserClient, _ command: Command, _ payload: [UInt8], fds: [FileDescriptor] = []) throws -> Errno? {
        do {
            _ = try client.request(command, payload: payload, fds: fds, timeoutMilliseconds: 5000)
            return nil
        } catch {
            guard case let .errorReply(_, errno) = error else { throw error }
            return errno
        }
    }

    @Test func regionReadsAndWritesAtEveryLimit() throws {
        let server = try TestServer()
        let client = try server.attach()
        let maxTransfer = UInt64(server.endpoint.configuration.maxDataTransferSize)
        var tried = 0
        for index in Self.indexes {
            let info = index < 9 ? try client.regionInfo(RegionIndex(rawValue: index)).info : nil
            let size = info?.size ?? 0
            let offsets: Set<UInt64> = [0, 1, size &- 1, size, size + 1, 0xFFFF_FFFF, UInt64.max, UInt64.max - 3, UInt64.max - maxTransfer]
            let counts: Set<UInt32> = [0, 1, 2, 4, 8, UInt32(truncatingIfNeeded: size), UInt32(truncatingIfNeeded: size + 1),
                                       UInt32(maxTransfer), UInt32(maxTransfer + 1), UInt32.max]
            for offset in offsets {
                for count in counts {
                    let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
                    let inRange = size > 0 && count > 0 && UInt64(count) <= maxTransfer && !overflow && end <= size
                    var access = ByteWriter()
                    RegionAccess(offset: offset, region: RegionIndex(rawValue: index), count: count).encode(into: &access)
                    let what = "region \(index) (size \(size)) offset 0x\(String(offset, radix: 16)) count \(count)"

                    let readable = info?.flags.contains(.read) ?? false
                    let read = try Self.outcome(client, .regionRead, access.bytes)
                    #expect(read == (inRange && readable ? nil : .invalidArgument), "read \(what)")

                    // Data as long as `count` says where that is sendable, one byte short otherwise.
                    let writable = info?.flags.contains(.write) ?? false
                    let dataLength = count <= 4096 ? Int(count) : 16
                    let write = try Self.outcome(client, .regionWrite, access.bytes + [UInt8](repeating: 0, count: dataLength))
                    let complete = dataLength == Int(count)
                    #expect(write == (inRange && writable && complete ? nil : .invalidArgument), "write \(what)")
                    tried += 2
                }
            }
        }
        #expect(tried > 1000)
        #expect(try client.read(.config, offset: 0, as: UInt16.self) == 0x4348)
    }

    @Test func regionAndIRQInfoAtEveryIndexAndArgsz() throws {
        let server = try TestServer()
        let client = try server.attach()
        let device = try client.deviceInfo()
        for index in Self.indexes {
            for argsz: UInt32 in [0, 1, 31, 32, 33, 4096, UInt32.max] {
                var request = ByteWriter()
                RegionInfo(argsz: argsz, index: RegionIndex(rawValue: index)).encode(into: &request)
                let result = try Self.outcome(client, .deviceGetRegionInfo, request.bytes)
                let valid = argsz >= 32 && index < device.numRegions
                #expect(result == (valid ? nil : .invalidArgument), "GET_REGION_INFO index \(index) argsz \(argsz)")
            }
            for argsz: UInt32 in [0, 15, 16, 17, UInt32.max] {
                var request = ByteWriter()
                IRQInfo(argsz: argsz, index: IRQIndex(rawValue: index)).encode(into: &request)
                let result = try Self.outcome(client, .deviceGetIRQInfo, request.bytes)
                let valid = argsz >= 16 && index < device.numIRQs
                #expect(result == (valid ? nil : .invalidArgument), "GET_IRQ_INFO index \(index) argsz \(argsz)")
            }
        }
        #expect(try client.read(.config, offset: 0, as: UInt16.self) == 0x4348)
    }

    @Test func setIRQsAtEveryIndexStartAndCount() throws {
        let server = try TestServer()
        let client = try server.attach()
        let counts = try (0..<5).map { try client.irqInfo(IRQIndex(rawValue: $0)).count }
        let values: [UInt32] = [0, 1, 2, 0x7FFF_FFFF, UInt32.max]
        for index in Self.indexes.prefix(7) + [UInt32.max] {
            for start in values {
                for count in values {
                    var request = ByteWriter()
                    SetIRQs(flags: [.dataNone, .actionTrigger], index: IRQIndex(rawValue: index), start: start, count: count).encode(into: &request)
                    let result = try Self.outcome(client, .deviceSetIRQs, request.bytes)
                    let vectors = index < 5 ? counts[Int(index)] : 0
                    let (end, overflow) = start.addingReportingOverflow(count)
                    // Count 0 with DATA_NONE is the disable-all form (start 0), on any index; otherwise
                    // the range must lie within the index's vectors.
                    let valid = index < 5 && (count == 0 ? start == 0 : !overflow && end <= vectors)
                    #expect(result == (valid ? nil : .invalidArgument), "SET_IRQS index \(index) start \(start) count \(count)")
                }
            }
        }
        // An eventfd list that does not match count, and more fds than max_msg_fds.
        let eventfds = try (0..<17).map { _ in try OwnedFileDescriptor.eventfd() }
        var two = ByteWriter()
        SetIRQs(flags: [.dataEventfd, .actionTrigger], index: .intx, start: 0, count: 2).encode(into: &two)
        #expect(try Self.outcome(client, .deviceSetIRQs, two.bytes, fds: [eventfds[0].descriptor]) == .invalidArgument)
        var many = ByteWriter()
        SetIRQs(flags: [.dataEventfd, .actionTrigger], index: .msix, start: 0, count: 17).encode(into: &many)
        #expect(try Self.outcome(client, .deviceSetIRQs, many.bytes, fds: eventfds.map(\.descriptor)) == .invalidArgument)
        #expect(try client.read(.config, offset: 0, as: UInt16.self) == 0x4348)
    }

    @Test func dmaRequestsAtEveryLimit() throws {
        let server = try TestServer()
        let client = try server.attach()
        let memory = try Memfd(size: 0x10000)
        let values: [UInt64] = [0, 1, 0xFFF, 0x1000, 0x10000, 0x10001, 0xFFFF_FFFF, UInt64.max - 0xFFF, UInt64.max]
        var accepted = 0
        for address in values {
            for size in values {
                for offset in [UInt64(0), 0x1000, 0x10000, UInt64.max] {
                    var request = ByteWriter()
                    DMAMapRequest(flags: [.read, .write], offset: offset, address: address, size: size).encode(into: &request)
                    let (fileEnd, fileOverflow) = offset.addingReportingOverflow(size)
                    let (_, addressOverflow) = address.addingReportingOverflow(size == 0 ? 0 : size - 1)
                    // Mapped when the range is not empty, ends inside the 64 KiB memfd and does not
                    // wrap the address space: the server takes byte-granular ranges, as the spec does.
                    let fits = size > 0 && !fileOverflow && fileEnd <= 0x10000 && !addressOverflow
                    let result = try Self.outcome(client, .dmaMap, request.bytes, fds: [memory.fd.descriptor])
                    let what = "DMA_MAP 0x\(String(address, radix: 16))+0x\(String(size, radix: 16)) @0x\(String(offset, radix: 16))"
                    #expect(result == (fits ? nil : .invalidArgument), "\(what): \(String(describing: result))")
                    if result == nil {
                        accepted += 1
                        try client.dmaUnmap(DMAUnmapRequest(address: address, size: size))
                    }
                    var unmap = ByteWriter()
                    DMAUnmapRequest(address: address, size: size).encode(into: &unmap)
                    #expect(try Self.outcome(client, .dmaUnmap, unmap.bytes) == .noSuchFileOrDirectory, "\(what): nothing is mapped any more")
                }
            }
        }
        #expect(accepted > 10)
        #expect(server.device.dma.mappingCount == 0)
        #expect(try client.read(.config, offset: 0, as: UInt16.self) == 0x4348)
    }
}

import SystemPackage
import VfioUserProto

/// A client's side of a typical session, message by message, as bytes on the wire: what QEMU sends
/// to attach an mtty (VERSION, the device, region and IRQ queries, an ERR eventfd, DMA maps with and
/// without an fd, config and BAR accesses, posted and multi writes, a migration probe, unmaps, a
/// reset). Fault tests cut it at every byte; the fuzzer's seed corpus is made of it.
public struct ConversationMessage: Sendable {
    public let name: String
    public let bytes: [UInt8]
    /// Whether the message carries one fd (an eventfd or a memory fd) with its first byte.
    public let carriesFD: Bool
}

public enum Conversation {
    /// The IOVA the DMA maps use; the fd-carrying map covers `[0, 64 KiB)` of its file.
    public static let iova: UInt64 = 0x1_0000_0000

    public static var messages: [ConversationMessage] {
        var id: UInt16 = 0
        func message(_ name: String, _ command: Command, _ fd: Bool = false, posted: Bool = false,
                     _ encode: (inout ByteWriter) -> Void) -> ConversationMessage {
            var payload = ByteWriter()
            encode(&payload)
            var writer = ByteWriter()
            MessageHeader(id: id, command: command, messageSize: UInt32(MessageHeader.size + payload.count),
                          flags: posted ? .noReply : .command).encode(into: &writer)
            writer.write(payload.bytes)
            id &+= 1
            return ConversationMessage(name: name, bytes: writer.bytes, carriesFD: fd)
        }
        return [
            message("VERSION", .version) { VersionPayload(major: 0, minor: 2, json: VfioUserClient.qemuCapabilities.json).encode(into: &$0) },
            message("DEVICE_GET_INFO", .deviceGetInfo) { DeviceInfo(flags: [], numRegions: 0, numIRQs: 0).encode(into: &$0) },
            message("DEVICE_GET_REGION_INFO", .deviceGetRegionInfo) { RegionInfo(index: .config).encode(into: &$0) },
            message("DEVICE_GET_IRQ_INFO", .deviceGetIRQInfo) { IRQInfo(index: .msi).encode(into: &$0) },
            message("DEVICE_SET_IRQS with an eventfd", .deviceSetIRQs, true) {
                SetIRQs(flags: [.dataEventfd, .actionTrigger], index: .err, start: 0, count: 1).encode(into: &$0)
            },
            message("DMA_MAP with an fd", .dmaMap, true) {
                DMAMapRequest(flags: [.read, .write], offset: 0, address: iova, size: 0x1_0000).encode(into: &$0)
            },
            message("DMA_MAP without an fd", .dmaMap) {
                DMAMapRequest(flags: [.read, .write], offset: 0, address: iova + 0x10_0000, size: 0x1000).encode(into: &$0)
            },
            message("REGION_WRITE config", .regionWrite) {
                RegionAccess(offset: 0x04, region: .config, count: 2).encode(into: &$0)
                $0.write(UInt16(0x0007))
            },
            message("REGION_READ config", .regionRead) { RegionAccess(offset: 0, region: .config, count: 64).encode(into: &$0) },
            message("REGION_WRITE BAR0 posted", .regionWrite, posted: true) {
                RegionAccess(offset: 0, region: .bar0, count: 1).encode(into: &$0)
                $0.write(UInt8(0x41))
            },
            message("REGION_WRITE_MULTI", .regionWriteMulti, posted: true) {
                RegionWriteMulti(entries: [.init(offset: 3, region: .bar0, count: 1, data: 0x03),
                                           .init(offset: 7, region: .bar0, count: 1, data: 0x5A)]).encode(into: &$0)
            },
            message("REGION_READ BAR0", .regionRead) { RegionAccess(offset: 0, region: .bar0, count: 8).encode(into: &$0) },
            message("DEVICE_FEATURE migration GET", .deviceFeature) { // QEMU's query: argsz covers the 8-byte answer
                DeviceFeature(flags: DeviceFeatureFlags(feature: .migration, get: true), data: [UInt8](repeating: 0, count: 8)).encode(into: &$0)
            },
            message("DMA_UNMAP", .dmaUnmap) { DMAUnmapRequest(address: iova + 0x10_0000, size: 0x1000).encode(into: &$0) },
            message("DEVICE_RESET", .deviceReset) { _ in },
        ]
    }

    /// Sends every message on `client` in one go (`fd` with those that carry one), then waits for
    /// each reply; an error reply or a missing one throws. Returns how many replies came (the
    /// posted writes have none).
    @discardableResult
    public static func run(on client: VfioUserClient, fd: FileDescriptor) throws -> Int {
        let messages = messages
        for message in messages { try client.sendRaw(message.bytes, fds: message.carriesFD ? [fd] : []) }
        var replies = 0
        for message in messages {
            let header = try message.bytes.withUnsafeBytes { raw in
                var reader = ByteReader(raw)
                return try MessageHeader(decoding: &reader)
            }
            guard !header.flags.contains(.noReply) else { continue }
            _ = try client.awaitReply(id: header.id, command: header.command, timeoutMilliseconds: 5000)
            replies += 1
        }
        return replies
    }
}

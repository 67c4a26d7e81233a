/// One readable line per message, the same for `--trace`, the proxy and `decode`:
///
///     → #12 REGION_READ offset=0x10 region=config count=4
///     ← #12 REGION_READ reply offset=0x10 region=config count=4 data=01000000
///     → #13 REGION_WRITE no-reply offset=0x0 region=bar0 count=1 data=41
///     ← #14 DMA_UNMAP error=ENOENT
///
/// `→` is a message towards the server, `←` one from it. Fields are decoded with the same payload
/// types the server uses; a payload that does not decode is shown as such, with its length.
public enum MessageTrace {
    public enum Direction: Sendable {
        case toServer
        case fromServer

        public var arrow: String { self == .toServer ? "→" : "←" }
    }

    public static func line(direction: Direction, header: MessageHeader, payload: UnsafeRawBufferPointer,
                            fdCount: Int, dmaLayout: DMATransferLayout = .qemu) -> String {
        var line = "\(direction.arrow) #\(header.id) \(header.command.name)"
        if header.flags.isReply { line += " reply" }
        if !header.flags.isReply && !header.flags.isCommand { line += " type=\(header.flags.type)" }
        if header.flags.contains(.noReply) { line += " no-reply" }
        if header.flags.contains(.error) {
            line += " error=\(Errno(rawValue: CInt(bitPattern: header.error)).name)"
        }
        if Int(header.messageSize) != MessageHeader.size + payload.count {
            line += " size=\(header.messageSize)"
        }
        if !payload.isEmpty {
            var reader = ByteReader(payload)
            do {
                let fields = try describe(command: header.command, isReply: header.flags.isReply, &reader, dmaLayout: dmaLayout)
                if !fields.isEmpty { line += " " + fields }
                if !reader.isAtEnd { line += " +\(reader.remaining)B" }
            } catch {
                line += " undecodable(\(payload.count)B: \(error))"
            }
        }
        if fdCount > 0 { line += " fds=\(fdCount)" }
        return line
    }

    private static func describe(command: Command, isReply: Bool, _ reader: inout ByteReader,
                                 dmaLayout: DMATransferLayout) throws(ProtocolError) -> String {
        switch command {
        case .version:
            let version = try VersionPayload(decoding: &reader)
            return "version=\(version.major).\(version.minor)" + (version.json.map { " json=\($0)" } ?? "")
        case .dmaMap:
            let map = try DMAMapRequest(decoding: &reader)
            return "argsz=\(map.argsz) flags=\(dmaFlags(map.flags)) offset=\(hex(map.offset)) address=\(hex(map.address)) size=\(hex(map.size))"
        case .dmaUnmap:
            let unmap = try DMAUnmapRequest(decoding: &reader)
            let flags = unmap.flags.isEmpty ? "" : " flags=\(unmap.flags.contains(.all) ? "ALL" : hex(UInt64(unmap.flags.rawValue)))"
            return "argsz=\(unmap.argsz)\(flags) address=\(hex(unmap.address)) size=\(hex(unmap.size))"
        case .deviceGetInfo:
            let info = try DeviceInfo(decoding: &reader)
            if !isReply { return "argsz=\(info.argsz)" }
            var flags: [String] = []
            if info.flags.contains(.pci) { flags.append("PCI") }
            if info.flags.contains(.reset) { flags.append("RESET") }
            return "argsz=\(info.argsz) flags=\(flags.joined(separator: "|")) regions=\(info.numRegions) irqs=\(info.numIRQs)"
        case .deviceGetRegionInfo:
            let info = try RegionInfo(decoding: &reader)
            if !isReply { return "argsz=\(info.argsz) index=\(info.index)" }
            var text = "argsz=\(info.argsz) index=\(info.index) flags=\(regionFlags(info.flags)) size=\(hex(info.size)) offset=\(hex(info.offset))"
            for capability in info.capabilities {
                switch capability {
                case let .sparseMmap(areas): text += " sparse=[" + areas.map { "\(hex($0.offset))+\(hex($0.size))" }.joined(separator: ",") + "]"
                case let .type(type, subtype): text += " type=\(type)/\(subtype)"
                case .msixMappable: text += " msix-mappable"
                }
            }
            return text
        case .deviceGetRegionIOFDs:
            let request = try RegionIOFDsRequest(decoding: &reader)
            return "argsz=\(request.argsz) index=\(request.index) count=\(request.count)"
        case .deviceGetIRQInfo:
            let info = try IRQInfo(decoding: &reader)
            if !isReply { return "argsz=\(info.argsz) index=\(info.index)" }
            return "index=\(info.index) flags=\(irqFlags(info.flags)) count=\(info.count)"
        case .deviceSetIRQs:
            let set = try SetIRQs(decoding: &reader)
            var text = "argsz=\(set.argsz) index=\(set.index) flags=\(set.flags) start=\(set.start) count=\(set.count)"
            if !set.data.isEmpty { text += " data=\(hexBytes(set.data))" }
            return text
        case .regionRead, .regionWrite:
            let access = try RegionAccess(decoding: &reader)
            var text = "offset=\(hex(access.offset)) region=\(access.region) count=\(access.count)"
            if !reader.isAtEnd { text += " data=\(hexBytes(Array(reader.rest())))" }
            return text
        case .dmaRead, .dmaWrite:
            let transfer = try DMATransferHeader(decoding: &reader, layout: dmaLayout)
            var text = "address=\(hex(transfer.address)) count=\(transfer.count)"
            if !reader.isAtEnd { text += " data=\(hexBytes(Array(reader.rest())))" }
            return text
        case .regionWriteMulti:
            if isReply { return "wr_cnt=\(try reader.read(UInt64.self))" }
            var parts: [String] = []
            try RegionWriteMulti.forEachEntry(in: &reader) { entry in
                parts.append("\(entry.region)+\(hex(entry.offset))/\(entry.count)=\(hex(entry.data))")
            }
            return "wr_cnt=\(parts.count) [" + parts.joined(separator: " ") + "]"
        case .deviceFeature:
            let feature = try DeviceFeature(decoding: &reader)
            var text = "argsz=\(feature.argsz) feature=\(feature.flags)"
            if !feature.data.isEmpty { text += " data=\(hexBytes(feature.data))" }
            return text
        case .migDataRead where !isReply:
            let read = try MigrationDataRead(decoding: &reader)
            return "argsz=\(read.argsz) size=\(read.size)"
        case .migDataRead, .migDataWrite:
            let data = try MigrationData(decoding: &reader)
            return "argsz=\(data.argsz) size=\(data.data.count)"
        default:
            return ""
        }
    }

    static func hex<T: BinaryInteger>(_ value: T) -> String { hexText(value) }

    /// Up to 16 bytes in hex, longer data as a byte count.
    public static func hexBytes(_ bytes: [UInt8]) -> String {
        guard bytes.count <= 16 else { return "\(bytes.count)B" }
        return bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    public static func dmaFlags(_ flags: DMAMapFlags) -> String {
        var parts: [String] = []
        if flags.contains(.read) { parts.append("READ") }
        if flags.contains(.write) { parts.append("WRITE") }
        let unknown = flags.rawValue & ~DMAMapFlags.known.rawValue
        if unknown != 0 { parts.append(hex(unknown)) }
        return parts.isEmpty ? "0" : parts.joined(separator: "|")
    }

    public static func regionFlags(_ flags: RegionInfoFlags) -> String {
        var parts: [String] = []
        if flags.contains(.read) { parts.append("READ") }
        if flags.contains(.write) { parts.append("WRITE") }
        if flags.contains(.mmap) { parts.append("MMAP") }
        if flags.contains(.caps) { parts.append("CAPS") }
        return parts.isEmpty ? "0" : parts.joined(separator: "|")
    }

    public static func irqFlags(_ flags: IRQInfoFlags) -> String {
        var parts: [String] = []
        if flags.contains(.eventfd) { parts.append("EVENTFD") }
        if flags.contains(.maskable) { parts.append("MASKABLE") }
        if flags.contains(.automasked) { parts.append("AUTOMASKED") }
        if flags.contains(.noResize) { parts.append("NORESIZE") }
        return parts.isEmpty ? "0" : parts.joined(separator: "|")
    }
}

import Support
import SystemPackage

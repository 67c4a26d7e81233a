import Support
import SystemPackage

/// Typed requests: one method per client command of the spec, each encoding the request with the
/// payload types and decoding the reply with them.
extension VfioUserClient {
    /// The capabilities QEMU 10.1+ proposes (hw/vfio-user/proxy.c), the default for tests and tools.
    public static let qemuCapabilities = VersionCapabilities(
        maxMessageFDs: 16, maxDataTransferSize: 1 << 20, pageSizes: 4096, maxDMAMaps: 65535,
        migration: .init(pageSize: 4096, maxBitmapSize: 256 << 20), writeMultiple: true)

    /// VERSION: must be the first message. Returns the server's reply and keeps its capabilities.
    @discardableResult
    public func negotiate(major: UInt16 = 0, minor: UInt16 = 0,
                          capabilities: VersionCapabilities = VfioUserClient.qemuCapabilities) throws(ClientError) -> VersionPayload {
        try negotiate(payload: VersionPayload(major: major, minor: minor, json: capabilities.json))
    }

    @discardableResult
    public func negotiate(payload: VersionPayload) throws(ClientError) -> VersionPayload {
        var writer = ByteWriter()
        payload.encode(into: &writer)
        let reply = try request(.version, payload: writer.bytes)!
        let version = try decode(reply.payload) { (r: inout ByteReader) throws(ProtocolError) in try VersionPayload(decoding: &r) }
        do throws(ProtocolError) { serverCapabilities = try VersionCapabilities(json: version.json) } catch { throw .decoding(error) }
        return version
    }

    public func deviceInfo(argsz: UInt32 = UInt32(DeviceInfo.size)) throws(ClientError) -> DeviceInfo {
        var writer = ByteWriter()
        DeviceInfo(argsz: argsz, flags: [], numRegions: 0, numIRQs: 0).encode(into: &writer)
        let reply = try request(.deviceGetInfo, payload: writer.bytes)!
        return try decode(reply.payload) { (r: inout ByteReader) throws(ProtocolError) in try DeviceInfo(decoding: &r) }
    }

    /// GET_REGION_INFO with the argsz retry rule: asks with `argsz`, and again with the size the
    /// server said it needs when that is larger (as QEMU's generic VFIO core does).
    public func regionInfo(_ index: RegionIndex, argsz: UInt32 = UInt32(RegionInfo.size),
                           retry: Bool = true) throws(ClientError) -> (info: RegionInfo, fd: OwnedFileDescriptor?) {
        var writer = ByteWriter()
        RegionInfo(argsz: argsz, index: index).encode(into: &writer)
        let reply = try request(.deviceGetRegionInfo, payload: writer.bytes)!
        let info = try decode(reply.payload) { (r: inout ByteReader) throws(ProtocolError) in try RegionInfo(decoding: &r) }
        if retry && info.argsz > argsz {
            return try regionInfo(index, argsz: info.argsz, retry: false)
        }
        guard reply.fds.count <= 1 else { throw .protocolViolation("GET_REGION_INFO reply carried \(reply.fds.count) fds") }
        return (info, reply.fds.first)
    }

    public func irqInfo(_ index: IRQIndex) throws(ClientError) -> IRQInfo {
        var writer = ByteWriter()
        IRQInfo(index: index).encode(into: &writer)
        let reply = try request(.deviceGetIRQInfo, payload: writer.bytes)!
        return try decode(reply.payload) { (r: inout ByteReader) throws(ProtocolError) in try IRQInfo(decoding: &r) }
    }

    public func setIRQs(_ set: SetIRQs, fds: [FileDescriptor] = []) throws(ClientError) {
        var writer = ByteWriter()
        set.encode(into: &writer)
        try request(.deviceSetIRQs, payload: writer.bytes, fds: fds)
    }

    public func setIRQs(_ index: IRQIndex, _ flags: SetIRQsFlags, start: UInt32 = 0, count: UInt32 = 1,
                        data: [UInt8] = [], fds: [FileDescriptor] = []) throws(ClientError) {
        try setIRQs(SetIRQs(flags: flags, index: index, start: start, count: count, data: data), fds: fds)
    }

    public func read(_ region: RegionIndex, offset: UInt64, count: Int) throws(ClientError) -> [UInt8] {
        var writer = ByteWriter()
        RegionAccess(offset: offset, region: region, count: UInt32(count)).encode(into: &writer)
        let reply = try request(.regionRead, payload: writer.bytes)!
        var data: [UInt8] = []
        try decode(reply.payload) { (r: inout ByteReader) throws(ProtocolError) in
            let access = try RegionAccess(decoding: &r)
            guard access.count == UInt32(count), access.region == region, access.offset == offset else {
                throw .invalid("REGION_READ reply echoes \(access), asked \(region)+\(offset)/\(count)")
            }
            data = Array(try r.bytes(count: count))
        }
        return data
    }

    /// REGION_WRITE; `posted` sets NO_REPLY (what QEMU does for memory-BAR writes).
    public func write(_ region: RegionIndex, offset: UInt64, data: [UInt8], posted: Bool = false) throws(ClientError) {
        var writer = ByteWriter()
        RegionAccess(offset: offset, region: region, count: UInt32(data.count)).encode(into: &writer)
        writer.write(data)
        try request(.regionWrite, payload: writer.bytes, noReply: posted)
    }

    public func read<T: FixedWidthInteger>(_ region: RegionIndex, offset: UInt64, as: T.Type) throws(ClientError) -> T {
        let bytes = try read(region, offset: offset, count: MemoryLayout<T>.size)
        return bytes.reversed().reduce(T(0)) { ($0 << 8) | T($1) }
    }

    public func write<T: FixedWidthInteger>(_ region: RegionIndex, offset: UInt64, value: T, posted: Bool = false) throws(ClientError) {
        try write(region, offset: offset, data: withUnsafeBytes(of: value.littleEndian) { Array($0) }, posted: posted)
    }

    /// REGION_WRITE_MULTI, posted as QEMU sends it (no reply) unless `posted` is false.
    public func writeMulti(_ entries: [RegionWriteMulti.Entry], posted: Bool = true) throws(ClientError) -> UInt64? {
        var writer = ByteWriter()
        RegionWriteMulti(entries: entries).encode(into: &writer)
        guard let reply = try request(.regionWriteMulti, payload: writer.bytes, noReply: posted) else { return nil }
        return try decode(reply.payload) { (r: inout ByteReader) throws(ProtocolError) in try r.read(UInt64.self) }
    }

    public func dmaMap(_ map: DMAMapRequest, fd: FileDescriptor? = nil) throws(ClientError) {
        var writer = ByteWriter()
        map.encode(into: &writer)
        try request(.dmaMap, payload: writer.bytes, fds: fd.map { [$0] } ?? [])
    }

    @discardableResult
    public func dmaUnmap(_ unmap: DMAUnmapRequest) throws(ClientError) -> DMAUnmapRequest {
        var writer = ByteWriter()
        unmap.encode(into: &writer)
        let reply = try request(.dmaUnmap, payload: writer.bytes)!
        return try decode(reply.payload) { (r: inout ByteReader) throws(ProtocolError) in try DMAUnmapRequest(decoding: &r) }
    }

    public func reset() throws(ClientError) {
        let reply = try request(.deviceReset)!
        guard reply.payload.isEmpty else { throw .protocolViolation("DEVICE_RESET reply has a \(reply.payload.count)-byte payload") }
    }

    public func deviceFeature(_ feature: DeviceFeature) throws(ClientError) -> DeviceFeature {
        var writer = ByteWriter()
        feature.encode(into: &writer)
        let reply = try request(.deviceFeature, payload: writer.bytes)!
        return try decode(reply.payload) { (r: inout ByteReader) throws(ProtocolError) in try DeviceFeature(decoding: &r) }
    }

    public func migrationDataRead(size: UInt32, argsz: UInt32? = nil) throws(ClientError) -> [UInt8] {
        var writer = ByteWriter()
        MigrationDataRead(argsz: argsz ?? UInt32(MigrationData.fixedSize) + size, size: size).encode(into: &writer)
        let reply = try request(.migDataRead, payload: writer.bytes)!
        return try decode(reply.payload) { (r: inout ByteReader) throws(ProtocolError) in try MigrationData(decoding: &r) }.data
    }

    public func migrationDataWrite(_ data: [UInt8]) throws(ClientError) {
        var writer = ByteWriter()
        MigrationData(data: data).encode(into: &writer)
        try request(.migDataWrite, payload: writer.bytes)
    }

    func sendReply(_ bytes: [UInt8]) throws(ClientError) {
        try sendRaw(bytes)
    }

    func decode<T>(_ payload: [UInt8], _ body: (inout ByteReader) throws(ProtocolError) -> T) throws(ClientError) -> T {
        do throws(ProtocolError) { return try ByteReader.decode(payload, body) } catch { throw .decoding(error) }
    }
}

import RegionEmulation
import VfioUserProto

/// mbochs migration: a header (magic, version 1.0, the framebuffer's size) that PRE_COPY offers
/// early and a destination checks at once, then in STOP_COPY the registers, the EDID and the whole
/// framebuffer. The framebuffer is the client's to write through its mapping, with no page ever
/// reported dirty: nothing can be sent before the device stops, so PRE_COPY carries the header only
/// and STOP_COPY everything else.
extension MbochsDevice: MigratableDevice {
    /// "MBOCHS" and a version byte, read as a little-endian u64.
    public static let migrationMagic: UInt64 = 0x0153_4843_4F42_4D
    public static let migrationVersion: (major: UInt32, minor: UInt32) = (1, 0)

    /// No DMA to stop apart (P2P), and a header to send early (PRE_COPY).
    public var migrationCapabilities: MigrationCapabilities { [.stopCopy, .p2p, .preCopy] }

    /// The shape: the framebuffer's size in bytes.
    var header: MigrationHeader {
        MigrationHeader(magic: Self.migrationMagic, major: Self.migrationVersion.major, minor: Self.migrationVersion.minor,
                        shape: UInt64(memorySize))
    }

    public func migrationHeader() -> [UInt8] { header.bytes }

    public func checkMigrationHeader(_ header: [UInt8]) throws(MigrationError) {
        let memory = try self.header.shape(of: header, model: "an mbochs")
        guard memory == UInt64(memorySize) else {
            throw .invalidStream("the source has a \(memory >> 20) MiB framebuffer; this one has \(memorySize >> 20) MiB")
        }
    }

    /// Registers (the DISPI file, the byte order), the EDID, then the framebuffer.
    public func saveMigrationState() throws(MigrationError) -> [UInt8] {
        let saved = registers.withLock { $0 }
        var writer = ByteWriter(capacity: memorySize + 256)
        writer.write(UInt32(saved.dispi.registers.count))
        for register in saved.dispi.registers { writer.write(register) }
        writer.write(UInt8(saved.bigEndian ? 1 : 0))
        writer.write(UInt32(saved.edid.count))
        writer.write(saved.edid)
        writer.write(UInt64(memorySize))
        writer.write(framebuffer.contents)
        return writer.bytes
    }

    public func loadMigrationState(_ state: [UInt8]) throws(MigrationError) {
        let loaded: (Registers, [UInt8])
        do throws(ProtocolError) {
            loaded = try ByteReader.decode(state, whole: true) { (r: inout ByteReader) throws(ProtocolError) in
                let count: UInt32 = try r.read()
                guard count == BochsDispi.Index.allCases.count else { throw .invalid("\(count) DISPI registers") }
                let values = try (0..<count).map { _ throws(ProtocolError) in try r.read(UInt16.self) }
                var dispi = BochsDispi(framebufferSize: memorySize)
                guard dispi.restore(values) else { throw .invalid("DISPI registers this device cannot hold") }
                let bigEndian: UInt8 = try r.read()
                guard bigEndian <= 1 else { throw .invalid("byte order \(bigEndian)") }
                let edidLength: UInt32 = try r.read()
                guard edidLength == EDID.size else { throw .invalid("an EDID of \(edidLength) bytes") }
                let edid = Array(try r.bytes(count: Int(edidLength)))
                let memory: UInt64 = try r.read()
                guard memory == UInt64(memorySize) else { throw .invalid("a framebuffer of \(memory) bytes") }
                let contents = Array(try r.bytes(count: memorySize))
                return (Registers(dispi: dispi, bigEndian: bigEndian == 1, edid: edid), contents)
            }
        } catch {
            throw .invalidStream("mbochs state: \(error)")
        }
        framebuffer.replaceContents(loaded.1)
        registers.withLock { $0 = loaded.0 }
    }
}

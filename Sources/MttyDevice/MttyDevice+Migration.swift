import RegionEmulation
import VfioUserProto

/// mtty migration, after the kernel sample's ("vfio/mtty: Enable migration support",
/// samples/vfio-mdev/mtty.c): a header (magic 0x7e9d09898c3e2c4e, version 1.0, the port count, flags 0) that PRE_COPY
/// offers early and a destination checks at once, then each port's state. Every field is written
/// explicitly, as the sample's own cover letter advised. mtty does no DMA, so P2P and PRE_COPY
/// cost nothing; its interrupts are held by the core while it is stopped.
extension MttyDevice: MigratableDevice {
    public static let migrationMagic: UInt64 = 0x7E9D_0989_8C3E_2C4E
    public static let migrationVersion: (major: UInt32, minor: UInt32) = (1, 0)

    /// As the sample: no DMA to stop apart (P2P), and a header to send early (PRE_COPY).
    public var migrationCapabilities: MigrationCapabilities { [.stopCopy, .p2p, .preCopy] }

    /// The shape: the port count (u32), then flags (u32, 0).
    var header: MigrationHeader {
        MigrationHeader(magic: Self.migrationMagic, major: Self.migrationVersion.major, minor: Self.migrationVersion.minor,
                        shape: UInt64(portCount))
    }

    public func migrationHeader() -> [UInt8] { header.bytes }

    public func checkMigrationHeader(_ header: [UInt8]) throws(MigrationError) {
        let shape = try self.header.shape(of: header, model: "an mtty")
        let ports = UInt32(truncatingIfNeeded: shape), flags = UInt32(truncatingIfNeeded: shape >> 32)
        guard flags == 0 else { throw .invalidStream("mtty header flags 0x\(String(flags, radix: 16))") }
        guard ports == portCount else { throw .invalidStream("the source is an mtty-\(ports); this is an mtty-\(portCount)") }
    }

    public func saveMigrationState() throws(MigrationError) -> [UInt8] {
        var writer = ByteWriter(capacity: 128)
        writer.write(UInt32(portCount))
        for port in portStates { port.encode(into: &writer) }
        return writer.bytes
    }

    public func loadMigrationState(_ state: [UInt8]) throws(MigrationError) {
        let ports: [UART16550]
        do throws(ProtocolError) {
            ports = try ByteReader.decode(state, whole: true) { (reader: inout ByteReader) throws(ProtocolError) in
                let count: UInt32 = try reader.read()
                guard count == portCount else { throw .invalid("\(count) ports, not \(portCount)") }
                return try (0..<count).map { _ throws(ProtocolError) in try UART16550(decoding: &reader) }
            }
        } catch {
            throw .invalidStream("mtty state: \(error)")
        }
        replacePorts(ports)
    }
}

import VfioUserProto

/// The 24-byte header a model's state starts with, as the kernel mtty sample's: magic, version
/// (major, minor) and 8 bytes that say the device's shape (a port count, a framebuffer size),
/// every field little-endian. A destination checks the model and version here; the shape is the
/// model's to compare.
public struct MigrationHeader: Equatable, Sendable {
    public var magic: UInt64
    public var major: UInt32
    public var minor: UInt32
    public var shape: UInt64

    public init(magic: UInt64, major: UInt32, minor: UInt32, shape: UInt64) {
        self.magic = magic
        self.major = major
        self.minor = minor
        self.shape = shape
    }

    public var bytes: [UInt8] {
        var writer = ByteWriter(capacity: 24)
        writer.write(magic)
        writer.write(major)
        writer.write(minor)
        writer.write(shape)
        return writer.bytes
    }

    /// The shape of a source's `header`, once it is 24 bytes of `model` (this magic) in this version.
    public func shape(of header: [UInt8], model: String) throws(MigrationError) -> UInt64 {
        let fields = try? ByteReader.decode(header, whole: true) { (r: inout ByteReader) throws(ProtocolError) in
            (try r.read(UInt64.self), try r.read(UInt32.self), try r.read(UInt32.self), try r.read(UInt64.self))
        }
        guard let (magic, major, minor, shape) = fields else { throw .invalidStream("\(model) header of \(header.count) bytes, not 24") }
        guard magic == self.magic else { throw .invalidStream("not \(model) state (magic 0x\(String(magic, radix: 16)))") }
        guard major == self.major, minor == self.minor else {
            throw .invalidStream("\(model) state version \(major).\(minor); this device reads \(self.major).\(self.minor)")
        }
        return shape
    }
}

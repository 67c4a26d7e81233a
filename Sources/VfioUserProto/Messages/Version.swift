/// VERSION payload, request and reply alike (spec "VFIO_USER_VERSION"):
/// major u16 @0, minor u16 @2, then optional UTF-8 JSON text with its terminating NUL.
public struct VersionPayload: Equatable, Sendable {
    public var major: UInt16
    public var minor: UInt16
    /// The JSON text without its NUL; nil when the payload stops after `minor`.
    public var json: String?

    public init(major: UInt16, minor: UInt16, json: String?) {
        self.major = major
        self.minor = minor
        self.json = json
    }

    public init(decoding reader: inout ByteReader) throws(ProtocolError) {
        major = try reader.read()
        minor = try reader.read()
        let text = reader.rest()
        if text.isEmpty {
            json = nil
            return
        }
        // The spec counts the NUL as part of the string; QEMU checks the last byte is NUL and
        // json-c would stop at an embedded NUL, so both are checked here.
        guard text[text.count - 1] == 0 else { throw .invalid("VERSION JSON is not NUL-terminated") }
        let body = UnsafeRawBufferPointer(rebasing: text[..<(text.count - 1)])
        guard !body.contains(0) else { throw .invalid("VERSION JSON has an embedded NUL") }
        json = String(decoding: body, as: UTF8.self)
    }

    public func encode(into writer: inout ByteWriter) {
        writer.write(major)
        writer.write(minor)
        if let json {
            writer.write(Array(json.utf8))
            writer.write(UInt8(0))
        }
    }

    public var encodedSize: Int { 4 + (json.map { $0.utf8.count + 1 } ?? 0) }
}

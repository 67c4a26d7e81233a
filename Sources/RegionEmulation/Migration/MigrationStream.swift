import VfioUserProto

/// The byte stream MIG_DATA_READ gives and MIG_DATA_WRITE takes: records of tag u32, length u32,
/// payload, in a fixed order:
///
///     stream header   magic "VFUMIGR1", version, the PCI identity and config size
///     device header   the model's `migrationHeader()`           (PRE_COPY sends these two early)
///     PCI function    config space, MSI-X table and masks, pending bits
///     device state    the model's `saveMigrationState()`
///     end             empty
///
/// A destination checks each record as soon as it is complete, so a stream for another device is
/// refused at its first bytes, and nothing is applied before the end record has arrived.
enum MigrationRecord: UInt32, CustomStringConvertible {
    case streamHeader = 1
    case deviceHeader = 2
    case pciFunction = 3
    case deviceState = 4
    case end = 5

    /// "VFUMIGR1" read as a little-endian u64.
    static let magic: UInt64 = 0x3152_4749_4D55_4656
    static let version: UInt32 = 1
    /// Longest record a destination accepts: the largest device state, an mbochs-large's 64 MiB
    /// framebuffer with its registers, and room to spare.
    static let maxLength = 72 << 20

    var description: String {
        switch self {
        case .streamHeader: "stream header"
        case .deviceHeader: "device header"
        case .pciFunction: "PCI function"
        case .deviceState: "device state"
        case .end: "end"
        }
    }

    static func encode(_ tag: MigrationRecord, _ payload: [UInt8], into writer: inout ByteWriter) {
        writer.write(tag.rawValue)
        writer.write(UInt32(payload.count))
        writer.write(payload)
    }

    /// The stream header's payload for a device of `identity` with `configSize` bytes of config space.
    static func streamHeader(_ identity: PCIIdentity, configSize: Int) -> [UInt8] {
        var writer = ByteWriter(capacity: 32)
        writer.write(magic)
        writer.write(version)
        writer.write(identity.vendorID)
        writer.write(identity.deviceID)
        writer.write(identity.subsystemVendorID)
        writer.write(identity.subsystemID)
        writer.write(identity.classCode)
        writer.write(identity.revision)
        writer.write(UInt32(configSize))
        return writer.bytes
    }
}

/// A destination's view of an incoming stream: bytes arrive in pieces of any size; records are
/// cut out and checked as they complete.
struct MigrationStreamParser {
    /// The records kept for loading.
    private(set) var deviceHeader: [UInt8]?
    private(set) var pciFunction: [UInt8]?
    private(set) var deviceState: [UInt8]?
    private(set) var complete = false
    /// Set by the first error: the stream cannot be continued.
    private(set) var refusal: String?

    private var pending: [UInt8] = []
    private var next = MigrationRecord.streamHeader
    private let expectedHeader: [UInt8]
    private let checkDeviceHeader: ([UInt8]) throws(MigrationError) -> Void

    init(expectedStreamHeader: [UInt8], checkDeviceHeader: @escaping ([UInt8]) throws(MigrationError) -> Void) {
        expectedHeader = expectedStreamHeader
        self.checkDeviceHeader = checkDeviceHeader
    }

    mutating func append(_ bytes: UnsafeRawBufferPointer) throws(MigrationError) {
        if let refusal { throw .invalidStream("an earlier write was refused (\(refusal))") }
        do throws(MigrationError) {
            guard !complete || bytes.isEmpty else { throw .invalidStream("\(bytes.count) bytes after the end record") }
            pending.append(contentsOf: bytes)
            try cutRecords()
        } catch {
            if case let .invalidStream(why) = error { refusal = why } else { refusal = error.description }
            throw error
        }
    }

    private mutating func cutRecords() throws(MigrationError) {
        while let (tag, payload) = try nextRecord() { try accept(tag, payload) }
    }

    /// Cuts the next whole record out of `pending`; nil while it is still partial.
    private mutating func nextRecord() throws(MigrationError) -> (MigrationRecord, [UInt8])? {
        guard let (tagValue, length) = try? ByteReader.decode(pending, { (r: inout ByteReader) throws(ProtocolError) in
            (try r.read(UInt32.self), try r.read(UInt32.self))
        }) else { return nil }
        guard let tag = MigrationRecord(rawValue: tagValue) else { throw .invalidStream("unknown record tag \(tagValue)") }
        guard tag == next else { throw .invalidStream("a \(tag) record where the \(next) record belongs") }
        guard length <= MigrationRecord.maxLength else { throw .invalidStream("a \(tag) record of \(length) bytes") }
        guard pending.count >= 8 + Int(length) else { return nil }
        let payload = Array(pending[8..<(8 + Int(length))])
        pending.removeFirst(8 + Int(length))
        return (tag, payload)
    }

    private mutating func accept(_ tag: MigrationRecord, _ payload: [UInt8]) throws(MigrationError) {
        switch tag {
        case .streamHeader:
            let (magic, version) = (try? ByteReader.decode(payload) { (r: inout ByteReader) throws(ProtocolError) in
                (try r.read(UInt64.self), try r.read(UInt32.self))
            }) ?? (0, 0)
            guard magic == MigrationRecord.magic else { throw .invalidStream("not a vfio-user-swift migration stream (bad magic)") }
            guard version == MigrationRecord.version else { throw .invalidStream("stream version \(version); this server reads \(MigrationRecord.version)") }
            guard payload == expectedHeader else { throw .invalidStream("the stream is of another PCI device (identity or config size differ)") }
            next = .deviceHeader
        case .deviceHeader:
            try checkDeviceHeader(payload)
            deviceHeader = payload
            next = .pciFunction
        case .pciFunction:
            pciFunction = payload
            next = .deviceState
        case .deviceState:
            deviceState = payload
            next = .end
        case .end:
            guard payload.isEmpty else { throw .invalidStream("the end record carries \(payload.count) bytes") }
            complete = true
            if !pending.isEmpty { throw .invalidStream("\(pending.count) bytes after the end record") }
        }
    }

    /// Why the stream cannot be loaded yet, or nil when it is whole.
    var incompleteness: String? {
        if let refusal { return "it was refused (\(refusal))" }
        if !complete { return "it ended before its \(next) record" + (pending.isEmpty ? "" : " (\(pending.count) bytes of a partial record)") }
        return nil
    }
}

/// The capabilities object of VERSION (spec "VFIO_USER_VERSION", capabilities table), carried as
/// `{"capabilities": {...}}`.
///
/// Known keys are type-checked strictly (a string where a number belongs is EINVAL, as in
/// libvfio-user); unknown keys are ignored, as both QEMU and libvfio-user do. A missing key is nil;
/// the `effective…` accessors apply the spec's defaults.
public struct VersionCapabilities: Equatable, Sendable {
    public var maxMessageFDs: Int?
    public var maxDataTransferSize: Int?
    public var pageSizes: UInt64?
    public var maxDMAMaps: Int?
    public var migration: Migration?
    public var twinSocket: TwinSocket?
    public var writeMultiple: Bool?

    /// `migration`: a migration-v1 key QEMU still sends (`{"pgsize":4096,"max_bitmap_size":...}`).
    public struct Migration: Equatable, Sendable {
        public var pageSize: Int?
        public var maxBitmapSize: Int?
        public init(pageSize: Int? = nil, maxBitmapSize: Int? = nil) {
            self.pageSize = pageSize
            self.maxBitmapSize = maxBitmapSize
        }
    }

    /// `twin_socket`: server-to-client messages on a second socket (libvfio-user; QEMU does not know it).
    public struct TwinSocket: Equatable, Sendable {
        public var supported: Bool
        public var fdIndex: Int?
        public init(supported: Bool, fdIndex: Int? = nil) {
            self.supported = supported
            self.fdIndex = fdIndex
        }
    }

    public init(maxMessageFDs: Int? = nil, maxDataTransferSize: Int? = nil, pageSizes: UInt64? = nil,
                maxDMAMaps: Int? = nil, migration: Migration? = nil, twinSocket: TwinSocket? = nil,
                writeMultiple: Bool? = nil) {
        self.maxMessageFDs = maxMessageFDs
        self.maxDataTransferSize = maxDataTransferSize
        self.pageSizes = pageSizes
        self.maxDMAMaps = maxDMAMaps
        self.migration = migration
        self.twinSocket = twinSocket
        self.writeMultiple = writeMultiple
    }

    // Spec defaults for absent keys.
    public static let defaultMaxMessageFDs = 1
    public static let defaultMaxDataTransferSize = 1 << 20
    public static let defaultPageSizes: UInt64 = 4096
    public static let defaultMaxDMAMaps = 65535

    public var effectiveMaxMessageFDs: Int { maxMessageFDs ?? Self.defaultMaxMessageFDs }
    public var effectiveMaxDataTransferSize: Int { maxDataTransferSize ?? Self.defaultMaxDataTransferSize }
    public var effectivePageSizes: UInt64 { pageSizes ?? Self.defaultPageSizes }
    public var effectiveMaxDMAMaps: Int { maxDMAMaps ?? Self.defaultMaxDMAMaps }

    /// Parses the JSON text of a VERSION payload (nil: no JSON at all, every key absent).
    public init(json: String?) throws(ProtocolError) {
        self.init()
        guard let json else { return }
        let document: JSONValue
        do { document = try JSONValue(parsing: json) } catch { throw .badCapabilities("JSON does not parse: \(error)") }
        guard case .object = document else { throw .badCapabilities("top level is \(document.typeName), not an object") }
        guard let capabilities = document["capabilities"] else { return }
        guard case let .object(members) = capabilities else {
            throw .badCapabilities("\"capabilities\" is \(capabilities.typeName), not an object")
        }
        for (key, value) in members {
            switch key {
            case "max_msg_fds": maxMessageFDs = try Self.count(value, key, maximum: 1024)
            case "max_data_xfer_size": maxDataTransferSize = try Self.count(value, key, minimum: 1, maximum: Int(Int32.max))
            case "pgsizes": pageSizes = try Self.pageSizeMask(value)
            case "max_dma_maps": maxDMAMaps = try Self.count(value, key, minimum: 1, maximum: Int(Int32.max))
            case "migration":
                guard case .object = value else { throw .badCapabilities("\"migration\" is \(value.typeName), not an object") }
                migration = Migration(
                    pageSize: try value["pgsize"].map { v throws(ProtocolError) in try Self.count(v, "migration.pgsize", minimum: 1, maximum: Int(Int32.max)) },
                    maxBitmapSize: try value["max_bitmap_size"].map { v throws(ProtocolError) in try Self.count(v, "migration.max_bitmap_size", maximum: Int.max) })
            case "twin_socket":
                guard case .object = value else { throw .badCapabilities("\"twin_socket\" is \(value.typeName), not an object") }
                var supported = false
                if let flag = value["supported"] {
                    guard case let .bool(b) = flag else { throw .badCapabilities("\"twin_socket.supported\" is \(flag.typeName), not a boolean") }
                    supported = b
                }
                twinSocket = TwinSocket(supported: supported,
                                        fdIndex: try value["fd_index"].map { v throws(ProtocolError) in try Self.count(v, "twin_socket.fd_index", maximum: 1024) })
            case "write_multiple":
                guard case let .bool(b) = value else { throw .badCapabilities("\"write_multiple\" is \(value.typeName), not a boolean") }
                writeMultiple = b
            default:
                continue // Unknown keys are ignored (spec: compatible additions come with minor versions).
            }
        }
    }

    private static func count(_ value: JSONValue, _ key: String, minimum: Int = 0, maximum: Int) throws(ProtocolError) -> Int {
        guard case let .int(n) = value else { throw .badCapabilities("\"\(key)\" is \(value.typeName), not an integer") }
        guard n >= minimum, n <= maximum else { throw .badCapabilities("\"\(key)\" is \(n), outside \(minimum)...\(maximum)") }
        return Int(n)
    }

    private static func pageSizeMask(_ value: JSONValue) throws(ProtocolError) -> UInt64 {
        let mask: UInt64
        switch value {
        case let .int(n) where n > 0: mask = UInt64(n)
        case let .uint(n): mask = n
        default: throw .badCapabilities("\"pgsizes\" is \(value.typeName) \(value.text), not a positive integer bitmask")
        }
        // QEMU's check: page sizes below 4 KiB are not allowed.
        guard mask & 0xFFF == 0 else { throw .badCapabilities("\"pgsizes\" 0x\(String(mask, radix: 16)) has bits below 4 KiB") }
        return mask
    }

    /// `{"capabilities":{...}}` with the present keys, in a fixed order, compact.
    public var json: String {
        var members: [(key: String, value: JSONValue)] = []
        if let maxMessageFDs { members.append(("max_msg_fds", .int(Int64(maxMessageFDs)))) }
        if let maxDataTransferSize { members.append(("max_data_xfer_size", .int(Int64(maxDataTransferSize)))) }
        if let pageSizes { members.append(("pgsizes", pageSizes > UInt64(Int64.max) ? .uint(pageSizes) : .int(Int64(pageSizes)))) }
        if let maxDMAMaps { members.append(("max_dma_maps", .int(Int64(maxDMAMaps)))) }
        if let migration {
            var m: [(key: String, value: JSONValue)] = []
            if let p = migration.pageSize { m.append(("pgsize", .int(Int64(p)))) }
            if let b = migration.maxBitmapSize { m.append(("max_bitmap_size", .int(Int64(b)))) }
            members.append(("migration", .object(m)))
        }
        if let twinSocket {
            var t: [(key: String, value: JSONValue)] = [("supported", .bool(twinSocket.supported))]
            if let i = twinSocket.fdIndex { t.append(("fd_index", .int(Int64(i)))) }
            members.append(("twin_socket", .object(t)))
        }
        if let writeMultiple { members.append(("write_multiple", .bool(writeMultiple))) }
        return JSONValue.object([("capabilities", .object(members))]).text
    }
}

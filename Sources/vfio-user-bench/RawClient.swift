import Support
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// The benchmarks' own client: prebuilt messages written with one `write`, replies read into one
/// buffer. It allocates nothing per message, so the allocations the benchmark process counts while
/// it runs against the in-process server are the server's.
final class RawClient {
    let socket: OwnedFileDescriptor
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
    private var nextID: UInt16 = 1

    init(path: String, writeMultiple: Bool) throws {
        socket = try UnixSocket.connect(path: path)
        let json = writeMultiple ? #"{"capabilities":{"max_msg_fds":8,"write_multiple":true}}"# : #"{"capabilities":{"max_msg_fds":8}}"#
        var version = ByteWriter()
        version.write(UInt16(0))
        version.write(UInt16(0))
        version.write(Array(json.utf8) + [0])
        var message = Self.message(.version, payload: version.bytes)
        try roundTrip(&message)
    }

    deinit { buffer.deallocate() }

    /// A whole message with a zero id (set per send); `flags` 0x10 posts it.
    static func message(_ command: Command, payload: [UInt8], posted: Bool = false) -> [UInt8] {
        var writer = ByteWriter()
        MessageHeader(id: 0, command: command, messageSize: UInt32(MessageHeader.size + payload.count),
                      flags: posted ? [.noReply] : []).encode(into: &writer)
        writer.write(payload)
        return writer.bytes
    }

    /// REGION_READ or REGION_WRITE of one byte.
    static func access(_ command: Command, region: RegionIndex, offset: UInt64, posted: Bool = false) -> [UInt8] {
        var writer = ByteWriter()
        RegionAccess(offset: offset, region: region, count: 1).encode(into: &writer)
        if command == .regionWrite { writer.write(UInt8(0x5A)) }
        return message(command, payload: writer.bytes, posted: posted)
    }

    /// REGION_WRITE_MULTI of `count` one-byte writes, posted (as QEMU sends them).
    static func writeMulti(region: RegionIndex, offset: UInt64, count: Int) -> [UInt8] {
        let multi = RegionWriteMulti(entries: (0..<count).map { RegionWriteMulti.Entry(offset: offset, region: region, count: 1, data: UInt64($0 & 0xFF)) })
        var writer = ByteWriter()
        multi.encode(into: &writer)
        return message(.regionWriteMulti, payload: writer.bytes, posted: true)
    }

    /// Stamps a fresh id into each of the messages laid end to end in `bytes`.
    func stampIDs(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset + MessageHeader.size <= raw.count {
                raw.storeBytes(of: nextID.littleEndian, toByteOffset: offset, as: UInt16.self)
                nextID &+= 1
                offset += Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)))
            }
        }
    }

    /// Writes the bytes (one or many messages) in one system call as far as the socket takes them.
    func send(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(socket.rawValue, raw.baseAddress! + offset, raw.count - offset)
                guard n > 0 else { throw BenchError("write failed: errno \(errno)") }
                offset += n
            }
        }
    }

    /// Reads one whole reply; throws on an error reply.
    func receiveReply() throws {
        var have = 0
        while have < MessageHeader.size || have < Int(buffer.load(fromByteOffset: 4, as: UInt32.self)) {
            let n = read(socket.rawValue, buffer.baseAddress! + have, buffer.count - have)
            guard n > 0 else { throw BenchError("the peer closed the connection") }
            have += n
        }
        let flags = buffer.load(fromByteOffset: 8, as: UInt32.self)
        guard flags & 0x20 == 0 else { throw BenchError("error reply: errno \(buffer.load(fromByteOffset: 12, as: UInt32.self))") }
    }

    /// Sends one message and waits for its reply.
    func roundTrip(_ message: inout [UInt8]) throws {
        stampIDs(&message)
        try send(message)
        try receiveReply()
    }
}

/// Latency samples in nanoseconds and what they summarize to.
struct LatencySamples {
    private(set) var values: [UInt64] = []

    init(capacity: Int) { values.reserveCapacity(capacity) }

    mutating func append(_ nanoseconds: UInt64) { values.append(nanoseconds) }

    /// The given percentiles (0-100) in microseconds.
    func percentiles(_ points: [Double]) -> [Double] {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return points.map { _ in 0 } }
        return points.map { point in
            let index = min(sorted.count - 1, Int((point / 100 * Double(sorted.count)).rounded(.down)))
            return Double(sorted[index]) / 1000
        }
    }
}

extension String {
    init(format2 value: Double) {
        let scaled = (value * 100).rounded() / 100
        var text = String(scaled)
        if let dot = text.firstIndex(of: "."), text.distance(from: dot, to: text.endIndex) == 2 { text += "0" }
        self = text
    }
}

import RegionEmulation
import SystemPackage
import VfioUserProto

extension Session {
    /// REGION_READ: the device reads straight into the reply buffer after the echoed fixed part.
    func handleRegionRead(_ payload: UnsafeRawBufferPointer) throws {
        guard payload.count == RegionAccess.size else {
            throw SessionError.malformed("REGION_READ payload is \(payload.count) bytes, must be 16")
        }
        var reader = ByteReader(payload)
        let access = try RegionAccess(decoding: &reader)
        let count = Int(access.count)
        guard count <= configuration.maxDataTransferSize else {
            throw SessionError.malformed("REGION_READ count \(count) exceeds max_data_xfer_size")
        }
        access.encode(into: &reply)
        let start = reply.count
        reply.writeZeros(count)
        try reply.withUnsafeMutableBytes { raw throws(RegionError) in
            try device.read(access.region, offset: access.offset, into: UnsafeMutableRawBufferPointer(rebasing: raw[start...]))
        }
    }

    /// REGION_WRITE: the data must be exactly `count` bytes (libvfio-user's rule). QEMU posts memory-BAR
    /// writes with NO_REPLY; a reply, when wanted, echoes the fixed part without the data.
    func handleRegionWrite(_ payload: UnsafeRawBufferPointer, replying: Bool) throws {
        var reader = ByteReader(payload)
        let access = try RegionAccess(decoding: &reader)
        guard Int(access.count) == reader.remaining else {
            throw SessionError.malformed("REGION_WRITE count \(access.count) but \(reader.remaining) data bytes")
        }
        try device.write(access.region, offset: access.offset, data: reader.rest())
        if replying { access.encode(into: &reply) }
    }

    /// REGION_WRITE_MULTI (15): up to 200 small writes in one (posted) message, applied in order.
    func handleWriteMulti(_ header: MessageHeader, _ payload: UnsafeRawBufferPointer) throws {
        var reader = ByteReader(payload)
        var written: UInt64 = 0
        var failure: Error?
        try RegionWriteMulti.forEachEntry(in: &reader) { entry in
            guard failure == nil else { return }
            var data = entry.data.littleEndian
            do {
                try withUnsafeBytes(of: &data) { raw in
                    try device.write(entry.region, offset: entry.offset, data: UnsafeRawBufferPointer(rebasing: raw[..<Int(entry.count)]))
                }
                written += 1
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        reply.write(written)
    }
}

import SystemPackage

/// How a client serves the server's DMA_READ / DMA_WRITE: reads and writes of its own memory by
/// address. Returning an errno answers with an error reply, as QEMU does for a failed access.
public struct DMARequestHandler {
    public var read: (_ address: UInt64, _ into: UnsafeMutableRawBufferPointer) -> Errno?
    public var write: (_ address: UInt64, _ from: UnsafeRawBufferPointer) -> Errno?

    public init(read: @escaping (UInt64, UnsafeMutableRawBufferPointer) -> Errno?,
                write: @escaping (UInt64, UnsafeRawBufferPointer) -> Errno?) {
        self.read = read
        self.write = write
    }
}

extension VfioUserClient {
    /// Answers one request from the server, in this client's DMA layout.
    ///
    /// QEMU's layout (its `VFIOUserDMARW` is 32 bytes: `{hdr; u64 offset; u32 count}` with the data at
    /// message offset 28 and 4 bytes of tail padding): a READ reply is `32 + count` bytes with the data
    /// at 28; a WRITE reply is header-only. The spec's layout: 16-byte fixed part, data at 32, a READ
    /// reply carries address, count and data, a WRITE reply the address and count.
    func serveRequest(_ message: inout MessageReceiver.Message) throws(ClientError) {
        let header = message.header
        servedRequests += 1
        if header.flags.contains(.noReply) { postedRequests += 1 }
        guard message.fds.isEmpty else { return try replyError(to: header, .invalidArgument) }
        guard header.command == .dmaRead || header.command == .dmaWrite, let dmaHandler else {
            return try replyError(to: header, .noFunction)
        }
        let layout = dmaLayout
        var reader = ByteReader(message.payload)
        let transfer: DMATransferHeader
        do {
            // QEMU refuses anything shorter than its 32-byte struct.
            if layout == .qemu && message.payload.count < 16 { throw ProtocolError.truncated(needed: 16, available: message.payload.count) }
            transfer = try DMATransferHeader(decoding: &reader, layout: layout)
        } catch {
            return try replyError(to: header, .invalidArgument)
        }
        let count = Int(transfer.count)
        var reply = ByteWriter(capacity: 64 + (header.command == .dmaRead ? count : 0))
        if header.command == .dmaRead {
            guard count <= serverCapabilities.effectiveMaxDataTransferSize || layout == .spec else {
                return try replyError(to: header, .argListTooLong)
            }
            let dataOffset = MessageHeader.size + layout.fixedSize
            let size = layout == .qemu ? 32 + count : dataOffset + count
            header.reply(payloadSize: size - MessageHeader.size).encode(into: &reply)
            transfer.encode(into: &reply, layout: layout)
            reply.writeZeros(size - reply.count)
            let failure = reply.withUnsafeMutableBytes { raw in
                dmaHandler.read(transfer.address, UnsafeMutableRawBufferPointer(rebasing: raw[dataOffset ..< dataOffset + count]))
            }
            if let failure { return try replyError(to: header, failure) }
        } else {
            let data = reader.rest()
            let available = layout == .qemu ? message.payload.count - 16 : data.count
            guard count <= available, count <= data.count else { return try replyError(to: header, .argListTooLong) }
            if let failure = dmaHandler.write(transfer.address, UnsafeRawBufferPointer(rebasing: data[..<count])) {
                return try replyError(to: header, failure)
            }
            if layout == .qemu {
                header.reply(payloadSize: 0).encode(into: &reply)
            } else {
                header.reply(payloadSize: 16).encode(into: &reply)
                transfer.encode(into: &reply, layout: .spec)
            }
        }
        if header.flags.contains(.noReply) { return }
        try sendReply(reply.bytes)
    }

    private func replyError(to header: MessageHeader, _ errno: Errno) throws(ClientError) {
        if header.flags.contains(.noReply) { return }
        var reply = ByteWriter(capacity: 16)
        header.errorReply(errno: UInt32(errno.rawValue)).encode(into: &reply)
        try sendReply(reply.bytes)
    }
}

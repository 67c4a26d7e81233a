import RegionEmulation
import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

extension Session {
    /// DMA_MAP: at most one fd (the memory to mmap); none means message-mode DMA. The reply is header-only.
    func handleDMAMap(_ payload: UnsafeRawBufferPointer, fds: inout [OwnedFileDescriptor]) throws {
        try requirePayload(payload, atLeast: DMAMapRequest.size, .dmaMap)
        var reader = ByteReader(payload)
        let request = try DMAMapRequest(decoding: &reader)
        try requireArgsz(request.argsz, atLeast: DMAMapRequest.size, .dmaMap)
        guard fds.count <= 1 else { throw SessionError.malformed("DMA_MAP with \(fds.count) fds") }
        try device.dma.map(request, fd: fds.first)
        if fds.isEmpty { mapsWithoutFD += 1 } else { mapsWithFD += 1 }
        if !warnedAboutMessageRAM && DMASpace.isRAMByMessages(flags: request.flags, hasFileDescriptor: !fds.isEmpty) {
            warnedAboutMessageRAM = true
            let range = "[0x\(String(request.address, radix: 16)), 0x\(String(request.address + request.size, radix: 16)))"
            ServerLog.warning("\(name): the client maps guest RAM \(range) without an fd, so every DMA to it is a "
                              + "message through the client: a NIC's request-response latency about triples, and both sides spend CPU on it. Give QEMU shared RAM: "
                              + "-object memory-backend-memfd,id=mem,size=<RAM size>,share=on -machine memory-backend=mem")
        }
    }

    /// DMA_UNMAP: exact match (or ALL). The reply echoes the request; it is sent only after device
    /// models let go of every pin on the range. While waiting, replies to this server's own DMA
    /// messages keep being routed, and client commands are set aside to be handled next, in order.
    func handleDMAUnmap(_ payload: UnsafeRawBufferPointer) throws {
        try requirePayload(payload, atLeast: DMAUnmapRequest.size, .dmaUnmap)
        var reader = ByteReader(payload)
        let request = try DMAUnmapRequest(decoding: &reader)
        try requireArgsz(request.argsz, atLeast: DMAUnmapRequest.size, .dmaUnmap)
        try device.dma.unmap(request, waitForRelease: { released in self.pumpUntil(released, milliseconds: 10_000) })
        request.encode(into: &reply)
    }

    /// Keeps the socket serviced until `done` or the deadline: replies are routed to waiting device
    /// threads, other messages are copied aside for later. Returns whether `done` became true.
    ///
    /// What is set aside is bounded (`maxDeferredBytes`): past it the socket is no longer read, so a
    /// client that floods commands while it is kept waiting fills its own socket, not the server's
    /// memory. A DMA reply queued behind its flood then waits too, and the device's DMA times out.
    func pumpUntil(_ done: () -> Bool, milliseconds: Int) -> Bool {
        let deadline = monotonicNanoseconds() + UInt64(milliseconds) * 1_000_000
        while !done() {
            guard monotonicNanoseconds() < deadline else { return false }
            guard deferredBytes < Self.maxDeferredBytes else {
                usleep(1000)
                continue
            }
            guard (try? receiver.waitReadable(milliseconds: 1)) == true else { continue }
            guard let message = try? receiver.receive() else { return done() }
            if message.header.flags.isReply {
                dmaChannel.deliver(message.header, message.payload)
            } else {
                deferred.append(DeferredMessage(header: message.header, payload: Array(message.payload), fds: message.fds,
                                                fdsTruncated: message.fdsTruncated, isOversized: message.isOversized))
                deferredBytes += MessageHeader.size + message.payload.count
            }
        }
        return true
    }

    /// Client messages set aside while waiting (`pumpUntil`), at most: a few milliseconds of a
    /// client's posted writes, far more than QEMU sends while one of its requests waits.
    static let maxDeferredBytes = 1 << 20
}

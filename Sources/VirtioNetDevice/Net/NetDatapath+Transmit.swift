import CLinux
import RegionEmulation
import Support
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// The transmit queue: frames from the driver to the backend.
extension NetDatapath {
    // MARK: Transmit (driver to backend)

    /// Sends what the driver queued; true if anything was done.
    func transmit(_ memory: GuestMemory) throws(VirtqueueError) -> Bool {
        guard var queue = tx else { return false }
        defer { tx = queue }
        var done = 0
        transmitIdle = false
        // By messages a look at the ring is a round trip, so a batch is what one look announced, and
        // the look that follows it does three jobs (see below).
        let looksCost = try queue.isReachedByMessages(memory)
        var mayLook = true
        while true {
            var pending: UInt16 = 0
            var sent = 0, bytes = 0, dropped = 0
            transmitBlocked = false
            while pending < 64, mayLook || queue.availableSeen != queue.lastAvailable, try queue.pop(into: &transmitChain, memory) {
                mayLook = !looksCost
                guard transmitChain.writable.isEmpty else { throw .wrongDirection(head: transmitChain.head) }
                let length = transmitChain.readableLength
                if length >= VirtioNetHeader.size && length <= transmitBuffer.count {
                    let copied = try Self.gather(&transmitChain, into: transmitBuffer, memory)
                    let frame = backend.carriesVirtioHeader
                        ? UnsafeRawBufferPointer(rebasing: transmitBuffer[..<copied])
                        : UnsafeRawBufferPointer(rebasing: transmitBuffer[VirtioNetHeader.size ..< copied])
                    switch backend.send(frame) {
                    case .sent:
                        sent += 1
                        bytes += copied - VirtioNetHeader.size
                    case .dropped:
                        dropped += 1
                    case .full:
                        // Backpressure: the chain goes back to the ring, to be sent once the
                        // backend is writable again (sleep polls for that).
                        queue.rewind(to: queue.lastAvailable &- 1)
                        transmitBlocked = true
                        counters.withLock { $0.transmitStalls += 1 }
                    }
                    if transmitBlocked { break }
                } else {
                    dropped += 1
                }
                try queue.addUsed(head: transmitChain.head, length: 0, memory, pending: &pending)
            }
            if sent > 0 || dropped > 0 {
                counters.withLock { c in
                    c.transmittedFrames += sent
                    c.transmittedBytes += bytes
                    c.droppedFrames += dropped
                }
            }
            guard pending > 0 else {
                if transmitBlocked { return done > 0 }
                // Idle: ask for a kick, then look once more for what raced with that request.
                if try queue.setNotifications(true, memory), try queue.pendingCount(memory) > 0 { continue }
                transmitIdle = true
                return done > 0
            }
            done += Int(pending)
            try queue.publishUsed(pending, memory)
            // By messages: ask for a kick at once, so that one look finds the next batch, anything
            // that raced with the request, and the driver's interrupt wish: one round trip, where
            // looking, asking and looking again took three.
            var idle = false
            if looksCost {
                try queue.setNotifications(true, memory)
                idle = try queue.pendingCount(memory) == 0
            }
            if try queue.needsInterrupt(memory) { signal(VirtioNetDevice.transmitQueue) }
            if pauseRequested.load(ordering: .relaxed) || transmitBlocked { return true } // a migration waits for this batch boundary
            if idle {
                transmitIdle = true
                return true
            }
        }
    }
}

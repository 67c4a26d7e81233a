import CLinux
import RegionEmulation
import Support
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// The receive queue: frames from the backend into the driver's buffers.
extension NetDatapath {
    // MARK: Receive (backend to driver)

    /// Moves frames from the backend into the driver's buffers; true if anything was done.
    func receive(_ memory: GuestMemory) throws(VirtqueueError) -> Bool {
        guard var queue = rx else { return false }
        defer { rx = queue }
        let mergeable = features.contains(.netMergeableRxBuffers)
        receiveStarved = false
        refreshFilter()
        var delivered = 0
        var receivedBytes = 0
        var pending: UInt16 = 0
        defer { if pending > 0, let published = try? publish(&queue, pending, memory), published { signal(VirtioNetDevice.receiveQueue) } }
        while delivered < 256 {
            if pendingFrameLength == 0 {
                guard try queue.hasAvailable(memory) else {
                    receiveStarved = true
                    break
                }
                guard let length = nextFrame() else { break }
                pendingFrameLength = length
            }
            let mark = queue.lastAvailable
            var chainCount = 0
            var capacity = 0
            while capacity < pendingFrameLength {
                if chainCount == receiveChains.count { receiveChains.append(DescriptorChain(head: 0)) }
                guard try queue.pop(into: &receiveChains[chainCount], memory) else { break }
                guard receiveChains[chainCount].readable.isEmpty else { throw .wrongDirection(head: receiveChains[chainCount].head) }
                capacity += receiveChains[chainCount].writableLength
                chainCount += 1
                if !mergeable { break }
            }
            if capacity < pendingFrameLength {
                queue.rewind(to: mark)
                if !mergeable && chainCount > 0 {
                    // A single buffer too small for this frame: drop the frame, keep the buffer.
                    pendingFrameLength = 0
                    counters.withLock { $0.droppedFrames += 1 }
                    continue
                }
                // Too few buffers: hold the frame until the driver adds some (it will kick). Try
                // again now only if more arrived than were just tried, or this would spin.
                try queue.setNotifications(true, memory)
                if try queue.pendingCount(memory) > chainCount { continue }
                receiveStarved = true
                break
            }
            // num_buffers in the header: how many buffers this frame spans.
            receiveBuffer.storeBytes(of: UInt16(chainCount).littleEndian, toByteOffset: 10, as: UInt16.self)
            var offset = 0
            for index in 0..<chainCount where offset < pendingFrameLength {
                let part = UnsafeRawBufferPointer(rebasing: receiveBuffer[offset ..< pendingFrameLength])
                let written = try Self.scatter(part, into: &receiveChains[index], memory)
                try queue.addUsed(head: receiveChains[index].head, length: UInt32(written), memory, pending: &pending)
                offset += written
            }
            receivedBytes += pendingFrameLength - VirtioNetHeader.size
            pendingFrameLength = 0
            delivered += 1
            // Published only between frames: Linux's receive_mergeable takes num_buffers entries
            // the moment it sees a frame's first, and drops the frame if any is missing.
            if pending >= 64 {
                if try publish(&queue, pending, memory) { signal(VirtioNetDevice.receiveQueue) }
                pending = 0
            }
        }
        if delivered > 0 {
            counters.withLock { c in
                c.receivedFrames += delivered
                c.receivedBytes += receivedBytes
            }
        }
        if delivered == 0 && pendingFrameLength == 0 {
            // Buffers added while we were asking for a kick would get none: look once more.
            if try queue.setNotifications(true, memory), receiveStarved, try queue.pendingCount(memory) > 0 {
                receiveStarved = false
                return true
            }
        }
        return delivered > 0
    }

    func publish(_ queue: inout SplitVirtqueue, _ count: UInt16, _ memory: GuestMemory) throws(VirtqueueError) -> Bool {
        try queue.publishUsed(count, memory)
        // By messages, the look that brings the driver's interrupt wish brings its new buffers too.
        if try queue.isReachedByMessages(memory) { _ = try queue.pendingCount(memory) }
        return try queue.needsInterrupt(memory)
    }

    /// `memory.gather` from a chain's readable buffers and `memory.scatter` into its writable ones,
    /// the chain reached in place: its buffer array read from a property or an array element would
    /// be a copy, retained and released around every call; under an inout access it is borrowed.
    static func gather(_ chain: inout DescriptorChain, into destination: UnsafeMutableRawBufferPointer,
                               _ memory: GuestMemory) throws(VirtqueueError) -> Int {
        try memory.gather(chain.readable, into: destination)
    }

    static func scatter(_ part: UnsafeRawBufferPointer, into chain: inout DescriptorChain,
                                _ memory: GuestMemory) throws(VirtqueueError) -> Int {
        try memory.scatter(part, into: chain.writable)
    }

    /// Reads the next frame the filter lets through into `receiveBuffer`, header first; nil if none.
    func nextFrame() -> Int? {
        while true {
            let length: Int
            if backend.carriesVirtioHeader {
                guard let n = backend.receive(into: receiveBuffer), n >= VirtioNetHeader.size else { return nil }
                length = n
                if !features.contains(.netGuestChecksum) {
                    receiveBuffer[0] = 0 // DATA_VALID / NEEDS_CSUM mean nothing to a driver without GUEST_CSUM
                }
            } else {
                let frame = UnsafeMutableRawBufferPointer(rebasing: receiveBuffer[VirtioNetHeader.size...])
                guard let n = backend.receive(into: frame) else { return nil }
                VirtioNetHeader().store(into: UnsafeMutableRawBufferPointer(rebasing: receiveBuffer[..<VirtioNetHeader.size]))
                length = VirtioNetHeader.size + n
            }
            if filter.promiscuous { return length }
            let destination = UnsafeRawBufferPointer(rebasing: receiveBuffer[VirtioNetHeader.size ..< min(length, VirtioNetHeader.size + 6)])
            if filter.accepts(destination: destination, deviceMAC: mac) { return length }
            counters.withLock { $0.filteredFrames += 1 }
        }
    }

    /// Takes the device's filter when it changed (the control queue changes it, on another path).
    func refreshFilter() {
        guard let device, device.filterVersion != filterVersion else { return }
        (filter, mac, filterVersion) = device.filterSnapshot
    }
}

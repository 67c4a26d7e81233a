import RegionEmulation

/// Guest memory reached by DMA messages (a client that maps RAM without fds), in fewer of them.
/// Each read waits for the client, so a queue's parts are read whole at each look at its ring (its
/// descriptor table and available ring, behind the index) and served from those windows, as is a
/// chain's indirect table; reads that need not wait for each other go out together. Writes are
/// posted (no reply to wait for) and held as runs of contiguous bytes: a batch's used elements go
/// out as one message, however its frames' data interleave.
///
/// Writes are held until `flush`, which the queue calls when it publishes its used index; it then
/// reads the driver's `used_event` or flags before it interrupts, and since the client handles
/// messages in order, that reply says every write is in guest memory before the guest hears of it.
/// Runs go out in the order they were started, so the used index, written last, lands last.
/// Owned by the datapath thread.
final class MessageStaging: @unchecked Sendable { // One thread's, as its GuestMemory.
    private struct Window {
        /// The queue whose batch read it (its descriptor table's address).
        var queue: UInt64
        var start: UInt64
        var bytes: [UInt8]

        func covers(_ address: UInt64, _ count: Int) -> Bool {
            address >= start && address - start <= UInt64(bytes.count) && bytes.count - Int(address - start) >= count
        }
    }

    let dma: DMASpace
    /// Each queue's windows from its last batch; a queue's next look at its available index drops
    /// them (the driver may rewrite what they hold once it has seen the chains used).
    private var windows: [Window] = []
    /// The indirect table of the chain being read.
    private var indirect: Window?
    /// Bytes written but not sent yet: runs of contiguous bytes, in the order they were started.
    private var held: [(start: UInt64, bytes: [UInt8])] = []
    private static let maxHeld = 64 * 1024
    /// A gap between two ranges read ahead that is read along rather than costing a second round
    /// trip, which takes longer than a few KiB more in one message.
    private static let maxGap = 4096

    init(dma: DMASpace) {
        self.dma = dma
    }

    func read(_ address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(DMAError) {
        try read([(address, buffer)])
    }

    /// Reads several ranges, those not read ahead with their messages all sent at once: a chain's
    /// buffers cost one round trip, not one each.
    func read(_ pieces: [(address: UInt64, buffer: UnsafeMutableRawBufferPointer)]) throws(DMAError) {
        let missing = pieces.filter { !servedFromWindow($0.address, into: $0.buffer) }
        for piece in missing { try flush(overlapping: piece.address, count: piece.buffer.count) }
        try dma.read(missing)
    }

    private func servedFromWindow(_ address: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        if let window = indirect, window.covers(address, buffer.count) {
            copy(window, address, into: buffer)
            return true
        }
        for window in windows where window.covers(address, buffer.count) {
            copy(window, address, into: buffer)
            return true
        }
        return false
    }

    private func copy(_ window: Window, _ address: UInt64, into buffer: UnsafeMutableRawBufferPointer) {
        let offset = Int(address - window.start)
        window.bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset ..< offset + buffer.count])) }
    }

    func write(_ address: UInt64, from data: UnsafeRawBufferPointer) throws(DMAError) {
        guard !data.isEmpty else { return }
        let heldCount = held.reduce(0) { $0 + $1.bytes.count }
        if heldCount + data.count > Self.maxHeld || overlapsHeld(address, data.count) { try flush() }
        guard data.count <= Self.maxHeld else { return try dma.post(address, from: data) }
        if let run = held.firstIndex(where: { $0.start &+ UInt64($0.bytes.count) == address }) {
            held[run].bytes.append(contentsOf: data)
        } else {
            held.append((address, Array(data)))
        }
    }

    /// Sends the writes held.
    func flush() throws(DMAError) {
        defer { held.removeAll(keepingCapacity: true) }
        for run in held {
            let failure: DMAError? = run.bytes.withUnsafeBytes { bytes in
                do throws(DMAError) { try dma.post(run.start, from: bytes); return nil } catch { return error }
            }
            if let failure { throw failure }
        }
    }

    /// Whether `[address, address + count)` touches bytes held (extending a run at its end does not).
    /// Measured as distances from each start, which a range at the top of the address space cannot
    /// overflow.
    private func overlapsHeld(_ address: UInt64, _ count: Int) -> Bool {
        held.contains { address &- $0.start < UInt64($0.bytes.count) || $0.start &- address < UInt64(count) }
    }

    /// Only a read of bytes still held needs them sent first.
    private func flush(overlapping address: UInt64, count: Int) throws(DMAError) {
        if overlapsHeld(address, count) { try flush() }
    }

    /// `[address, address + count)` in one message.
    private func fetch(_ address: UInt64, count: Int) throws(DMAError) -> [UInt8] {
        try flush(overlapping: address, count: count)
        var bytes = [UInt8](repeating: 0, count: count)
        let failure: DMAError? = bytes.withUnsafeMutableBytes { bytes in
            do throws(DMAError) { try dma.read(address, into: bytes); return nil } catch { return error }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Reads the 16-bit values at `indexes` (a ring's index, the driver's interrupt wish), then a
    /// queue's ranges ahead in place of its windows, every message sent before the first reply is
    /// awaited: one round trip. The client answers in order, so the ranges show memory at least as
    /// new as the indexes, as if read once their replies had come. The ranges go in one message
    /// when they lie close together, otherwise one each.
    func prefetch(_ parts: [(address: UInt64, count: Int)], queue: UInt64, behind indexes: [UInt64]) throws(DMAError) -> [UInt16] {
        forget(queue: queue)
        let parts = parts.filter { $0.count > 0 }
        var spans = parts
        if let start = parts.map(\.address).min(), let end = parts.map({ $0.address + UInt64($0.count) }).max(),
           end - start <= UInt64(parts.reduce(0) { $0 + $1.count } + Self.maxGap) {
            spans = [(start, Int(end - start))]
        }
        let ranges = indexes.map { ($0, 2) } + spans
        for (address, count) in ranges { try flush(overlapping: address, count: count) }
        var bytes = [UInt8](repeating: 0, count: ranges.reduce(0) { $0 + $1.1 })
        let failure: DMAError? = bytes.withUnsafeMutableBytes { raw in
            var pieces: [(address: UInt64, buffer: UnsafeMutableRawBufferPointer)] = []
            var offset = 0
            for (address, count) in ranges {
                pieces.append((address, UnsafeMutableRawBufferPointer(rebasing: raw[offset ..< offset + count])))
                offset += count
            }
            do throws(DMAError) { try dma.read(pieces); return nil } catch { return error }
        }
        if let failure { throw failure }
        var offset = 2 * indexes.count
        for span in spans {
            for part in parts where part.address >= span.address && part.address + UInt64(part.count) <= span.address + UInt64(span.count) {
                let start = offset + Int(part.address - span.address)
                windows.append(Window(queue: queue, start: part.address, bytes: Array(bytes[start ..< start + part.count])))
            }
            offset += span.count
        }
        return indexes.indices.map { UInt16(bytes[2 * $0]) | UInt16(bytes[2 * $0 + 1]) << 8 }
    }

    /// Reads an indirect table ahead, in place of the last one.
    func prefetchIndirect(_ address: UInt64, count: Int) throws(DMAError) {
        indirect = nil
        guard count > 0 else { return }
        indirect = Window(queue: 0, start: address, bytes: try fetch(address, count: count))
    }

    /// Drops what a queue's last batch read ahead.
    func forget(queue: UInt64) {
        windows.removeAll { $0.queue == queue }
        indirect = nil
    }
}

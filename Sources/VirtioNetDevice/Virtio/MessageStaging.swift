import RegionEmulation

/// Guest memory reached by DMA messages (a client that maps RAM without fds), in fewer of them.
/// Each read is a round trip through the client, so a queue's parts are read whole once per
/// batch (its descriptor table and the available ring's new entries, an indirect table) and served
/// from those windows. Writes are posted (no reply to wait for) and contiguous ones, such as a
/// batch's used elements, go out as one.
///
/// Writes are held until `flush`, which the queue calls when it publishes its used index; it then
/// reads the driver's `used_event` or flags before it interrupts, and since the client handles
/// messages in order, that reply says every write is in guest memory before the guest hears of it.
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
    /// Bytes written but not sent yet, starting at `heldStart`.
    private var held: [UInt8] = []
    private var heldStart: UInt64 = 0
    private static let maxHeld = 64 * 1024
    /// A gap between two ranges read ahead that is read along rather than costing a second round
    /// trip, which takes longer than a few KiB more in one message.
    private static let maxGap = 4096

    init(dma: DMASpace) {
        self.dma = dma
        held.reserveCapacity(Self.maxHeld)
    }

    func read(_ address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(DMAError) {
        if let window = indirect, window.covers(address, buffer.count) { return copy(window, address, into: buffer) }
        for window in windows where window.covers(address, buffer.count) { return copy(window, address, into: buffer) }
        try flush(overlapping: address, count: buffer.count)
        try dma.read(address, into: buffer)
    }

    private func copy(_ window: Window, _ address: UInt64, into buffer: UnsafeMutableRawBufferPointer) {
        let offset = Int(address - window.start)
        window.bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset ..< offset + buffer.count])) }
    }

    func write(_ address: UInt64, from data: UnsafeRawBufferPointer) throws(DMAError) {
        if !held.isEmpty && address == heldStart &+ UInt64(held.count) && held.count + data.count <= Self.maxHeld {
            held.append(contentsOf: data)
            return
        }
        try flush()
        guard data.count <= Self.maxHeld else { return try dma.post(address, from: data) }
        heldStart = address
        held.append(contentsOf: data)
    }

    /// Sends the writes held.
    func flush() throws(DMAError) {
        guard !held.isEmpty else { return }
        defer { held.removeAll(keepingCapacity: true) }
        let failure: DMAError? = held.withUnsafeBytes { bytes in
            do throws(DMAError) { try dma.post(heldStart, from: bytes); return nil } catch { return error }
        }
        if let failure { throw failure }
    }

    /// Only a read of bytes still held needs them sent first.
    private func flush(overlapping address: UInt64, count: Int) throws(DMAError) {
        if !held.isEmpty && address < heldStart + UInt64(held.count) && heldStart < address + UInt64(count) { try flush() }
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

    /// Reads a queue's ranges ahead, replacing its windows: in one message when they lie close
    /// together, otherwise one each.
    func prefetch(_ parts: [(address: UInt64, count: Int)], queue: UInt64) throws(DMAError) {
        forget(queue: queue)
        let parts = parts.filter { $0.count > 0 }
        guard let start = parts.map(\.address).min(), let end = parts.map({ $0.address + UInt64($0.count) }).max() else { return }
        guard end - start <= UInt64(parts.reduce(0) { $0 + $1.count } + Self.maxGap) else {
            for part in parts { windows.append(Window(queue: queue, start: part.address, bytes: try fetch(part.address, count: part.count))) }
            return
        }
        let span = try fetch(start, count: Int(end - start))
        for part in parts {
            let offset = Int(part.address - start)
            windows.append(Window(queue: queue, start: part.address, bytes: Array(span[offset ..< offset + part.count])))
        }
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

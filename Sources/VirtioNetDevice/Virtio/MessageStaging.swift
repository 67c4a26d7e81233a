import RegionEmulation

/// Guest memory reached by DMA messages (a client that maps RAM without fds), in fewer of them.
/// Each read is a round trip through the client, so a queue's parts are read whole once per
/// batch (the available ring's new entries, the descriptor table, an indirect table) and served
/// from those windows. Writes are posted (no reply to wait for) and contiguous ones, such as a
/// batch's used elements, go out as one.
///
/// Writes are held until `flush`, which the queue calls when it publishes its used index; it then
/// reads the driver's `used_event` or flags before it interrupts, and since the client handles
/// messages in order, that reply says every write is in guest memory before the guest hears of it.
/// Owned by the datapath thread.
final class MessageStaging: @unchecked Sendable { // One thread's, as its GuestMemory.
    private struct Window {
        var start: UInt64
        var bytes: [UInt8]
    }

    let dma: DMASpace
    /// The newest windows, at most `maxWindows`; dropped by `invalidate` (the driver may rewrite
    /// them once it has seen the used elements of the chains they described).
    private var windows: [Window] = []
    private var nextWindow = 0
    private static let maxWindows = 8
    /// Bytes written but not sent yet, starting at `heldStart`.
    private var held: [UInt8] = []
    private var heldStart: UInt64 = 0
    private static let maxHeld = 64 * 1024

    init(dma: DMASpace) {
        self.dma = dma
        held.reserveCapacity(Self.maxHeld)
    }

    func read(_ address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(DMAError) {
        for window in windows where address >= window.start && address - window.start <= UInt64(window.bytes.count)
            && window.bytes.count - Int(address - window.start) >= buffer.count {
            let offset = Int(address - window.start)
            window.bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset ..< offset + buffer.count])) }
            return
        }
        try flush(overlapping: address, count: buffer.count)
        try dma.read(address, into: buffer)
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

    /// Reads `[address, address + count)` in one message; later reads inside it come from here.
    func prefetch(_ address: UInt64, count: Int) throws(DMAError) {
        guard count > 0 else { return }
        try flush(overlapping: address, count: count)
        var bytes = [UInt8](repeating: 0, count: count)
        let failure: DMAError? = bytes.withUnsafeMutableBytes { bytes in
            do throws(DMAError) { try dma.read(address, into: bytes); return nil } catch { return error }
        }
        if let failure { throw failure }
        keep(Window(start: address, bytes: bytes))
    }

    /// Reads several ranges ahead: in one message when they lie close together (gaps of at most
    /// `maxGap` bytes, which are read and dropped: a round trip costs more than a few KiB more in
    /// one), otherwise one each.
    func prefetch(_ parts: [(address: UInt64, count: Int)]) throws(DMAError) {
        let parts = parts.filter { $0.count > 0 }
        guard let start = parts.map(\.address).min(), let end = parts.map({ $0.address + UInt64($0.count) }).max() else { return }
        guard end - start <= UInt64(parts.reduce(0) { $0 + $1.count } + Self.maxGap) else {
            for part in parts { try prefetch(part.address, count: part.count) }
            return
        }
        try prefetch(start, count: Int(end - start))
        let span = windows[nextWindow].bytes
        windows.remove(at: nextWindow)
        for part in parts {
            let offset = Int(part.address - start)
            keep(Window(start: part.address, bytes: Array(span[offset ..< offset + part.count])))
        }
    }
    private static let maxGap = 4096

    /// Adds a window, replacing the oldest once there are `maxWindows`.
    private func keep(_ window: Window) {
        if windows.count < Self.maxWindows {
            windows.append(window)
            nextWindow = windows.count - 1
        } else {
            nextWindow = (nextWindow + 1) % Self.maxWindows
            windows[nextWindow] = window
        }
    }

    func invalidate() { windows.removeAll(keepingCapacity: true) }
}

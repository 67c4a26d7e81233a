import CLinux
import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// The direction of a device access to client memory.
public struct DMAAccess: OptionSet, Sendable {
    /// The bits: 1 read, 2 write.
    public let rawValue: UInt8
    /// An access from its bits.
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// The device reads client memory (needs the mapping's READ flag).
    @inlinable public static var read: DMAAccess { DMAAccess(rawValue: 1) }
    /// The device writes client memory (needs WRITE).
    @inlinable public static var write: DMAAccess { DMAAccess(rawValue: 2) }
}

/// A pinned range: host buffers a device may read or write directly until `release()`.
public final class DMAPin: @unchecked Sendable { // `released` is only touched under the space's lock via release().
    /// The first client (I/O virtual) address pinned.
    public let iova: UInt64
    /// Host memory for the range, one segment per mapping it crosses, in address order.
    public let segments: [UnsafeMutableRawBufferPointer]
    private let mappings: [DMAMapping]
    private weak var space: DMASpace?
    private var released = false

    init(space: DMASpace, iova: UInt64, segments: [UnsafeMutableRawBufferPointer], mappings: [DMAMapping]) {
        self.space = space
        self.iova = iova
        self.segments = segments
        self.mappings = mappings
    }

    /// Bytes pinned in all.
    public var length: Int { segments.reduce(0) { $0 + $1.count } }

    /// Gives the range back; the mapping may then be unmapped. Idempotent.
    public func release() {
        guard !released else { return }
        released = true
        space?.release(mappings)
    }

    deinit { release() }
}

/// A whole mapping pinned for a device thread: valid until `pin.release()`.
public struct PinnedMapping: @unchecked Sendable { // The mapping's mutable state is only touched under the space's lock or atomically.
    /// The pin that keeps the mapping in place.
    public let pin: DMAPin
    let mapping: DMAMapping

    /// The mapping's first client address.
    public var iova: UInt64 { mapping.iova }
    /// The last address mapped (not the end: it may be 2^64).
    public var last: UInt64 { mapping.last }
    /// READ and WRITE as the client mapped it.
    public var flags: DMAMapFlags { mapping.flags }
    /// The host address of `iova` (which must lie in the mapping).
    @inlinable public func host(_ iova: UInt64) -> UnsafeMutableRawPointer { hostBase + Int(iova - self.iova) }
    @usableFromInline var hostBase: UnsafeMutableRawPointer { mapping.host! }
    /// Marks device writes dirty (lock-free).
    public func markDirty(_ iova: UInt64, _ length: Int) { mapping.markDirty(iova, length) }
}

/// How message-mode DMA reaches the client: DMA_READ / DMA_WRITE on its socket.
public protocol DMAMessageChannel: AnyObject, Sendable {
    /// The client's `max_data_xfer_size`: the largest count one message may carry.
    var maxTransferSize: Int { get }
    /// Reads several ranges (each at most `maxTransferSize` bytes) with one DMA_READ each, all sent
    /// before the first reply is awaited: the client answers them in one pass, not one wake-up each.
    func read(_ pieces: [(address: UInt64, buffer: UnsafeMutableRawBufferPointer)]) throws(DMAError)
    /// Writes client memory with one DMA_WRITE (at most `maxTransferSize` bytes).
    func write(_ address: UInt64, from data: UnsafeRawBufferPointer) throws(DMAError)
    /// Writes client memory with one DMA_WRITE that asks for no reply: done once the reply to a
    /// later request on the same socket has come (the client handles messages in order).
    func post(_ address: UInt64, from data: UnsafeRawBufferPointer) throws(DMAError)
    /// Waits until `condition` holds. On the thread that reads the client's socket this keeps
    /// routing replies to DMA messages, so a device thread blocked on one can finish. False on timeout.
    func waitServicing(until condition: () -> Bool, milliseconds: Int) -> Bool
}

extension DMASpace {
    /// Waits until `condition` holds, for a device that must let its own threads reach a safe point
    /// (a reset, an unmap) while they may be waiting on message-mode DMA. Safe on any thread.
    public func waitServicing(until condition: () -> Bool, milliseconds: Int = 10_000) -> Bool {
        if let channel = lock.withLock({ channel }) {
            return channel.waitServicing(until: condition, milliseconds: milliseconds)
        }
        return pollUntil(condition, milliseconds: milliseconds)
    }
}

/// Polls `condition` every 100 µs until it holds or `milliseconds` pass.
public func pollUntil(_ condition: () -> Bool, milliseconds: Int) -> Bool {
    let deadline = monotonicNanoseconds() + UInt64(milliseconds) * 1_000_000
    while !condition() {
        guard monotonicNanoseconds() < deadline else { return false }
        usleep(100)
    }
    return true
}

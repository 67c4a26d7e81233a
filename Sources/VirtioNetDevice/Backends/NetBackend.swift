/// What became of a frame handed to a backend.
public enum NetSendOutcome: Sendable {
    case sent
    /// Lost for good (no peer, a frame the backend refuses), as a NIC drops on a dead link.
    case dropped
    /// The backend cannot take it now (its queue is full). The datapath leaves the frame in the
    /// transmit ring and waits for `pollDescriptor` to become writable, as QEMU's net layer holds a
    /// virtqueue while a TAP's queue is full: backpressure instead of loss.
    case full
}

/// Where a virtio-net device's frames go and come from.
///
/// The datapath thread is the only caller of `send` and `receive`; both never block (the backend's
/// fd is non-blocking, and the datapath polls `pollDescriptor`).
public protocol NetBackend: AnyObject, Sendable {
    /// A human-readable description ("tap vnet0", "datagram /run/a.sock -> /run/b.sock").
    var description: String { get }
    /// The fd to poll for incoming frames; nil for a backend that always has one (a source).
    var pollDescriptor: CInt? { get }
    /// Frames carry the 12-byte virtio-net header in both directions (TAP with IFF_VNET_HDR), so
    /// checksum and segmentation offloads pass straight through.
    var carriesVirtioHeader: Bool { get }
    /// The offload features (HOST_* and GUEST_*) this backend can honour.
    var offloads: VirtioFeatures { get }
    /// The guest's receive offloads were negotiated (TUNSETOFFLOAD for a TAP).
    func setGuestOffloads(_ negotiated: VirtioFeatures)
    /// Sends one frame (with the header when `carriesVirtioHeader`).
    func send(_ frame: UnsafeRawBufferPointer) -> NetSendOutcome
    /// Receives one frame into `buffer` (with the header when `carriesVirtioHeader`); nil when none
    /// is waiting.
    func receive(into buffer: UnsafeMutableRawBufferPointer) -> Int?
}

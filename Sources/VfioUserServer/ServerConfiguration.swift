import Support
import SystemPackage
import VfioUserProto

/// What the server advertises in its VERSION reply and how it serves.
public struct ServerConfiguration: Sendable {
    /// fds the server accepts in one message. QEMU caps the value at 16 and, with fewer, splits
    /// MSI-X eventfd lists into more SET_IRQS messages (hw/vfio-user/proxy.c: a server value above 16 is refused, none means 8).
    public var maxMessageFDs = 16
    /// Largest `count` of a region or DMA read/write (the spec's default, 1 MiB).
    public var maxDataTransferSize = 1 << 20
    /// Page sizes the DMA space supports: 4 KiB.
    public var pageSizes: UInt64 = 4096
    /// DMA mappings the server holds at most (the spec's default, which QEMU also uses).
    public var maxDMAMaps = 65535
    /// Offer REGION_WRITE_MULTI (15) to clients that propose `write_multiple`.
    public var writeMultiple = true
    /// The highest minor version this server speaks (VERSION replies min(client's, this)).
    public var minorVersion: UInt16 = 2
    /// Which DMA_READ/DMA_WRITE layout to use; `nil` asks each client with a probe (see `SessionDMAChannel`).
    public var dmaLayout: DMATransferLayout?
    /// Print one line per message in both directions.
    public var trace = false
    /// How long a session spins on its socket before it sleeps (see `PollPolicy`): a guest's
    /// trapped accesses come back faster when the server is awake for them, and an idle session
    /// closes its window and sleeps.
    public var poll = PollPolicy.adaptive
    /// How long a server→client DMA message waits for its reply (QEMU's own default is 5 s).
    public var dmaReplyTimeoutMilliseconds = 5000
    /// Mode, owner and group of the socket files (instances' and the control socket): whoever can
    /// connect drives the device or manages instances, so only the owner by default.
    public var socketAccess = SocketAccess()

    public init() {}

    /// Largest message the server accepts: a full data transfer plus the biggest fixed part.
    public var maxMessageSize: Int { MessageHeader.size + 32 + maxDataTransferSize }
}

import Support
import Synchronization
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// A virtual cable made of two UNIX datagram sockets: frames sent go to `peer`'s path, frames to
/// `local`'s path come in. Two instances with crossed paths are connected without root or any
/// network device. Frames carry no virtio header (no offloads).
public final class DatagramBackend: NetBackend {
    public let localPath: String
    public let peerPath: String
    private let fd: OwnedFileDescriptor
    private let peer: sockaddr_un
    /// Whether `fd` is connected to the peer's socket (only the datapath thread sends).
    private let connected = Atomic<Bool>(false)

    public init(local: String, peer: String) throws(Errno) {
        let raw = socket(AF_UNIX, CInt(SOCK_DGRAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard raw >= 0 else { throw Errno(rawValue: errno) }
        fd = OwnedFileDescriptor(taking: FileDescriptor(rawValue: raw))
        unlink(local)
        var address = try Self.address(local)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(raw, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw Errno(rawValue: errno) }
        // Room for bursts: a few hundred full-size frames either way.
        var size: CInt = 4 << 20
        setsockopt(raw, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<CInt>.size))
        setsockopt(raw, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<CInt>.size))
        localPath = local
        peerPath = peer
        self.peer = try Self.address(peer)
    }

    deinit { unlink(localPath) }

    private static func address(_ path: String) throws(Errno) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw .fileNameTooLong }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }

    public var description: String { "datagram \(localPath) -> \(peerPath)" }
    public var pollDescriptor: CInt? { fd.rawValue }
    public var carriesVirtioHeader: Bool { false }
    public var offloads: VirtioFeatures { [] }
    public func setGuestOffloads(_ negotiated: VirtioFeatures) {}

    /// A frame goes to the peer's socket, connected on first use: connected, a full peer queue
    /// reads as `.full` and polls as not writable until the peer takes frames (an unconnected
    /// datagram socket would poll writable all along). No peer (not there yet, or gone) drops the
    /// frame, as an unplugged cable would; the next frame tries to connect again. (A peer that was
    /// replaced by a new socket on the same path gets its frames refused by the kernel until this
    /// side sends one, finds the old peer gone and connects to the new.)
    public func send(_ frame: UnsafeRawBufferPointer) -> NetSendOutcome {
        if !connected.load(ordering: .relaxed) {
            var peer = self.peer
            let result = withUnsafePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd.rawValue, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard result == 0 else { return .dropped }
            connected.store(true, ordering: .relaxed)
        }
        if Glibc.send(fd.rawValue, frame.baseAddress, frame.count, CInt(MSG_NOSIGNAL)) == frame.count { return .sent }
        switch errno {
        case EAGAIN: return .full
        case ECONNREFUSED, ENOTCONN:
            connected.store(false, ordering: .relaxed) // the peer went away; a new one may bind the path
            return .dropped
        default: return .dropped
        }
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        let n = recv(fd.rawValue, buffer.baseAddress, buffer.count, CInt(MSG_DONTWAIT))
        return n > 0 ? n : nil
    }
}

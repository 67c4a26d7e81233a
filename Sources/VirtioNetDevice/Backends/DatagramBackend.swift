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

    public func send(_ frame: UnsafeRawBufferPointer) -> Bool {
        var peer = self.peer
        let sent = withUnsafePointer(to: &peer) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd.rawValue, frame.baseAddress, frame.count, CInt(MSG_NOSIGNAL), $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return sent == frame.count // a missing peer or a full queue drops the frame, as a cable would
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        let n = recv(fd.rawValue, buffer.baseAddress, buffer.count, CInt(MSG_DONTWAIT))
        return n > 0 ? n : nil
    }
}

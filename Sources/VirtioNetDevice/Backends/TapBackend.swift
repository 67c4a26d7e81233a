import CLinux
import Support
import Synchronization
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// A Linux TAP interface opened with IFF_VNET_HDR: frames carry the virtio-net header, so the
/// guest's checksum and TSO offloads go to the host kernel as they are (and come back).
public final class TapBackend: NetBackend {
    public let name: String
    private let fd: OwnedFileDescriptor
    public let offloads: VirtioFeatures = [.netChecksum, .netGuestChecksum, .netHostTSO4, .netHostTSO6, .netHostECN,
                                           .netGuestTSO4, .netGuestTSO6, .netGuestECN]

    /// Opens (creating it if needed) the TAP interface `name` in the current network namespace.
    public convenience init(name: String) throws(Errno) {
        try self.init(fd: Self.open(name: name), name: name)
    }

    /// A TAP opened elsewhere (by `open(name:)` in a process allowed to): EINVAL if `fd` is not a
    /// TAP with a virtio-net header.
    public init(fd: OwnedFileDescriptor, name: String) throws(Errno) {
        guard clinux_is_vnet_tap(fd.rawValue) == 1 else { throw .invalidArgument }
        self.fd = fd
        self.name = name
        _ = clinux_tap_set_offload(fd.rawValue, 0)
    }

    /// Opens the TAP `name` (creating it if needed; needs CAP_NET_ADMIN), non-blocking, with the
    /// virtio-net header.
    public static func open(name: String) throws(Errno) -> OwnedFileDescriptor {
        let raw = Glibc.open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)
        guard raw >= 0 else { throw Errno(rawValue: errno) }
        let fd = OwnedFileDescriptor(taking: FileDescriptor(rawValue: raw))
        guard clinux_tap_attach(raw, name) == 0 else { throw Errno(rawValue: errno) }
        return fd
    }

    public var description: String { "tap \(name)" }
    public var pollDescriptor: CInt? { fd.rawValue }
    public var carriesVirtioHeader: Bool { true }

    public func setGuestOffloads(_ negotiated: VirtioFeatures) {
        var flags: UInt32 = 0
        if negotiated.contains(.netGuestChecksum) {
            flags |= clinux_tun_f_csum()
            if negotiated.contains(.netGuestTSO4) { flags |= clinux_tun_f_tso4() }
            if negotiated.contains(.netGuestTSO6) { flags |= clinux_tun_f_tso6() }
            if negotiated.contains(.netGuestECN) { flags |= clinux_tun_f_tso_ecn() }
        }
        _ = clinux_tap_set_offload(fd.rawValue, flags)
    }

    public func send(_ frame: UnsafeRawBufferPointer) -> NetSendOutcome {
        if Glibc.write(fd.rawValue, frame.baseAddress, frame.count) == frame.count { return .sent }
        return errno == EAGAIN ? .full : .dropped
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        let n = Glibc.read(fd.rawValue, buffer.baseAddress, buffer.count)
        return n > 0 ? n : nil
    }
}

import RegionEmulation
import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

extension VirtioNetDevice {
    /// How many NICs a server makes unless configured otherwise (the pool "virtio-net").
    public static let defaultInstanceLimit = 64

    /// The parameters an instance takes; exactly one backend (tap, datagram or backend=) is needed.
    public static let parameters: [String: String] = [
        "tap": "TAP interface to attach (created if missing; offloads pass through)",
        "tap-fd": "an open TAP's fd number, inherited (as QEMU's tap,fd=); how an isolated server hands a worker its TAP",
        "datagram": "LOCAL,PEER: UNIX datagram cable to another instance (no root needed)",
        "backend": "sink: drop every frame; source: an endless stream of frames (benchmarks)",
        "frame-size": "source: the size of its frames in bytes (default 64)",
        "mac": "station address, xx:xx:xx:xx:xx:xx (default: derived from the instance UUID)",
        "queue-size": "largest ring the driver may set up, a power of two (default 256)",
        "msix": "on (default) or off: INTx interrupts only, for QEMU releases that abort when a device with MSI-X is hot-unplugged",
    ]

    /// The virtio-net type: its own pool, `limit` instances at most.
    public static func mediatedType(limit: Int = defaultInstanceLimit) -> MediatedDeviceType {
        MediatedDeviceType(
            id: "virtio-net", name: "virtio-net NIC",
            description: "virtio 1.x network card 1af4:1041 on the modern PCI transport with MSI-X, backed by a TAP, a datagram cable, a sink or a source",
            pool: ResourcePool(name: "virtio-net", capacity: limit), parameters: parameters,
            handOver: { parameters throws(DeviceCreationError) in
                guard let tap = parameters["tap"], parameters["tap-fd"] == nil else { return [:] }
                return ["tap-fd": try openTap(tap)]
            }
        ) { request throws(DeviceCreationError) in try make(request) }
    }

    static func openTap(_ name: String) throws(DeviceCreationError) -> OwnedFileDescriptor {
        do throws(Errno) { return try TapBackend.open(name: name) } catch {
            let hint = error == .permissionDenied || error == .notPermitted ? " (root, or CAP_NET_ADMIN, is needed)" : ""
            throw DeviceCreationError("cannot open TAP \(name): \(error.name)\(hint)", errno: Self.resourceErrno(error))
        }
    }

    /// Builds a NIC from an instance's parameters (see `parameters`).
    public static func make(_ request: MediatedDeviceRequest) throws(DeviceCreationError) -> VirtioNetDevice {
        let parameters = request.parameters
        let mac = try parameters["mac"].map(parseMAC) ?? mac(derivedFrom: request.uuid)
        var queueSize: UInt16 = 256
        if let text = parameters["queue-size"] {
            guard let size = UInt16(text), size.nonzeroBitCount == 1 else {
                throw DeviceCreationError("queue-size must be a power of two up to 32768, not '\(text)'")
            }
            queueSize = size
        }
        let msix = parameters["msix"] ?? "on"
        guard msix == "on" || msix == "off" else { throw DeviceCreationError("msix must be on or off, not '\(msix)'") }
        let backends = ["tap", "datagram", "backend"].filter { parameters[$0] != nil || ($0 == "tap" && parameters["tap-fd"] != nil) }
        guard backends.count == 1 else {
            throw DeviceCreationError("virtio-net needs exactly one backend: tap=NAME (or tap-fd=N), datagram=LOCAL,PEER, backend=sink or backend=source")
        }
        let backend: NetBackend
        if let text = parameters["tap-fd"] {
            // A copy: the fd stays its owner's, and a number that is no TAP is refused as such.
            guard let number = CInt(text), number >= 0, case let copy = fcntl(number, F_DUPFD_CLOEXEC, 0), copy >= 0 else {
                throw DeviceCreationError("tap-fd=\(text) is not an open fd")
            }
            do throws(Errno) { backend = try TapBackend(fd: OwnedFileDescriptor(taking: FileDescriptor(rawValue: copy)), name: parameters["tap"] ?? "fd \(text)") } catch {
                throw DeviceCreationError("tap-fd=\(text) is not a TAP with a virtio-net header")
            }
        } else if let tap = parameters["tap"] {
            let fd = try openTap(tap)
            do throws(Errno) { backend = try TapBackend(fd: fd, name: tap) } catch {
                throw DeviceCreationError("cannot use TAP \(tap): \(error.name)")
            }
        } else if let cable = parameters["datagram"] {
            let ends = cable.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard ends.count == 2, !ends[0].isEmpty, !ends[1].isEmpty else { throw DeviceCreationError("datagram=LOCAL,PEER") }
            do throws(Errno) { backend = try DatagramBackend(local: ends[0], peer: ends[1]) } catch {
                throw DeviceCreationError("cannot bind \(ends[0]): \(error.name)", errno: Self.resourceErrno(error))
            }
        } else if parameters["backend"] == "sink" {
            backend = SinkBackend()
        } else if parameters["backend"] == "source" {
            guard let size = Int(parameters["frame-size"] ?? "64"), (14...65535).contains(size) else {
                throw DeviceCreationError("frame-size must be 14 to 65535")
            }
            backend = SourceBackend(frameSize: size, destination: mac)
        } else {
            throw DeviceCreationError("backend must be sink or source, not '\(parameters["backend"] ?? "")'")
        }
        return try VirtioNetDevice(backend: backend, mac: mac, queueSize: queueSize, msix: msix == "on")
    }

    /// A backend's failure as the request's errno: running out of fds or memory says so; anything
    /// else is a parameter that does not work here (EINVAL).
    static func resourceErrno(_ error: Errno) -> Errno {
        [.tooManyOpenFiles, .tooManyOpenFilesInSystem, .noMemory, .resourceTemporarilyUnavailable].contains(error) ? error : .invalidArgument
    }

    /// "52:54:00:12:34:56" → six bytes.
    public static func parseMAC(_ text: String) throws(DeviceCreationError) -> [UInt8] {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let bytes = parts.compactMap { $0.count == 2 ? UInt8($0, radix: 16) : nil }
        guard parts.count == 6, bytes.count == 6 else { throw DeviceCreationError("bad MAC address '\(text)'") }
        return bytes
    }
}

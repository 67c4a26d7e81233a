import MttyDevice
import RegionEmulation
import SystemPackage
import VfioUserProto
import VirtioNetDevice

/// The device types this executable can serve, and how each is made from `key=value` parameters.
enum DeviceCatalog {
    struct Entry: Sendable {
        let name: String
        let summary: String
        /// Parameters the type understands, for --help and validation.
        let parameters: [String: String]
        let make: @Sendable (_ parameters: [String: String], _ instanceName: String) throws -> DeviceModel
    }

    struct ParameterError: Error, CustomStringConvertible {
        let description: String
    }

    static let entries: [Entry] = [
        Entry(name: "mtty-1", summary: "Single port serial (the kernel's mtty sample, one 16550A)", parameters: [:]) { _, _ in
            MttyDevice(ports: 1)
        },
        Entry(name: "mtty-2", summary: "Dual port serial (the kernel's mtty sample, two 16550A)", parameters: [:]) { _, _ in
            MttyDevice(ports: 2)
        },
        Entry(name: "virtio-net", summary: "virtio-net NIC (modern virtio-pci, MSI-X)", parameters: [
            "tap": "TAP interface to attach (created if missing; offloads pass through)",
            "datagram": "LOCAL,PEER: UNIX datagram cable to another instance (no root needed)",
            "backend": "sink: drop every frame; source: an endless stream of frames (benchmarks)",
            "frame-size": "source: the size of its frames in bytes (default 64)",
            "mac": "station address, xx:xx:xx:xx:xx:xx (default: derived from the instance name)",
            "queue-size": "largest ring the driver may set up (default 256)",
        ]) { parameters, instanceName in
            let mac = try parameters["mac"].map(parseMAC) ?? VirtioNetDevice.mac(derivedFrom: instanceName)
            let queueSize = try parameters["queue-size"].map { value -> UInt16 in
                guard let size = UInt16(value), size.nonzeroBitCount == 1 else { throw ParameterError(description: "queue-size must be a power of two") }
                return size
            } ?? 256
            let backend: NetBackend
            if let tap = parameters["tap"] {
                do throws(Errno) { backend = try TapBackend(name: tap) } catch {
                    throw ParameterError(description: "cannot open TAP \(tap): \(error.name) (root, or CAP_NET_ADMIN, is needed)")
                }
            } else if let cable = parameters["datagram"] {
                let ends = cable.split(separator: ",").map(String.init)
                guard ends.count == 2 else { throw ParameterError(description: "datagram=LOCAL,PEER") }
                do throws(Errno) { backend = try DatagramBackend(local: ends[0], peer: ends[1]) } catch {
                    throw ParameterError(description: "cannot bind \(ends[0]): \(error.name)")
                }
            } else if parameters["backend"] == "sink" {
                backend = SinkBackend()
            } else if parameters["backend"] == "source" {
                guard let size = Int(parameters["frame-size"] ?? "64"), (14...65535).contains(size) else {
                    throw ParameterError(description: "frame-size must be 14 to 65535")
                }
                backend = SourceBackend(frameSize: size, destination: mac)
            } else {
                throw ParameterError(description: "virtio-net needs a backend: tap=NAME, datagram=LOCAL,PEER, backend=sink or backend=source")
            }
            return VirtioNetDevice(backend: backend, mac: mac, queueSize: queueSize)
        },
    ]

    static func entry(_ name: String) -> Entry? { entries.first { $0.name == name } }
    static var names: [String] { entries.map(\.name) }

    static func parseMAC(_ text: String) throws -> [UInt8] {
        let bytes = text.split(separator: ":").compactMap { UInt8($0, radix: 16) }
        guard bytes.count == 6, text.split(separator: ":").count == 6 else { throw ParameterError(description: "bad MAC address \(text)") }
        return bytes
    }
}

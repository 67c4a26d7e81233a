import ArgumentParser
import MbochsDevice
import MttyDevice
import RegionEmulation
import VirtioNetDevice
#if canImport(Glibc)
import Glibc
#endif

/// The mediated device types this executable serves, as their device models register them.
enum DeviceTypes {
    static let all: [MediatedDeviceType] = MttyDevice.mediatedTypes() + [VirtioNetDevice.mediatedType()] + MbochsDevice.mediatedTypes()
    static var ids: [String] { all.map(\.id) }
}

/// Where sockets go when no option says otherwise.
enum DefaultPaths {
    /// $XDG_RUNTIME_DIR, or /tmp.
    static var runtimeDirectory: String { getenv("XDG_RUNTIME_DIR").map { String(cString: $0) } ?? "/tmp" }
    /// Instances made by `start` or the config file listen here, as `<uuid>.sock`.
    static var socketDirectory: String { "\(runtimeDirectory)/vfio-user-swift" }
    /// The control socket the management subcommands talk to.
    static var controlSocket: String { "\(socketDirectory)/control.sock" }
    /// The device a bare `vfio-user-server` serves.
    static func deviceSocket(type: String) -> String { "\(runtimeDirectory)/vfio-user-\(type).sock" }

    /// How QEMU attaches a socket: the -device argument.
    static func qemuDevice(socket: String) -> String {
        #"{"driver":"vfio-user-pci","socket":{"type":"unix","path":"\#(socket)"}}"#
    }
}

/// `--param KEY=VALUE` options, as the serve and start subcommands take them.
enum ParameterOptions {
    static func validate(_ options: [String]) throws(ValidationError) {
        for option in options where !option.contains("=") || option.hasPrefix("=") {
            throw ValidationError("--param takes KEY=VALUE, not '\(option)'")
        }
    }

    /// KEY=VALUE strings as a dictionary (a repeated key keeps its last value).
    static func dictionary(_ options: [String]) -> [String: String] {
        var result: [String: String] = [:]
        for option in options {
            let parts = option.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            result[parts[0]] = parts.count > 1 ? parts[1] : ""
        }
        return result
    }
}

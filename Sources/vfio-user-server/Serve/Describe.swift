import ArgumentParser
import Support
import VfioUserProto
import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

/// The spec's backend program conventions ask a server to describe itself in JSON for management
/// tools (as vhost-user backends do): what it is, where its binary is, how it is started, and here
/// also the device types it offers.
struct Describe: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a JSON description of this program for management tools.",
        discussion: "Install it with: vfio-user-server describe > /usr/share/vfio-user/50-vfio-user-swift.json")

    func run() {
        let binary = executablePath()
        let types: [JSONValue] = DeviceTypes.all.map { type in
            ["id": .string(type.id), "name": .string(type.name), "description": .string(type.description),
             "device_api": .string(type.deviceAPI)]
        }
        let description: JSONValue = [
            "description": "vfio-user server emulating mediated PCI devices (mtty serial cards, virtio-net NICs)",
            "type": "vfio-user-server",
            "binary": .string(binary),
            "protocol": "vfio-user 0.2",
            "options": ["--socket-path", "--fd", "--type", "--config", "--control"],
            "types": .array(types),
        ]
        print(description.text)
    }
}

import MttyDevice
import RegionEmulation

/// The device types this executable can serve.
enum DeviceCatalog {
    struct Entry: Sendable {
        let name: String
        let summary: String
        let make: @Sendable () -> DeviceModel
    }

    static let entries: [Entry] = [
        Entry(name: "mtty-1", summary: "Single port serial (the kernel's mtty sample, one 16550A)") { MttyDevice(ports: 1) },
        Entry(name: "mtty-2", summary: "Dual port serial (the kernel's mtty sample, two 16550A)") { MttyDevice(ports: 2) },
    ]

    static func entry(_ name: String) -> Entry? { entries.first { $0.name == name } }
    static var names: [String] { entries.map(\.name) }
}

import RegionEmulation

extension MttyDevice {
    /// The sample's port pool, MAX_MTTYS = 24 (samples/vfio-mdev/mtty.c): shared by both types, so a fresh
    /// server offers 24 mtty-1 or 12 mtty-2, and every instance of either lowers both counts.
    public static let portPool = ResourcePool(name: "mtty-ports", capacity: 24)

    /// The sample's two types, named as its `mdev_supported_types` directories and `name` files.
    public static func mediatedTypes(pool: ResourcePool = portPool) -> [MediatedDeviceType] {
        [(1, "Single port serial"), (2, "Dual port serial")].map { ports, name in
            MediatedDeviceType(
                id: "mtty-\(ports)", name: name,
                description: "PCI serial card 4348:3253 with \(ports == 1 ? "one 16550A UART" : "two 16550A UARTs") in loopback (the kernel's mtty sample)",
                pool: pool, cost: ports
            ) { _ throws(DeviceCreationError) in MttyDevice(ports: ports) }
        }
    }
}

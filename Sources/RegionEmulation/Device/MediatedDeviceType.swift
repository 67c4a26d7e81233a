import SystemPackage

/// What a parent device has a limited amount of, shared by the types that draw from it: the mtty
/// sample's 24 ports (an mtty-1 takes one, an mtty-2 two), or a cap on virtio-net NICs.
public struct ResourcePool: Sendable, Hashable {
    public let name: String
    public let capacity: Int

    public init(name: String, capacity: Int) {
        self.name = name
        self.capacity = capacity
    }
}

/// A mediated device type as the kernel's mdev core presents it under `mdev_supported_types/`
/// (vfio-mediated-device.rst): the type id (the directory name), `name`, `description`,
/// `device_api`, and `available_instances`, which the core derives from the pool and `cost`
/// (see `InstanceManager`).
///
/// The device model registers the type; the server core creates instances from it. `make` is the
/// vendor driver's create(): it gets the instance's parameters and returns a model that knows
/// nothing of sockets.
public struct MediatedDeviceType: Sendable {
    /// The type id, e.g. "mtty-2".
    public let id: String
    /// The human-readable `name` attribute, e.g. "Dual port serial".
    public let name: String
    public let description: String
    /// The `device_api` attribute: "vfio-pci" for every PCI type.
    public let deviceAPI: String
    public let pool: ResourcePool
    /// Units of `pool` one instance takes.
    public let cost: Int
    /// The parameters an instance accepts (key → what it means), for validation and `types`.
    public let parameters: [String: String]
    public let make: @Sendable (MediatedDeviceRequest) throws(DeviceCreationError) -> DeviceModel

    public init(id: String, name: String, description: String, deviceAPI: String = "vfio-pci", pool: ResourcePool,
                cost: Int = 1, parameters: [String: String] = [:],
                make: @escaping @Sendable (MediatedDeviceRequest) throws(DeviceCreationError) -> DeviceModel) {
        self.id = id
        self.name = name
        self.description = description
        self.deviceAPI = deviceAPI
        self.pool = pool
        self.cost = cost
        self.parameters = parameters
        self.make = make
    }
}

/// What the core hands a type's `make`: the instance's UUID (canonical text) and its parameters,
/// already checked against the type's `parameters` keys.
public struct MediatedDeviceRequest: Sendable {
    public let uuid: String
    public let parameters: [String: String]

    public init(uuid: String, parameters: [String: String]) {
        self.uuid = uuid
        self.parameters = parameters
    }
}

/// Why a device model could not be created: a bad parameter (EINVAL, the default), or something
/// the system ran out of (EMFILE for fds, EAGAIN for threads). The core answers with this errno
/// and message.
public struct DeviceCreationError: Error, CustomStringConvertible, Sendable {
    public let errno: Errno
    public let description: String
    public init(_ description: String, errno: Errno = .invalidArgument) {
        self.errno = errno
        self.description = description
    }
}

import Support
import SystemPackage

/// What a parent device has a limited amount of, shared by the types that draw from it: the mtty
/// sample's 24 ports (an mtty-1 takes one, an mtty-2 two), or a cap on virtio-net NICs.
public struct ResourcePool: Sendable, Hashable {
    /// The pool's name, shown by `types`.
    public let name: String
    /// Units in the pool.
    public let capacity: Int

    /// A pool of `capacity` units.
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
/// nothing of sockets. The type (and its pool) is declared here, beside the model protocol, rather
/// than in the server core that keeps the instances: a model module states its own types, as a
/// vendor driver does its `mdev_type`s, and must not import the core, which holds the sockets.
public struct MediatedDeviceType: Sendable {
    /// The type id, e.g. "mtty-2".
    public let id: String
    /// The human-readable `name` attribute, e.g. "Dual port serial".
    public let name: String
    /// The `description` attribute: what an instance offers.
    public let description: String
    /// The `device_api` attribute: "vfio-pci" for every PCI type.
    public let deviceAPI: String
    /// The pool instances of this type draw from.
    public let pool: ResourcePool
    /// Units of `pool` one instance takes.
    public let cost: Int
    /// The parameters an instance accepts (key → what it means), for validation and `types`.
    public let parameters: [String: String]
    /// Creates an instance's model: the vendor driver's create().
    public let make: @Sendable (MediatedDeviceRequest) throws(DeviceCreationError) -> DeviceModel
    /// What a server must open for an instance that is made in a worker process, which may not:
    /// given the instance's parameters, the fds to hand over, each under the parameter that will
    /// carry its number in the worker (virtio-net opens a TAP, which needs CAP_NET_ADMIN).
    public let handOver: (@Sendable ([String: String]) throws(DeviceCreationError) -> [String: OwnedFileDescriptor])?

    /// A type; `cost` units of `pool` per instance.
    public init(id: String, name: String, description: String, deviceAPI: String = "vfio-pci", pool: ResourcePool,
                cost: Int = 1, parameters: [String: String] = [:],
                handOver: (@Sendable ([String: String]) throws(DeviceCreationError) -> [String: OwnedFileDescriptor])? = nil,
                make: @escaping @Sendable (MediatedDeviceRequest) throws(DeviceCreationError) -> DeviceModel) {
        self.id = id
        self.name = name
        self.description = description
        self.deviceAPI = deviceAPI
        self.pool = pool
        self.cost = cost
        self.parameters = parameters
        self.make = make
        self.handOver = handOver
    }
}

/// What the core hands a type's `make`: the instance's UUID (canonical text) and its parameters,
/// already checked against the type's `parameters` keys.
public struct MediatedDeviceRequest: Sendable {
    /// The instance's UUID, lower-case canonical text.
    public let uuid: String
    /// Parameters given at creation (`--param key=value`, or the configuration file).
    public let parameters: [String: String]

    /// A request for one instance.
    public init(uuid: String, parameters: [String: String]) {
        self.uuid = uuid
        self.parameters = parameters
    }
}

/// Why a device model could not be created: a bad parameter (EINVAL, the default), or something
/// the system ran out of (EMFILE for fds, EAGAIN for threads). The core answers with this errno
/// and message.
public struct DeviceCreationError: Error, CustomStringConvertible, Sendable {
    /// The errno the management reply carries.
    public let errno: Errno
    /// What went wrong, for the operator.
    public let description: String
    /// A failure with its errno (EINVAL unless said otherwise).
    public init(_ description: String, errno: Errno = .invalidArgument) {
        self.errno = errno
        self.description = description
    }
}

import RegionEmulation
import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// One mediated device: a device model made from its type, served on a socket of its own by a
/// `DeviceEndpoint` (which opens it when a client attaches and releases it when the client leaves),
/// in this process or in a worker process of its own.
public final class MediatedDeviceInstance: Sendable {
    public let uuid: MdevUUID
    public let type: MediatedDeviceType
    public let parameters: [String: String]
    /// The endpoint serving it in this process; nil for an isolated instance.
    public let endpoint: DeviceEndpoint?
    /// The process serving it when isolated.
    public let worker: WorkerProcess?
    /// The socket file; nil for an instance on an inherited fd.
    public let socketPath: String?
    public let origin: Origin

    /// Where an instance was asked for, shown by `list`.
    public enum Origin: String, Sendable {
        /// `--type` on the command line.
        case commandLine = "command-line"
        /// A device of the `--config` file (a persistent definition, started with the server).
        case configFile = "config-file"
        /// A `start` request on the control socket.
        case controlSocket = "control-socket"
    }

    init(uuid: MdevUUID, type: MediatedDeviceType, parameters: [String: String], endpoint: DeviceEndpoint, origin: Origin) {
        self.uuid = uuid
        self.type = type
        self.parameters = parameters
        self.endpoint = endpoint
        worker = nil
        socketPath = endpoint.socketPath
        self.origin = origin
    }

    init(uuid: MdevUUID, type: MediatedDeviceType, parameters: [String: String], worker: WorkerProcess, socketPath: String?, origin: Origin) {
        self.uuid = uuid
        self.type = type
        self.parameters = parameters
        endpoint = nil
        self.worker = worker
        self.socketPath = socketPath
        self.origin = origin
    }

    /// The device when it is served in this process.
    public var device: EmulatedDevice? { endpoint?.device }
}

/// A snapshot of an instance for `list`.
public struct InstanceStatus: Sendable, Equatable {
    public enum State: String, Sendable {
        /// The model and socket are being made.
        case creating
        /// Ready, no client attached.
        case idle
        /// A client is attached.
        case attached
        /// Being removed: new clients are refused.
        case removing
        /// Its worker process died (`failure` says how); `restart` serves it again.
        case failed
    }

    public var uuid: MdevUUID
    public var type: String
    public var state: State
    public var socketPath: String?
    public var parameters: [String: String]
    public var origin: MediatedDeviceInstance.Origin?
    /// Clients served so far (by its current worker, when isolated).
    public var sessions: Int
    /// The worker process serving it, when isolated.
    public var pid: pid_t? = nil
    /// How its worker ended, when `failed`.
    public var failure: String? = nil
}

/// A snapshot of a type for `types`: the sysfs attributes of its `mdev_supported_types/` directory.
public struct TypeStatus: Sendable, Equatable {
    public var id: String
    public var name: String
    public var description: String
    public var deviceAPI: String
    public var availableInstances: Int
    public var pool: String
    public var poolCapacity: Int
    public var cost: Int
    public var parameters: [String: String]
}

/// What became of an attached client when its instance was removed.
public enum RemovalOutcome: String, Sendable {
    /// No client was attached.
    case noClient = "no-client"
    /// The client let go after the REQ interrupt.
    case released
    /// The client did not let go in time (or had no REQ eventfd): the connection was closed.
    case disconnected
}

/// Why a management request failed: the errno a control-socket reply carries, and a message for
/// the person who made the request.
public struct ManagementError: ErrnoConvertible, CustomStringConvertible, Equatable {
    public let errno: Errno
    public let message: String

    public init(_ errno: Errno, _ message: String) {
        self.errno = errno
        self.message = message
    }

    public var description: String { "\(errno.name): \(message)" }
}

import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// How instances are served: by threads of the server process, or each by a worker process of its
/// own, so that a fault one guest or client provokes stays in its own device.
public enum Isolation: Sendable, Equatable {
    case none
    case process(WorkerLaunch)
}

/// How the manager starts a worker: the server executable again, with the worker's spec.
public struct WorkerLaunch: Sendable, Equatable {
    /// The program, "/proc/self/exe" for this very binary (even if its file was replaced since).
    public var executable: String
    /// The worker's argv[0], what ps shows.
    public var name: String
    /// What comes before the spec on the command line, e.g. ["worker"].
    public var arguments: [String]
    /// The user workers run as; nil keeps the server's (without any capability).
    public var user: WorkerUser?

    public init(executable: String = "/proc/self/exe", name: String = "vfio-user-server", arguments: [String] = ["worker"], user: WorkerUser? = nil) {
        self.executable = executable
        self.name = name
        self.arguments = arguments
        self.user = user
    }
}

/// An account from the user database, resolved once by the manager (a worker cannot read files).
public struct WorkerUser: Sendable, Equatable {
    public let name: String
    public let uid: uid_t
    public let gid: gid_t

    /// The user `name` (or a numeric uid); nil when the system has no such user.
    public init?(name: String) {
        guard let user = Accounts.user(named: name) else { return nil }
        (self.name, uid, gid) = user
    }

    init(name: String, uid: uid_t, gid: gid_t) {
        self.name = name
        self.uid = uid
        self.gid = gid
    }
}

/// What a worker is told, as one JSON argument: the instance it serves and how. Its fds are fixed:
/// the instance's listening socket is 3, the channel to the manager is 4, and fds handed over for
/// the device (a TAP) follow from 5, named in `parameters`.
public struct WorkerSpec: Sendable, Equatable {
    public static let listenerFD: CInt = 3
    public static let channelFD: CInt = 4
    public static let firstHandedOverFD: CInt = 5

    public var type: String
    public var uuid: MdevUUID
    public var parameters: [String: String]
    public var socketDirectory: String
    public var poll: PollPolicy
    public var trace: Bool
    public var maxDMAMaps: Int
    public var user: WorkerUser?
    /// How many fds from `firstHandedOverFD` on the worker holds.
    public var handedOver: Int

    public init(type: String, uuid: MdevUUID, parameters: [String: String], socketDirectory: String,
                configuration: ServerConfiguration, user: WorkerUser?, handedOver: Int) {
        self.type = type
        self.uuid = uuid
        self.parameters = parameters
        self.socketDirectory = socketDirectory
        poll = configuration.poll
        trace = configuration.trace
        maxDMAMaps = configuration.maxDMAMaps
        self.user = user
        self.handedOver = handedOver
    }

    /// The server configuration a worker serves with.
    public var configuration: ServerConfiguration {
        var configuration = ServerConfiguration()
        configuration.poll = poll
        configuration.trace = trace
        configuration.maxDMAMaps = maxDMAMaps
        return configuration
    }

    public var json: JSONValue {
        var members: [(key: String, value: JSONValue)] = [
            ("type", .string(type)), ("uuid", .string(uuid.description)),
            ("params", .object(parameters.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })),
            ("socket_dir", .string(socketDirectory)), ("poll", .string(poll.description)), ("trace", .bool(trace)),
            ("max_dma_maps", .int(Int64(maxDMAMaps))), ("handed_over", .int(Int64(handedOver))),
        ]
        if let user { members.append(("user", ["name": .string(user.name), "uid": .int(Int64(user.uid)), "gid": .int(Int64(user.gid))])) }
        return .object(members)
    }

    /// Reads the spec the manager wrote; EINVAL names what is wrong.
    public init(text: String) throws(ManagementError) {
        let json: JSONValue
        do throws(JSONError) { json = try JSONValue(parsing: text) } catch { throw ManagementError(.invalidArgument, "worker spec: \(error)") }
        guard case let .string(type)? = json["type"], case let .string(uuidText)? = json["uuid"], let uuid = MdevUUID(uuidText),
              case let .string(directory)? = json["socket_dir"], case let .string(pollText)? = json["poll"], let poll = PollPolicy(pollText),
              case let .bool(trace)? = json["trace"], case let .int(maps)? = json["max_dma_maps"], case let .int(handedOver)? = json["handed_over"]
        else { throw ManagementError(.invalidArgument, "worker spec: a member is missing or of the wrong type: \(text)") }
        self.type = type
        self.uuid = uuid
        parameters = try ManagementRequest.parameters(json["params"])
        socketDirectory = directory
        self.poll = poll
        self.trace = trace
        maxDMAMaps = Int(maps)
        self.handedOver = Int(handedOver)
        if let user = json["user"] {
            guard case let .string(name)? = user["name"], case let .int(uid)? = user["uid"], case let .int(gid)? = user["gid"] else {
                throw ManagementError(.invalidArgument, "worker spec: \"user\" needs name, uid and gid")
            }
            self.user = WorkerUser(name: name, uid: uid_t(uid), gid: gid_t(gid))
        }
    }
}

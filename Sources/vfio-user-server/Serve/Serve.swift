import ArgumentParser
import RegionEmulation
import Support
import SystemPackage
import VfioUserProto
import VfioUserServer
import VirtioNetDevice
#if canImport(Glibc)
import Glibc
#endif

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve mediated devices on UNIX sockets until SIGTERM.",
        discussion: """
        With no options it serves one mtty-2 at a default socket path and prints the QEMU line that \
        attaches it. --type/--socket-path/--fd choose that first device; --config starts the \
        persistent devices of a JSON file instead (or as well, when --type is given). Further \
        instances are created and removed while it runs through the control socket (see the \
        types, list, start and stop subcommands); each listens on <socket-dir>/<uuid>.sock.

        A device serves one client at a time; a second one gets an EBUSY error reply. When a client \
        goes away the device is reset (eventfds closed, DMA unmapped, registers back to power-on) \
        and the next one may attach (one that connects while the old session is still ending \
        waits for it). Sockets are created with mode 0600 (--socket-mode, --socket-owner, \
        --socket-group); a stale socket left by a dead server is replaced. With --isolate process \
        each instance runs in a sandboxed worker process; one that dies shows as failed in list \
        and restart starts it again. The server does not daemonize; under systemd it takes its \
        first device's socket from LISTEN_FDS and reports READY=1 to NOTIFY_SOCKET once every \
        device listens. SIGTERM or SIGINT stop every instance, disconnect their clients and \
        remove their sockets.
        """
    )

    @Option(name: .long, help: ArgumentHelp("Type of the first device.", valueName: DeviceTypes.ids.joined(separator: "|")))
    var type: String?

    @Option(name: .long, help: ArgumentHelp("UUID of the first device (default: a random one).", valueName: "uuid"))
    var uuid: String?

    @Option(name: .customLong("socket-path"), help: ArgumentHelp("UNIX socket of the first device.", valueName: "path"))
    var socketPath: String?

    @Option(name: .customLong("fd"), help: ArgumentHelp("Serve the first device on an inherited socket fd instead of a path.", valueName: "n"))
    var fd: Int32?

    @Flag(name: .customLong("no-default-device"), help: "Start no first device (only --config devices and the control socket).")
    var noDefaultDevice = false

    @Option(name: .long, help: ArgumentHelp("Persistent devices and settings, a JSON file (see README).", valueName: "file"))
    var config: String?

    @Option(name: .customLong("socket-dir"), help: ArgumentHelp("Directory of the instances' sockets (default \(DefaultPaths.socketDirectory)).", valueName: "dir"))
    var socketDirectory: String?

    @Option(name: .long, help: ArgumentHelp("The control socket (default <socket-dir>/control.sock).", valueName: "path"))
    var control: String?

    @Flag(name: .customLong("no-control"), help: "Open no control socket.")
    var noControl = false

    @Option(name: .customLong("socket-mode"), help: ArgumentHelp("Mode of every socket file, octal (default 0600: the owner only).", valueName: "mode"))
    var socketMode: String?

    @Option(name: .customLong("socket-owner"), help: ArgumentHelp("Owner of every socket file, a name or a uid (default: the server's user).", valueName: "user"))
    var socketOwner: String?

    @Option(name: .customLong("socket-group"), help: ArgumentHelp("Group of every socket file, a name or a gid, e.g. kvm with --socket-mode 0660.", valueName: "group"))
    var socketGroup: String?

    @Option(name: .customLong("pool"), help: ArgumentHelp("Size of a resource pool (repeatable), e.g. virtio-net=8.", valueName: "name=size"))
    var pools: [String] = []

    @Flag(name: .long, help: "Print every message in both directions, one decoded line each, on standard error.")
    var trace = false

    @Option(name: .long, help: ArgumentHelp("""
        How long a session spins on its socket before it sleeps: adaptive (the default: up to 256 µs \
        while a client keeps it busy, nothing when idle), off, or a maximum in microseconds.
        """, valueName: "adaptive|off|µs"))
    var poll: String?

    @Option(name: .long, help: ArgumentHelp("""
        none (the default): every instance is served by threads of this process. process: each by a \
        worker process of its own, sandboxed (seccomp, no capabilities), so that a fault stays in its \
        own instance.
        """, valueName: "none|process"))
    var isolate: String?

    @Option(name: .long, help: ArgumentHelp("With --isolate process: the user workers run as (when started as root).", valueName: "name"))
    var user: String?

    @Option(name: .long, help: ArgumentHelp("virtio-net: attach to this TAP interface (created if missing).", valueName: "name"))
    var tap: String?

    @Option(name: .long, help: ArgumentHelp("virtio-net: a UNIX datagram cable, frames to PEER, from LOCAL.", valueName: "local,peer"))
    var datagram: String?

    @Option(name: .long, help: ArgumentHelp("virtio-net: the MAC address.", valueName: "xx:xx:xx:xx:xx:xx"))
    var mac: String?

    @Option(name: .customLong("param"), help: ArgumentHelp("A parameter of the first device (repeatable), e.g. backend=sink.", valueName: "key=value"))
    var parameters: [String] = []

    /// --tap, --datagram, --mac and every --param, as the first device's parameters.
    var deviceParameters: [String: String] {
        var result = ParameterOptions.dictionary(parameters)
        if let tap { result["tap"] = tap }
        if let datagram { result["datagram"] = datagram }
        if let mac { result["mac"] = mac }
        return result
    }

    /// Whether a first device is served: asked for by an option, or nothing else was asked for.
    var servesFirstDevice: Bool {
        type != nil || socketPath != nil || fd != nil || (config == nil && !noDefaultDevice)
    }

    func validate() throws {
        if let type, !DeviceTypes.ids.contains(type) {
            throw ValidationError("unknown device type '\(type)'; known: \(DeviceTypes.ids.joined(separator: ", "))")
        }
        if socketPath != nil && fd != nil { throw ValidationError("--socket-path and --fd exclude each other") }
        if noDefaultDevice && (type != nil || socketPath != nil || fd != nil) {
            throw ValidationError("--no-default-device excludes --type, --socket-path and --fd")
        }
        if let socketMode, ServerConfigFile.socketMode(socketMode) == nil {
            throw ValidationError("--socket-mode takes an octal mode from 0 to 0777, e.g. 0660, not '\(socketMode)'")
        }
        if let socketOwner, Accounts.fileOwner(socketOwner) == nil { throw ValidationError("--socket-owner: no user '\(socketOwner)' on this system") }
        if let socketGroup, Accounts.fileGroup(socketGroup) == nil { throw ValidationError("--socket-group: no group '\(socketGroup)' on this system") }
        if let poll, PollPolicy(poll) == nil {
            throw ValidationError("--poll takes adaptive, off or a number of microseconds up to 10000, not '\(poll)'")
        }
        if let isolate, isolate != "none" && isolate != "process" { throw ValidationError("--isolate takes none or process, not '\(isolate)'") }
        if let user {
            guard WorkerUser(name: user) != nil else { throw ValidationError("--user: no user '\(user)' on this system") }
        }
        if let uuid, MdevUUID(uuid) == nil { throw ValidationError("'\(uuid)' is not a UUID (8-4-4-4-12 hex digits)") }
        try ParameterOptions.validate(parameters)
        for pool in pools where pool.split(separator: "=").count != 2 || Int(pool.split(separator: "=").last!) == nil {
            throw ValidationError("--pool takes NAME=SIZE, not '\(pool)'")
        }
    }

    func run() throws {
        ProcessSignals.blockTermination()
        Systemd.takeNotifySocket()
        let activated = Systemd.takeListenFDs()
        guard activated.count <= 1, activated.isEmpty || fd == nil else {
            throw fatal("systemd passed \(activated.count) sockets\(fd == nil ? "" : " and --fd was given"): a server takes one, its first device's")
        }
        var configuration = ServerConfiguration()
        configuration.trace = trace
        let file: ServerConfigFile?
        do throws(ConfigFileError) { file = try config.map { path throws(ConfigFileError) in try ServerConfigFile(path: path, types: DeviceTypes.all) } } catch {
            throw fatal("bad configuration: \(error)")
        }
        if let policy = poll.flatMap(PollPolicy.init) ?? file?.poll { configuration.poll = policy }
        // The options win over the file.
        configuration.socketAccess = SocketAccessOverride(mode: socketMode.flatMap(ServerConfigFile.socketMode),
                                                          owner: socketOwner.flatMap(Accounts.fileOwner),
                                                          group: socketGroup.flatMap(Accounts.fileGroup))
            .applied(to: (file?.socketAccess ?? SocketAccessOverride()).applied(to: SocketAccess()))
        var poolSizes = file?.pools ?? [:]
        for (name, size) in ParameterOptions.dictionary(pools) { poolSizes[name] = Int(size) }
        let isolation = try isolation(file)
        let manager: InstanceManager
        do throws(ManagementError) {
            manager = try InstanceManager(types: DeviceTypes.all, socketDirectory: socketDirectory ?? file?.socketDirectory ?? DefaultPaths.socketDirectory,
                                          configuration: configuration, poolCapacity: poolSizes,
                                          isolation: isolation)
        } catch {
            throw fatal(error.message)
        }

        var announcements: [String] = []
        do {
            if servesFirstDevice || !activated.isEmpty { announcements.append(try startFirstDevice(on: manager, fd: fd ?? activated.first)) }
            if let file {
                do throws(ConfigFileError) {
                    for instance in try file.start(on: manager) { announcements.append(Self.announcement(instance)) }
                    if !file.devices.isEmpty { announcements.append(Self.sharedMemoryAdvice) }
                } catch {
                    throw fatal("bad configuration: \(error)")
                }
            }
        } catch {
            manager.shutdown()
            throw error
        }

        var controlServer: ControlServer?
        if !noControl {
            let path = control ?? file?.controlPath ?? "\(manager.socketDirectory)/control.sock"
            do throws(TransportError) {
                controlServer = try ControlServer(manager: manager, path: path)
            } catch {
                manager.shutdown()
                throw fatal("control socket: \(error) (another server? use --control PATH or --no-control)")
            }
            do throws(Errno) { try controlServer?.start() } catch {
                manager.shutdown()
                throw fatal("control socket: no thread to serve it (\(error.name))")
            }
            announcements.append("""
            Control socket \(path): manage instances with
              vfio-user-server types|list|start|stop\(control == nil && file?.controlPath == nil && socketDirectory == nil ? "" : " --control \(path)")
            """)
        }
        print(announcements.joined(separator: "\n"))
        fflush(nil)
        // Every device listens, and the control socket: what a unit ordered after this one needs.
        Systemd.notify("READY=1\nSTATUS=serving \(manager.statuses().count) instances")

        let signal = ProcessSignals.waitForTermination()
        ServerLog.info("signal \(signal): stopping every instance")
        Systemd.notify("STOPPING=1")
        controlServer?.stop()
        manager.shutdown()
    }

    /// --isolate and --user, or the file's "isolate" and "user".
    private func isolation(_ file: ServerConfigFile?) throws -> Isolation {
        let user = self.user ?? file?.user
        guard (isolate ?? file?.isolate) == "process" else {
            if user != nil { throw fatal("a user applies to isolated workers: add --isolate process (or \"isolate\": \"process\")") }
            return .none
        }
        return .process(WorkerLaunch(user: user.flatMap(WorkerUser.init(name:))))
    }

    /// The device of --type/--socket-path/--fd: on a path (the printed QEMU line attaches it), on an
    /// inherited listening socket, or on an inherited connected socket as its only client (the
    /// server then exits when that client leaves).
    private func startFirstDevice(on manager: InstanceManager, fd: Int32?) throws -> String {
        let typeID = type ?? "mtty-2"
        let parsedUUID = uuid.flatMap(MdevUUID.init)
        let placement: InstanceManager.Placement
        if let fd {
            let socket = OwnedFileDescriptor(taking: FileDescriptor(rawValue: fd))
            placement = try UnixSocket.isListening(socket.descriptor) ? .listener(socket) : .connection(socket)
        } else {
            placement = .path(socketPath ?? DefaultPaths.deviceSocket(type: typeID))
        }
        let instance: MediatedDeviceInstance
        do throws(ManagementError) {
            instance = try manager.create(type: typeID, uuid: parsedUUID, parameters: deviceParameters, placement: placement, origin: .commandLine)
        } catch {
            throw fatal(error.message)
        }
        if case .connection = placement {
            // The one client is the whole life of this device: when it leaves, the server stops.
            do throws(Errno) {
                try spawnThread(name: "fd-session-end") {
                    _ = instance.endpoint?.waitUntilDetached()
                    ServerLog.info("the client on fd \(fd!) has gone: stopping")
                    kill(getpid(), SIGTERM) // the main thread shuts everything down
                }
            } catch {
                throw fatal("no thread to watch the client on fd \(fd!): \(error.name)")
            }
            return "vfio-user-server: serving \(typeID) to the client connected on fd \(fd!)"
        }
        guard let path = instance.socketPath else {
            return "vfio-user-server: serving \(typeID) on the inherited listening socket fd \(fd!)"
        }
        var text = """
        vfio-user-server: serving \(typeID) (\(instance.type.name)) on \(path)
        Attach it to QEMU 10.1.1 or later with:
          -device '\(DefaultPaths.qemuDevice(socket: path))'
        For example:
          qemu-system-x86_64 -machine pc -accel kvm -m 512M \\
            -object memory-backend-memfd,id=mem,size=512M,share=on -machine memory-backend=mem \\
            -device '\(DefaultPaths.qemuDevice(socket: path))' \\
            -kernel bzImage -append 'console=ttyS0 8250.nr_uarts=16' -nographic
        \(Self.sharedMemoryAdvice)
        Stop with Ctrl-C or SIGTERM.
        """
        if let net = instance.device?.model as? VirtioNetDevice {
            text += "\n  MAC " + net.mac.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":") + ", backend \(net.backend.description)"
        }
        return text
    }

    /// What guest RAM without fds costs, and the fix, beside every -device line printed.
    static let sharedMemoryAdvice = """
    Give QEMU shared RAM (-object memory-backend-memfd,id=mem,size=<RAM size>,share=on \\
    -machine memory-backend=mem) so that the server maps guest memory. With plain -m every DMA is
    a message through QEMU: a NIC's request-response latency about triples, and both sides spend
    CPU on it.
    """

    static func announcement(_ instance: MediatedDeviceInstance) -> String {
        let path = instance.socketPath ?? "?"
        return "\(instance.uuid) \(instance.type.id) on \(path)\n  -device '\(DefaultPaths.qemuDevice(socket: path))'"
    }

    /// An error that ends the command with a message and exit status 1.
    private func fatal(_ message: String) -> Error {
        ServerLog.error(message)
        return ExitCode(1)
    }
}

import ArgumentParser
import VfioUserProto
import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

/// What every management subcommand takes: where the server is, and how to print.
struct ControlOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The server's control socket (default \(DefaultPaths.controlSocket)).", valueName: "path"))
    var control: String = DefaultPaths.controlSocket

    @Flag(name: .long, help: "Print the server's JSON reply instead of text.")
    var json = false

    /// Sends one request; a failure prints the server's reason and exits with status 1.
    func send(_ request: ManagementRequest) throws -> JSONValue {
        do throws(ManagementError) {
            return try ControlClient(path: control).send(request)
        } catch {
            ServerLog.error(error.description)
            throw ExitCode(1)
        }
    }

    /// `--json`: the reply's result, without the "ok" member.
    func printJSON(_ value: JSONValue?) {
        print(value?.text ?? "null")
    }
}

struct Types: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the device types and how many more instances of each can be made (mdevctl types).",
        discussion: """
        Asks the running server on its control socket. Types that share a resource \
        pool (mtty-1 and mtty-2 share 24 serial ports) lower each other's \
        available_instances. With --json the reply is an array of objects.

        EXAMPLE
          vfio-user-server types
          vfio-user-server types --json --control /run/vfio-user/control.sock
        """)

    @OptionGroup var options: ControlOptions

    func run() throws {
        let reply = try options.send(.types)
        if options.json { return options.printJSON(reply["types"]) }
        guard case let .array(types)? = reply["types"] else { return }
        for type in types {
            print(type["id"].displayText)
            print("  Available instances: \(type["available_instances"].displayText)")
            print("  Device API: \(type["device_api"].displayText)")
            print("  Name: \(type["name"].displayText)")
            print("  Description: \(type["description"].displayText)")
            print("  Pool: \(type["pool"].displayText), \(type["cost"].displayText) of \(type["pool_capacity"].displayText) per instance")
            if case let .object(parameters)? = type["parameters"], !parameters.isEmpty {
                print("  Parameters:")
                for parameter in parameters { print("    \(parameter.key): \(parameter.value.displayText)") }
            }
        }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the instances: UUID, type, state, socket (mdevctl list).",
        discussion: """
        One line per instance: its UUID, type, state (creating, idle, attached, removing, or \
        failed when its isolated worker died), socket, and the parameters it was created with; \
        then, for a failed instance, how its worker ended.

        EXAMPLE
          vfio-user-server list
          vfio-user-server list --json | jq -r '.[].socket'
        """)

    @OptionGroup var options: ControlOptions

    func run() throws {
        let reply = try options.send(.list)
        if options.json { return options.printJSON(reply["instances"]) }
        guard case let .array(instances)? = reply["instances"] else { return }
        for instance in instances {
            var line = "\(instance["uuid"].displayText) \(instance["type"].displayText) \(instance["state"].displayText) \(instance["socket"].displayText)"
            if case let .object(parameters)? = instance["params"], !parameters.isEmpty {
                line += " " + parameters.map { "\($0.key)=\($0.value.displayText)" }.joined(separator: " ")
            }
            if let failure = instance["failure"] { line += " (\(failure.displayText))" }
            print(line)
        }
    }
}

struct Start: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create an instance and serve it on <socket-dir>/<uuid>.sock (mdevctl start).",
        discussion: """
        The server creates the instance if its type has an instance available, \
        listens on its socket and answers with the QEMU -device argument that \
        attaches it. A UUID already in use is refused.

        EXAMPLE
          vfio-user-server start --type mtty-1
          vfio-user-server start --type virtio-net --param tap=vtap0 \\
              --uuid 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001
        """)

    @Option(name: .long, help: ArgumentHelp("The device type.", valueName: DeviceTypes.ids.joined(separator: "|")))
    var type: String

    @Option(name: .long, help: ArgumentHelp("Its UUID (default: a random one).", valueName: "uuid"))
    var uuid: String?

    @Option(name: .customLong("param"), help: ArgumentHelp("A parameter (repeatable), e.g. tap=vtap0.", valueName: "key=value"))
    var parameters: [String] = []

    @OptionGroup var options: ControlOptions

    func validate() throws { try ParameterOptions.validate(parameters) }

    func run() throws {
        let reply = try options.send(.start(type: type, uuid: uuid, parameters: ParameterOptions.dictionary(parameters)))
        if options.json { return options.printJSON(reply["instance"]) }
        let uuid: JSONValue? = reply["instance"]?["uuid"], socket: JSONValue? = reply["instance"]?["socket"]
        print("\(uuid.displayText) \(type) on \(socket.displayText)")
        print("  -device '\(DefaultPaths.qemuDevice(socket: socket.displayText))'")
    }
}

struct Stop: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove an instance (mdevctl stop).",
        discussion: """
        An instance with a client attached is not removed unless --force is given: then the device \
        raises its REQ interrupt (asking the client to let go), waits up to --timeout milliseconds, \
        and closes the connection.
        """)

    @Option(name: .long, help: ArgumentHelp("The instance's UUID.", valueName: "uuid"))
    var uuid: String

    @Flag(name: .long, help: "Remove it even if a client is attached.")
    var force = false

    @Option(name: .long, help: ArgumentHelp("With --force: how long the client has to let go (default 5000).", valueName: "ms"))
    var timeout: Int?

    @OptionGroup var options: ControlOptions

    func run() throws {
        let reply = try options.send(.stop(uuid: uuid, force: force, timeoutMilliseconds: timeout))
        if options.json {
            guard case let .object(members) = reply else { return options.printJSON(reply) }
            return options.printJSON(.object(members.filter { $0.key != "ok" }))
        }
        print("removed \(reply["uuid"].displayText) (client: \(reply["client"].displayText))")
    }
}

struct Restart: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start the worker of a failed isolated instance again, on the same socket.",
        discussion: """
        With --isolate process each instance has a worker process; one that dies (a crash, a \
        forbidden system call) leaves its instance failed, shown by list with the signal or exit \
        status, and every other instance serving. Its socket stays: a client that connects \
        meanwhile waits in its backlog, and is served once the instance is restarted.

        EXAMPLE
          vfio-user-server restart --uuid 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001
        """)

    @Option(name: .long, help: ArgumentHelp("The instance's UUID.", valueName: "uuid"))
    var uuid: String

    @OptionGroup var options: ControlOptions

    func run() throws {
        let reply = try options.send(.restart(uuid: uuid))
        if options.json { return options.printJSON(reply["instance"]) }
        print("restarted \(reply["instance"]?["uuid"].displayText ?? uuid) (worker \(reply["instance"]?["pid"].displayText ?? "?"))")
    }
}

struct ScreenshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "screenshot",
        abstract: "Save what a display instance (mbochs) shows, as a PNG.",
        discussion: """
        QEMU cannot show a vfio-user device's display (the protocol has no display plane), so the \
        server, which holds the framebuffer, takes the picture: the mode the guest set through the \
        DISPI registers, XRGB8888 as it is in memory now. With no mode set, or a mode the \
        framebuffer cannot hold, nothing is written and the reason is printed (ENODATA).

        EXAMPLE
          vfio-user-server screenshot --uuid 83b8f4f2-509f-382f-3c1e-e6bfe0fa1004 --output screen.png
        """)

    @Option(name: .long, help: ArgumentHelp("The display instance's UUID.", valueName: "uuid"))
    var uuid: String

    @Option(name: .long, help: ArgumentHelp("The PNG file to write.", valueName: "file"))
    var output: String

    @OptionGroup var options: ControlOptions

    func run() throws {
        let reply = try options.send(.screenshot(uuid: uuid))
        guard case let .string(text)? = reply["png"], let png = Base64.decode(text) else {
            ServerLog.error("the server's reply carries no PNG")
            throw ExitCode(1)
        }
        let fd = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            ServerLog.error("\(output): \(String(cString: strerror(errno)))")
            throw ExitCode(1)
        }
        defer { close(fd) }
        let written = png.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == png.count else {
            ServerLog.error("\(output): \(String(cString: strerror(errno)))")
            throw ExitCode(1)
        }
        if options.json {
            guard case let .object(members) = reply else { return options.printJSON(reply) }
            return options.printJSON(.object(members.filter { $0.key != "ok" && $0.key != "png" } + [("file", .string(output))]))
        }
        print("\(output): \(reply["width"].displayText)x\(reply["height"].displayText) (\(png.count) bytes)")
    }
}

extension JSONValue {
    /// A member for text output: strings bare, anything else as JSON.
    var displayText: String {
        if case let .string(value) = self { return value }
        return text
    }
}

extension Optional<JSONValue> {
    /// A member for text output; absent as "-".
    var displayText: String { self?.displayText ?? "-" }
}

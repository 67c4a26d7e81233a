import ArgumentParser
import RegionEmulation
import SystemPackage
import VfioUserProto
import VfioUserServer
import VirtioNetDevice
#if canImport(Glibc)
import Glibc
#endif

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve one device on a UNIX socket until SIGTERM.",
        discussion: """
        The server listens on --socket-path (created with mode 0600; a stale socket left by a dead \
        server is replaced; removed again on exit) or uses the socket passed as --fd: a listening \
        socket is accepted on, a connected one is served as the only client. One client is attached \
        at a time; a second one gets an EBUSY error reply. When a client goes away the device is \
        reset (eventfds closed, DMA unmapped, registers back to power-on) and the next one may attach. \
        The server does not daemonize; SIGTERM or SIGINT stop it cleanly.
        """
    )

    @Option(name: .long, help: ArgumentHelp("Device type to serve.", valueName: DeviceCatalog.names.joined(separator: "|")))
    var type: String = "mtty-2"

    @Option(name: .customLong("socket-path"), help: ArgumentHelp("UNIX socket to listen on.", valueName: "path"))
    var socketPath: String?

    @Option(name: .customLong("fd"), help: ArgumentHelp("Serve on an inherited socket fd instead of a path.", valueName: "n"))
    var fd: Int32?

    @Flag(name: .long, help: "Print every message in both directions, one decoded line each, on standard error.")
    var trace = false

    @Option(name: .long, help: ArgumentHelp("virtio-net: attach to this TAP interface (created if missing).", valueName: "name"))
    var tap: String?

    @Option(name: .long, help: ArgumentHelp("virtio-net: a UNIX datagram cable, frames to PEER, from LOCAL.", valueName: "local,peer"))
    var datagram: String?

    @Option(name: .long, help: ArgumentHelp("virtio-net: the MAC address.", valueName: "xx:xx:xx:xx:xx:xx"))
    var mac: String?

    @Option(name: .customLong("param"), help: ArgumentHelp("A device parameter (repeatable), e.g. backend=sink.", valueName: "key=value"))
    var parameters: [String] = []

    /// --tap, --datagram, --mac and every --param, as the type's parameters.
    var deviceParameters: [String: String] {
        var result: [String: String] = [:]
        for parameter in parameters {
            let pair = parameter.split(separator: "=", maxSplits: 1).map(String.init)
            result[pair[0]] = pair.count > 1 ? pair[1] : ""
        }
        if let tap { result["tap"] = tap }
        if let datagram { result["datagram"] = datagram }
        if let mac { result["mac"] = mac }
        return result
    }

    func validate() throws {
        guard DeviceCatalog.entry(type) != nil else {
            throw ValidationError("unknown device type '\(type)'; known: \(DeviceCatalog.names.joined(separator: ", "))")
        }
        if socketPath != nil && fd != nil { throw ValidationError("--socket-path and --fd exclude each other") }
        let known = DeviceCatalog.entry(type)!.parameters
        for key in deviceParameters.keys where known[key] == nil {
            throw ValidationError("\(type) has no parameter '\(key)'" + (known.isEmpty ? "" : "; it knows: \(known.keys.sorted().joined(separator: ", "))"))
        }
    }

    static func defaultSocketPath(for type: String) -> String {
        let directory = getenv("XDG_RUNTIME_DIR").map { String(cString: $0) } ?? "/tmp"
        return "\(directory)/vfio-user-\(type).sock"
    }

    func run() throws {
        let entry = DeviceCatalog.entry(type)!
        var configuration = ServerConfiguration()
        configuration.trace = trace
        let model: DeviceModel
        do { model = try entry.make(deviceParameters, type) } catch { throw ValidationError("\(error)") }
        let device = EmulatedDevice(model: model, maxDMAMappings: configuration.maxDMAMaps)

        if let fd {
            let socket = OwnedFileDescriptor(taking: FileDescriptor(rawValue: fd))
            let endpoint: DeviceEndpoint
            if try UnixSocket.isListening(socket.descriptor) {
                endpoint = DeviceEndpoint(listeningSocket: socket, device: device, configuration: configuration, name: type)
                endpoint.start()
                ServerLog.info("serving \(type) on inherited listening socket fd \(fd)")
            } else {
                endpoint = DeviceEndpoint(listeningSocket: try UnixSocket.pair().0, device: device, configuration: configuration, name: type)
                ServerLog.info("serving \(type) to the client connected on fd \(fd)")
                spawnThread(name: "fd-session") {
                    endpoint.serve(connection: socket)
                    Glibc.exit(0) // the only client is gone
                }
            }
            _ = ProcessSignals.waitForTermination()
            endpoint.stop()
            return
        }

        let path = socketPath ?? Self.defaultSocketPath(for: type)
        let endpoint = try DeviceEndpoint(path: path, device: device, configuration: configuration, name: type)
        endpoint.start()
        printAttachInstructions(path: path, summary: entry.summary)
        if let net = model as? VirtioNetDevice {
            print("  MAC " + net.mac.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":") + ", backend \(net.backend.description)")
        }
        let signal = ProcessSignals.waitForTermination()
        ServerLog.info("signal \(signal): stopping")
        endpoint.stop()
    }

    private func printAttachInstructions(path: String, summary: String) {
        let device = #"{"driver":"vfio-user-pci","socket":{"type":"unix","path":"\#(path)"}}"#
        print("""
        vfio-user-server: serving \(type) (\(summary)) on \(path)
        Attach it to QEMU 10.1.1 or later with:
          -device '\(device)'
        For example:
          qemu-system-x86_64 -machine pc -accel kvm -m 512M \\
            -object memory-backend-memfd,id=mem,size=512M,share=on -machine memory-backend=mem \\
            -device '\(device)' \\
            -kernel bzImage -append 'console=ttyS0 8250.nr_uarts=16' -nographic
        (memfd-backed RAM lets the server map guest memory; with plain -m it uses DMA messages.)
        Stop with Ctrl-C or SIGTERM.
        """)
        fflush(nil)
    }
}

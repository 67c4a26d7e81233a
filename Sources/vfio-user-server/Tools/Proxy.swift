import ArgumentParser
import Support
import SystemPackage
import VfioUserProto
import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

/// `proxy`: listens where the client connects, connects to the real server, relays everything
/// (fds too) and prints the conversation.
struct Proxy: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sit between a vfio-user client and server, pass everything through (fds too) and print the conversation.",
        discussion: """
        Listens on --listen; for each client that connects, connects to --connect and relays \
        messages both ways unchanged, file descriptors included (socat drops them), printing one \
        line per message in the --trace format: '→' towards the server, '←' back. Clients are \
        served one after another. Works with any vfio-user server and client.

        EXAMPLE
          vfio-user-server proxy --listen /tmp/w.sock \\
              --connect /tmp/vfio-user-mtty-2.sock &
          qemu-system-x86_64 ... -device \\
            '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"/tmp/w.sock"}}'
        """)

    @Option(name: .long, help: ArgumentHelp("Where the client connects.", valueName: "path"))
    var listen: String

    @Option(name: .long, help: ArgumentHelp("The server's socket.", valueName: "path"))
    var connect: String

    @Option(name: .customLong("dma-layout"), help: ArgumentHelp("DMA_READ/WRITE layout: spec (QEMU 11) or qemu (older sources).", valueName: "spec|qemu"))
    var dmaLayout: String = "spec"

    @Flag(name: .long, help: "Relay one client, then exit.")
    var once = false

    func validate() throws {
        guard dmaLayout == "spec" || dmaLayout == "qemu" else { throw ValidationError("--dma-layout is spec or qemu") }
    }

    func run() throws {
        ProcessSignals.blockTermination()
        let listener: OwnedFileDescriptor
        do throws(TransportError) { listener = try UnixSocket.listen(path: listen) } catch {
            ServerLog.error("\(listen): \(error)")
            throw ExitCode(1)
        }
        let identity = UnixSocket.identity(of: listen)
        let layout: DMATransferLayout = dmaLayout == "spec" ? .spec : .qemu
        print("proxy: \(listen) → \(connect)")
        fflush(nil)
        do throws(Errno) {
            try spawnThread(name: "proxy") { [listen, connect, once] in
                while let client = try? UnixSocket.accept(listener) {
                    do {
                        let server = try UnixSocket.connect(path: connect)
                        print("proxy: a client connected")
                        fflush(nil)
                        let relay = MessageRelay(client: client, server: server, dmaLayout: layout) { line in
                            print(line)
                            fflush(nil)
                        }
                        let (toServer, fromServer) = try relay.run()
                        print("proxy: the conversation ended (\(toServer) messages to the server, \(fromServer) back)")
                        fflush(nil)
                    } catch let error as Errno {
                        ServerLog.error("no thread to relay the server's replies: \(error.name)")
                    } catch {
                        ServerLog.error("cannot reach the server at \(connect): \(error)")
                    }
                    if once { break }
                }
                UnixSocket.removeSocketFile(path: listen, ifIdentity: identity)
                Glibc.exit(0)
            }
        } catch {
            UnixSocket.removeSocketFile(path: listen, ifIdentity: identity)
            ServerLog.error("no thread to accept clients: \(error.name)")
            throw ExitCode(1)
        }
        _ = ProcessSignals.waitForTermination()
        UnixSocket.removeSocketFile(path: listen, ifIdentity: identity)
    }
}

@_exported import RegionEmulation
@_exported import Support
@_exported import SystemPackage
@_exported import VfioUserProto
@_exported import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

// The one module a device author imports: the device model protocol (`DeviceModel`) and what a
// model builds its PCI function from (`PCIFunction`, `BARDefinition`, capabilities, interrupts,
// the DMA space), the endpoint that serves it on a socket, and `serveDevice`, the whole program
// around one device. The pieces map to libvfio-user's as examples/README.md shows.

/// Serves `model` on a UNIX socket at `path` until SIGINT or SIGTERM, one client at a time, then
/// removes the socket: what libvfio-user's vfu_create_ctx, vfu_realize_ctx and a vfu_run_ctx loop
/// do together. Prints the QEMU `-device` argument that attaches it, unless `quiet`.
///
/// Blocks SIGINT and SIGTERM in the calling thread, so call it before starting threads of your own
/// (they inherit the mask, and the signal comes here).
public func serveDevice(_ model: some DeviceModel, at path: String, configuration: ServerConfiguration = ServerConfiguration(),
                        quiet: Bool = false) throws {
    var signals = sigset_t()
    sigemptyset(&signals)
    sigaddset(&signals, SIGINT)
    sigaddset(&signals, SIGTERM)
    pthread_sigmask(SIG_BLOCK, &signals, nil)
    let endpoint = try DeviceEndpoint(path: path, device: EmulatedDevice(model: model), configuration: configuration, name: "device")
    try endpoint.start()
    if !quiet {
        print(#"-device '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"\#(path)"}}'"#)
        fflush(nil)
    }
    var received: CInt = 0
    while sigwait(&signals, &received) != 0 {}
    endpoint.stop()
}

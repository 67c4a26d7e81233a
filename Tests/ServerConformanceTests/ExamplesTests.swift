import Support
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// The examples are run, not just shown: they must stay true.
@Suite("Examples")
struct ExamplesTests {
    /// examples/socat-session.sh: VERSION and a config-space read typed with printf, through socat.
    @Test func theSocatSessionReadsTheVendorAndDeviceID() throws {
        let server = try TestServer()
        let result = try ServerProcess.run([repositoryRoot + "/examples/socat-session.sh", server.path], program: "bash",
                                           environment: ["VFIO_USER_SERVER=" + ServerProcess.executable])
        #expect(result.status == 0, "\(result.errors)")
        #expect(result.output.contains("← #1 VERSION reply version=0.0 json={"), "\(result.output)")
        #expect(result.output.contains("← #2 REGION_READ reply offset=0x0 region=config count=4 data=48435332\n"), "\(result.output)")
    }

    /// examples/CounterDevice: a custom device built with the package, poked with the client.
    @Test func theCounterDeviceCounts() throws {
        let binary = String(ServerProcess.executable.dropLast("vfio-user-server".count)) + "example-counter-device"
        let directory = TemporaryDirectory()
        let socket = directory.path + "/counter.sock"
        let device = try ServerProcess(arguments: [socket], serverOptions: false, waitFor: socket, program: binary)
        let client = try VfioUserClient(path: socket)
        try client.negotiate()
        let eventfd = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try client.setIRQs(.intx, [.dataEventfd, .actionTrigger], fds: [eventfd.descriptor])
        try client.write(.bar0, offset: 4, value: UInt32(5))
        try client.write(.bar0, offset: 8, value: UInt32(1))
        try client.write(.bar0, offset: 8, value: UInt32(1))
        #expect(try client.read(.bar0, offset: 0, as: UInt32.self) == 10)
        #expect(fired(eventfd, waitingMilliseconds: 1000) >= 1)
        #expect(try client.read(.config, offset: 0, as: UInt32.self) == 0x10F0_1B36)
        #expect(device.terminate() == 0, "SIGTERM ends the example cleanly")
        #expect(access(socket, F_OK) != 0, "and its socket is gone")
    }
}

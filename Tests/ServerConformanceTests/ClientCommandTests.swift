import MttyDevice
import RegionEmulation
import Support
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VfioUserServer
import VirtioNetDevice
#if canImport(Glibc)
import Glibc
#endif

@Suite("The client, decode and proxy commands")
struct ClientCommandTests {
    func client(_ socket: String, _ commands: String, json: Bool = false) throws -> (status: CInt, output: String, errors: String) {
        try ServerProcess.run(["client", socket] + (json ? ["--json"] : []) + [commands])
    }

    @Test func registersAreReadAndWrittenOnOneConnection() throws {
        let server = try TestServer()
        let run = try client(server.path, "write bar0 7.b=0x5a ; read bar0 7.b ; read bar1 7.b ; config VENDOR_ID ; config 0x3c.b=9 ; config INTERRUPT_LINE ; reset ; read bar0 7.b")
        #expect(run.status == 0, "\(run.errors)")
        #expect(run.output == """
        bar0+0x7 := 0x5a
        bar0+0x7 = 0x5a
        bar1+0x7 = 0x00
        VENDOR_ID = 0x4348
        INTERRUPT_LINE := 0x09
        INTERRUPT_LINE = 0x09
        device reset
        bar0+0x7 = 0x00

        """)
    }

    @Test func infoDescribesTheDeviceLikeLspci() throws {
        let server = try TestServer(model: try VirtioNetDevice(backend: SinkBackend(), mac: [0x52, 0x54, 0, 0, 0, 1]))
        let run = try client(server.path, "info")
        #expect(run.status == 0, "\(run.errors)")
        for expected in ["vfio-user device on \(server.path): PCI, reset; 9 regions, 5 IRQ indexes",
                         "\tbar4\tsize 16384 (0x4000)\tREAD|WRITE",
                         "\tmsix\tcount 4\tEVENTFD|MASKABLE",
                         "\tEthernet controller [0200]: Device 1af4:1041 (rev 01)",
                         "\t\tRegion 4: Memory at <unassigned> (64-bit, non-prefetchable) [size=16K]",
                         "\t\tCapabilities: [98] MSI-X: Enable- Count=4 Masked-",
                         "\t\t\tVector table: BAR=1 offset=0x00000000",
                         "\t\tCapabilities: [a4] Power Management version 3"] {
            #expect(run.output.contains(expected + "\n"), "missing: \(expected)")
        }
        let json = try client(server.path, "info", json: true)
        let value = try JSONValue(parsing: String(json.output.dropLast()))
        #expect(value["config"]?["vendor"] == 0x1AF4)
        let capabilities = try #require(value["config"]?["capabilities"]?.arrayValue, "\(json.output)")
        #expect(capabilities.count == 7)
    }

    @Test func anInterruptIsArmedAndSeenToFire() throws {
        let server = try TestServer()
        let run = try client(server.path, "irq intx ; wait 50 ; write bar0 2.b=1 ; write bar0 1.b=1 ; write bar0 0.b=0x41 ; wait 1000 ; unmask intx", json: true)
        #expect(run.status == 0, "\(run.errors)")
        let lines = run.output.split(separator: "\n").map(String.init)
        #expect(lines.count == 7)
        #expect(lines[1] == #"{"command":"wait","fired":{}}"#)
        #expect(lines[5] == #"{"command":"wait","fired":{"intx[0]":1}}"#)
    }

    @Test func clientMemoryIsMappedFromAFile() throws {
        let server = try TestServer(model: CopyEngineDevice())
        let directory = TemporaryDirectory()
        let file = directory.path + "/memory"
        let fd = open(file, O_RDWR | O_CREAT, 0o600)
        ftruncate(fd, 0x10000)
        close(fd)
        let run = try client(server.path, "dma-map \(file) 0x100000 ; dma-unmap 0x100000 0x10000 ; dma-map \(file) 0x200000 0x1000 0x2000 ro ; dma-unmap all")
        #expect(run.status == 0, "\(run.errors)")
        #expect(run.output.contains("mapped at 0x100000 (65536 bytes)"))
        #expect(run.output.contains("mapped at 0x200000 (4096 bytes)"))
    }

    @Test func mistakesAreReportedAndTheExitStatusSaysSo() throws {
        let server = try TestServer()
        for (commands, reason) in [("read bar9 0", "not a region"), ("write bar0 7.b=0x1ff", "does not fit in 1 bytes"),
                                   ("frobnicate", "unknown command"), ("read bar0 0x100.b", "EINVAL"), ("wait", "no interrupt is armed")] {
            let run = try client(server.path, commands)
            #expect(run.status != 0, "\(commands)")
            #expect(run.errors.contains(reason), "\(commands): \(run.errors)")
        }
        let unreachable = try client(server.directory.path + "/nobody.sock", "info")
        #expect(unreachable.status != 0 && unreachable.errors.contains("cannot attach"))
    }

    @Test func decodeReadsAnXxdDumpFromAFile() throws {
        let directory = TemporaryDirectory()
        let path = directory.path + "/dump.txt"
        let bytes = rawMessage(id: 3, command: Command.regionRead.rawValue, payload: le(UInt64(0)) + le(UInt32(7)) + le(UInt32(2)))
        let dump = stride(from: 0, to: bytes.count, by: 16).map { start in
            hexText(start, digits: 8, prefix: false) + ": " + bytes[start..<min(start + 16, bytes.count)].map { hexText($0, digits: 2, prefix: false) }.joined()
        }.joined(separator: "\n")
        let fd = open(path, O_WRONLY | O_CREAT, 0o600)
        _ = dump.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        let run = try ServerProcess.run(["decode", path])
        #expect(run.status == 0, "\(run.errors)")
        #expect(run.output == "→ #3 REGION_READ offset=0x0 region=config count=2\n")
    }

    /// The proxy between a client and a server: the conversation works (eventfds included) and
    /// every message is printed.
    @Test func theProxyPassesAConversationWithItsFds() throws {
        let server = try TestServer()
        let directory = TemporaryDirectory()
        let proxy = try ServerProcess(arguments: ["proxy", "--listen", directory.path + "/proxy.sock", "--connect", server.path, "--once"],
                                      firstDevice: false, serverOptions: false, waitFor: directory.path + "/proxy.sock")
        let client = try VfioUserClient(path: directory.path + "/proxy.sock")
        try client.negotiate()
        let eventfd = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try client.setIRQs(.intx, [.dataEventfd, .actionTrigger], fds: [eventfd.descriptor])
        try client.write(.bar0, offset: 1, value: UInt8(1))
        try client.write(.bar0, offset: 0, value: UInt8(0x41))
        #expect(fired(eventfd, waitingMilliseconds: 2000) == 1, "the eventfd reached the server through the proxy")
        UnixSocket.shutdown(client.socket)
        #expect(proxy.waitForExit(milliseconds: 5000) == 0)
        let lines = proxy.output.split(separator: "\n").map(String.init)
        #expect(lines.contains("→ #2 DEVICE_SET_IRQS argsz=20 index=intx flags=EVENTFD|TRIGGER start=0 count=1 fds=1"))
        #expect(lines.contains("← #4 REGION_WRITE reply offset=0x0 region=bar0 count=1"))
        #expect(lines.last == "proxy: the conversation ended (4 messages to the server, 4 back)")
    }

    /// A real `socat -x -v` capture, made here: the `client` subcommand talks to an mtty-2 through
    /// socat, and `decode` turns socat's dump back into the conversation, in order, each direction
    /// framed on its own. The eventfd of SET_IRQS does not get through socat (it passes no fds).
    @Test func aSocatCaptureMadeHereDecodesIntoTheConversation() throws {
        let server = try TestServer()
        let relay = server.directory.path + "/socat.sock"
        let socat = try ServerProcess(arguments: ["-x", "-v", "UNIX-LISTEN:\(relay)", "UNIX-CONNECT:\(server.path)"],
                                      serverOptions: false, waitFor: relay, program: "socat")
        let run = try client(relay, "irq intx ; write bar0 1.b=1 ; write bar0 0.b=0x41 posted ; read bar0 2.b ; read bar0 0.b ; reset ; read bar0 9.b")
        #expect(run.status != 0, "the last read is refused: \(run.errors)")
        #expect(socat.waitForExit(milliseconds: 5000) == 0, "socat ends with its one connection")
        let captured = socat.errors
        #expect(captured.contains("length="), "socat's -v dump: \(captured.prefix(200))")
        let path = server.directory.path + "/capture.txt"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        _ = captured.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        let decoded = try ServerProcess.run(["decode", path])
        #expect(decoded.status == 0, "\(decoded.errors)")
        let capabilities = VfioUserClient.qemuCapabilities.json
        #expect(decoded.output.split(separator: "\n").map(String.init) == [
            "→ #1 VERSION version=0.0 json=\(capabilities)",
            #"← #1 VERSION reply version=0.0 json={"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":65535,"write_multiple":true}}"#,
            "→ #2 DEVICE_SET_IRQS argsz=20 index=intx flags=EVENTFD|TRIGGER start=0 count=1",
            "← #2 DEVICE_SET_IRQS reply",
            "→ #3 REGION_WRITE offset=0x1 region=bar0 count=1 data=01",
            "← #3 REGION_WRITE reply offset=0x1 region=bar0 count=1",
            "→ #4 REGION_WRITE no-reply offset=0x0 region=bar0 count=1 data=41",
            "→ #5 REGION_READ offset=0x2 region=bar0 count=1",
            "← #5 REGION_READ reply offset=0x2 region=bar0 count=1 data=04",
            "→ #6 REGION_READ offset=0x0 region=bar0 count=1",
            "← #6 REGION_READ reply offset=0x0 region=bar0 count=1 data=41",
            "→ #7 DEVICE_RESET",
            "← #7 DEVICE_RESET reply",
            "→ #8 REGION_READ offset=0x9 region=bar0 count=1",
            "← #8 REGION_READ reply error=EINVAL",
        ])
        let swapped = try ServerProcess.run(["decode", "--server-on-left", path])
        #expect(swapped.output.hasPrefix("← #1 VERSION version=0.0"), "--server-on-left turns the arrows: \(swapped.output.prefix(80))")
    }

    /// A client behind socat sends no fds at all: its maps become message mode, SET_IRQS without
    /// eventfds unassigns, and the device works.
    @Test func aClientThatSendsNoFdsStillAttaches() throws {
        let server = try TestServer()
        let client = try server.attach()
        try client.dmaMap(DMAMapRequest(flags: [.read, .write], offset: 0, address: 0x10_0000, size: 0x10000))
        try client.setIRQs(.intx, [.dataEventfd, .actionTrigger], start: 0, count: 1)
        try client.write(.bar0, offset: 7, value: UInt8(0x33))
        #expect(try client.read(.bar0, offset: 7, as: UInt8.self) == 0x33)
        #expect(server.device.dma.mappings.first?.hasFileDescriptor == false)
        #expect(server.device.function.interrupts.assignedEventfdCount == 0)
    }
}

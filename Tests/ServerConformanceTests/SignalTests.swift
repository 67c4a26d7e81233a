import Support
import TestSupport
import Testing
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// Ctrl-C and SIGTERM as a person at a terminal, or a service manager, sends them: every command
/// ends, and the ones that made a socket file take it away.
@Suite("Signals")
struct SignalTests {
    /// The wait status of a process killed by `signal`, as a shell sees it.
    static func killed(by signal: CInt, _ status: CInt) -> Bool { status & 0x7F == signal }

    /// Starts `arguments`, waits until `ready` says it is where it blocks, sends SIGINT, and
    /// returns its wait status and how long it took to go (nil if it did not within 2 s).
    static func interrupt(_ arguments: [String], ready: () -> Bool) throws -> (status: CInt, milliseconds: UInt64)? {
        let process = try ServerProcess(arguments: arguments, serverOptions: false)
        for _ in 0..<250 where !ready() && !process.hasExited { usleep(20_000) }
        #expect(ready(), "\(arguments) never got where it blocks: \(process.errors)")
        usleep(100_000) // inside the blocking call
        let start = monotonicNanoseconds()
        kill(process.pid, SIGINT)
        guard let status = process.waitForExit(milliseconds: 2000) else { return nil }
        return (status, (monotonicNanoseconds() - start) / 1_000_000)
    }

    @Test(arguments: ["irq intx ; wait 60000", "sleep 60000"])
    func theClientEndsOnCtrlC(commands: String) throws {
        let server = try TestServer()
        let result = try Self.interrupt(["client", server.path, commands]) { server.endpoint.isAttached }
        let ended = try #require(result, "'client \(commands)' ignored SIGINT")
        #expect(Self.killed(by: SIGINT, ended.status), "status \(ended.status)")
    }

    @Test func decodeOfAPipeEndsOnCtrlC() throws {
        let directory = TemporaryDirectory()
        let fifo = directory.path + "/capture"
        #expect(mkfifo(fifo, 0o600) == 0)
        // Held open for writing and never written: decode waits for input for ever.
        let writer = open(fifo, O_RDWR)
        defer { close(writer) }
        let result = try Self.interrupt(["decode", fifo]) { Self.readers(of: fifo) > 0 }
        let ended = try #require(result, "'decode' of a pipe ignored SIGINT")
        #expect(Self.killed(by: SIGINT, ended.status), "status \(ended.status)")
    }

    @Test func theProxyEndsOnCtrlCAndTakesItsSocketAway() throws {
        let server = try TestServer()
        let listen = server.directory.path + "/proxy.sock"
        let result = try Self.interrupt(["proxy", "--listen", listen, "--connect", server.path]) { access(listen, F_OK) == 0 }
        let ended = try #require(result, "the proxy ignored SIGINT")
        #expect(ended.status == 0, "a clean exit, status \(ended.status)")
        #expect(access(listen, F_OK) != 0, "the proxy's socket is gone")
    }

    @Test(arguments: [SIGINT, SIGTERM])
    func theServerStopsCleanlyAndTakesEverySocketAway(signal: CInt) throws {
        let server = try ServerProcess()
        #expect(access(server.path, F_OK) == 0)
        let status = server.terminate(signal)
        #expect(status == 0, "a clean exit, status \(status)")
        #expect(server.directory.entries.filter { $0.hasSuffix(".sock") }.isEmpty, "\(server.directory.entries)")
    }

    /// How many processes have `path` open (a fifo's reader shows up only once it opened it).
    static func readers(of path: String) -> Int {
        var count = 0
        for pid in directoryEntries("/proc") ?? [] where pid.allSatisfy(\.isNumber) && Int(pid) != Int(getpid()) {
            count += openFileTargets(of: pid_t(pid)!).filter { $0 == path }.count
        }
        return count
    }
}

import Support
import TestSupport
import Testing
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// A session spins on its socket for a while before it sleeps, and only while its client is busy.
@Suite("Polling sessions")
struct PollingTests {
    /// The CPU time (user + system, in clock ticks) a process has used.
    static func cpuTicks(_ pid: pid_t) -> Int? {
        // From the state (field 3), utime and stime are fields 14 and 15.
        guard let fields = procStatFields("/proc/\(pid)/stat"), fields.count > 13,
              let user = Int(fields[11]), let system = Int(fields[12]) else { return nil }
        return user + system
    }

    /// After a burst of requests has opened its window, an idle session sleeps: the server burns
    /// nothing while its client is quiet, with polling on (the default).
    @Test func anIdleSessionCostsNoCPU() throws {
        let server = try ServerProcess()
        defer { _ = server.terminate() }
        let client = try VfioUserClient(path: server.path)
        try client.negotiate()
        for _ in 0..<2000 { _ = try client.read(.config, offset: 0, count: 4) }
        guard let before = Self.cpuTicks(server.pid) else { Issue.record("no /proc/\(server.pid)/stat"); return }
        usleep(1_000_000)
        guard let after = Self.cpuTicks(server.pid) else { Issue.record("no /proc/\(server.pid)/stat"); return }
        #expect(after - before <= 2, "\(after - before) ticks of CPU in an idle second")
        #expect(try client.read(.config, offset: 0, count: 4) == [0x48, 0x43, 0x53, 0x32], "the session still serves (vendor 4348, device 3253)")
    }

    @Test func aBadPolicyIsRefused() throws {
        let refused = try ServerProcess.run(["--poll", "20000", "--no-control", "--socket-path", "/tmp/unused.sock"])
        #expect(refused.status != 0)
        #expect(refused.errors.contains("--poll takes adaptive, off or a number of microseconds up to 10000"), "\(refused.errors)")
    }
}

import Support
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Who can reach the server: the owner of its socket files, over UNIX sockets only.
@Suite("Access")
struct AccessTests {
    static func mode(_ path: String) -> mode_t {
        var status = stat()
        return stat(path, &status) == 0 ? status.st_mode & 0o7777 : 0
    }

    @Test func everySocketIsOwnerOnlyByDefault() throws {
        let server = try ServerProcess()
        defer { _ = server.terminate() }
        #expect(Self.mode(server.path) == 0o600)
        #expect(Self.mode(server.controlPath) == 0o600)
        // And whatever the umask: the test runner's is not the server's concern.
        #expect(try Self.socketModes(umask: 0o000, nil) == [0o600, 0o600])
    }

    @Test func theModeIsConfigurableForEverySocket() throws {
        #expect(try Self.socketModes(umask: 0o022, "0660") == [0o660, 0o660])
        #expect(try Self.socketModes(umask: 0o077, "0666") == [0o666, 0o666])
        let refused = try ServerProcess.run(["--socket-mode", "0999", "--no-control", "--socket-path", "/tmp/unused.sock"])
        #expect(refused.status != 0)
        #expect(refused.errors.contains("--socket-mode takes an octal mode"), "\(refused.errors)")
    }

    /// The modes of the device and control sockets of a server started under `mask`, with
    /// `--socket-mode` when `mode` is given. (The umask is the test process's: the server inherits it.)
    static func socketModes(umask mask: mode_t, _ mode: String?) throws -> [mode_t] {
        let previous = umask(mask)
        defer { umask(previous) }
        let server = try ServerProcess(arguments: ["--type", "mtty-1"] + (mode.map { ["--socket-mode", $0] } ?? []))
        defer { _ = server.terminate() }
        for _ in 0..<100 where access(server.path, F_OK) != 0 { usleep(20_000) }
        return [Self.mode(server.path), Self.mode(server.controlPath)]
    }

    @Test func nothingListensOnANetworkAddress() throws {
        let server = try ServerProcess()
        defer { _ = server.terminate() }
        let sockets = Self.socketInodes(of: server.pid)
        #expect(sockets.count >= 2, "the device and control listeners")
        let unix = Self.inodes(in: "/proc/\(server.pid)/net/unix", column: 6)
        #expect(sockets.isSubset(of: unix), "every socket of the server is a UNIX socket")
        for table in ["tcp", "tcp6", "udp", "udp6", "raw", "raw6"] {
            let network = Self.inodes(in: "/proc/\(server.pid)/net/\(table)", column: 9)
            #expect(sockets.isDisjoint(with: network), "no \(table) socket")
        }
    }

    /// Inodes of the sockets among a process's fds ("socket:[inode]").
    static func socketInodes(of pid: pid_t) -> Set<String> {
        Set(openFileTargets(of: pid).filter { $0.hasPrefix("socket:[") }.map { String($0.dropFirst(8).dropLast()) })
    }

    /// The inode column of a /proc/net table.
    static func inodes(in table: String, column: Int) -> Set<String> {
        Set(readFile(table).split(separator: "\n").dropFirst().compactMap { line in
            let fields = line.split(separator: " ")
            return fields.count > column ? String(fields[column]) : nil
        })
    }
}

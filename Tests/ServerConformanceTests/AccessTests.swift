import Support
import TestSupport
import Testing
import VfioUserServer
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

    static func owner(_ path: String) -> (uid: uid_t, gid: gid_t)? {
        var status = stat()
        return stat(path, &status) == 0 ? (status.st_uid, status.st_gid) : nil
    }

    @Test(.enabled(if: getuid() == 0, "giving a file away needs root"))
    func theOwnerAndGroupAreConfigurableForEverySocket() throws {
        let nobody = try #require(getpwnam("nobody")).pointee.pw_uid
        let group = try #require(getgrnam("daemon")).pointee.gr_gid
        let server = try ServerProcess(arguments: ["--type", "mtty-1", "--socket-mode", "0660", "--socket-owner", "nobody", "--socket-group", "daemon"])
        defer { _ = server.terminate() }
        for _ in 0..<100 where access(server.path, F_OK) != 0 { usleep(20_000) }
        for path in [server.path, server.controlPath] {
            #expect(Self.owner(path)?.uid == nobody && Self.owner(path)?.gid == group, "\(path): \(String(describing: Self.owner(path)))")
            #expect(Self.mode(path) == 0o660)
        }
        // An instance made later, and one of the configuration file with its own group.
        let started = try ControlClient(path: server.controlPath).send(.start(type: "mtty-1", uuid: nil, parameters: [:]))
        let socket = try #require(started["instance"]?["socket"]?.stringValue)
        #expect(Self.owner(socket)?.uid == nobody && Self.owner(socket)?.gid == group)

        let directory = TemporaryDirectory()
        let uuid = "0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c31"
        try writeFile("{\"socket_mode\": \"0640\", \"devices\": [{\"uuid\": \"\(uuid)\", \"type\": \"mtty-1\", \"socket_group\": \"daemon\"}]}",
                      to: directory.path + "/devices.json")
        let configured = try ServerProcess(arguments: ["--config", directory.path + "/devices.json"], firstDevice: false)
        defer { _ = configured.terminate() }
        let path = configured.directory.path + "/\(uuid).sock"
        #expect(Self.owner(path)?.uid == 0 && Self.owner(path)?.gid == group, "the device's own group, the server's user")
        #expect(Self.mode(path) == 0o640, "the file's mode")
        #expect(Self.owner(configured.controlPath)?.gid == 0, "the control socket keeps the server's group")
    }

    @Test func anUnknownOwnerOrGroupIsRefused() throws {
        for (option, name) in [("--socket-owner", "no-such-user-here"), ("--socket-group", "no-such-group-here")] {
            let refused = try ServerProcess.run([option, name, "--no-control", "--socket-path", "/tmp/unused.sock"])
            #expect(refused.status != 0)
            #expect(refused.errors.contains("\(option): no \(option == "--socket-owner" ? "user" : "group") '\(name)' on this system"), "\(refused.errors)")
        }
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

import MttyDevice
import RegionEmulation
import Support
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VfioUserServer
#if canImport(Glibc)
import Glibc
#endif

@Suite("Session life cycle")
struct SessionLifecycleTests {
    @Test func disconnectResetsTheDeviceAndTheNextClientAttaches() throws {
        let server = try TestServer()
        do {
            let client = try server.attach()
            let eventfd = try OwnedFileDescriptor.eventfd()
            try client.setIRQs(.intx, [.dataEventfd, .actionTrigger], fds: [eventfd.descriptor])
            try client.write(.bar0, offset: 7, value: UInt8(0xEE))
            try client.write(.config, offset: 0x3C, value: UInt8(10))
            #expect(server.device.function.interrupts.assignedEventfdCount == 1)
        }
        server.waitDetached()
        #expect(server.device.function.interrupts.assignedEventfdCount == 0)
        let next = try server.attach()
        #expect(try next.read(.bar0, offset: 7, as: UInt8.self) == 0)
        #expect(try next.read(.config, offset: 0x3C, as: UInt8.self) == 0)
        #expect(server.endpoint.sessionsServed == 2)
    }

    @Test func aSecondClientIsRefusedWithEBUSYAndTheFirstIsUndisturbed() throws {
        let server = try TestServer()
        let first = try server.attach()
        try first.write(.bar0, offset: 7, value: UInt8(0x42))
        let second = try server.connect()
        expectErrno(.resourceBusy) { try second.negotiate() }
        #expect(connectionClosed(second))
        #expect(try first.read(.bar0, offset: 7, as: UInt8.self) == 0x42)
        #expect(server.endpoint.clientsRefused == 1)
    }

    /// A client that closes and connects again at once (as QEMU does after a failed attach)
    /// arrives before its old session has read the hang-up: it waits for that
    /// session to end and is served, not refused. Half the old sessions end on a message cut short.
    @Test func aClientThatReconnectsAtOnceIsServedNotRefused() throws {
        let server = try TestServer()
        let cut = rawMessage(id: 9, command: Command.regionRead.rawValue, payload: le(UInt64(0)) + le(UInt32(7)) + le(UInt32(4)))
        for cycle in 0..<200 {
            let client = try server.connect()
            try client.negotiate()
            #expect(try client.deviceInfo().numRegions == 9, "cycle \(cycle)")
            if cycle % 2 == 1 { _ = cut.prefix(1 + cycle % 31).withUnsafeBytes { write(client.socket.rawValue, $0.baseAddress, $0.count) } }
            // The client hangs up and drops its socket: the next connect races the old session's end.
            // The hang-up is a shutdown before the close: the tests beside this one spawn servers, and
            // a child holds a copy of every fd of this process until its exec, so a close alone is not
            // always the last reference (the server then rightly sees a client still connected).
            UnixSocket.shutdown(client.socket)
        }
        server.waitDetached()
        #expect(server.endpoint.clientsRefused == 0)
        #expect(server.endpoint.sessionsServed == 200)
    }

    @Test func socketFileIsPrivateAndRemovedOnStop() throws {
        let directory = TemporaryDirectory()
        let path = directory.path + "/s.sock"
        let endpoint = try DeviceEndpoint(path: path, device: EmulatedDevice(model: MttyDevice(ports: 1)),
                                          configuration: ServerConfiguration(), name: "t")
        var status = stat()
        #expect(stat(path, &status) == 0)
        #expect(status.st_mode & 0o777 == 0o600)
        try endpoint.start()
        endpoint.stop()
        #expect(access(path, F_OK) != 0)
    }

    /// The file appears already listening: renamed into place (IN_MOVED_TO), never created by
    /// bind (IN_CREATE), when a client waiting for it would be refused until `listen`; nothing else
    /// is left in the directory, and the mode is the one asked for.
    @Test func theSocketFileAppearsOnlyOnceListening() throws {
        let directory = TemporaryDirectory()
        let watch = inotify_init1(CInt(IN_NONBLOCK | IN_CLOEXEC))
        #expect(watch >= 0)
        defer { close(watch) }
        #expect(inotify_add_watch(watch, directory.path, UInt32(IN_CREATE | IN_MOVED_TO)) >= 0)
        let listener = try UnixSocket.listen(path: directory.path + "/s.sock")
        var events: [(mask: UInt32, name: String)] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        let length = buffer.withUnsafeMutableBytes { read(watch, $0.baseAddress, $0.count) }
        var offset = 0
        while offset + MemoryLayout<inotify_event>.size <= max(length, 0) {
            let (mask, nameLength) = buffer.withUnsafeBytes { raw in
                let event = raw.loadUnaligned(fromByteOffset: offset, as: inotify_event.self)
                return (event.mask, Int(event.len))
            }
            let start = offset + MemoryLayout<inotify_event>.size
            let name = String(decoding: buffer[start ..< start + nameLength].prefix { $0 != 0 }, as: UTF8.self)
            events.append((mask, name))
            offset = start + nameLength
        }
        #expect(events.contains { $0.name == "s.sock" && $0.mask & UInt32(IN_MOVED_TO) != 0 }, "\(events)")
        #expect(!events.contains { $0.name == "s.sock" && $0.mask & UInt32(IN_CREATE) != 0 }, "\(events)")
        var status = stat()
        #expect(stat(directory.path + "/s.sock", &status) == 0 && status.st_mode & 0o777 == 0o600)
        #expect(directory.entries == ["s.sock"], "no provisional name left: \(directory.entries)")
        _ = try UnixSocket.connect(path: directory.path + "/s.sock")
        _ = listener
    }

    /// Where no provisional name fits in `sun_path` beside the path (a directory name near the
    /// limit), the socket is bound at the path itself: it still listens there with the mode asked
    /// for, and nothing else is left beside it.
    @Test func aPathWithNoRoomForAProvisionalNameIsBoundInPlace() throws {
        let directory = TemporaryDirectory()
        let long = directory.path + "/" + String(repeating: "d", count: 75)
        #expect(mkdir(long, 0o700) == 0)
        let path = long + "/s"
        defer {
            unlink(path)
            rmdir(long)
            _ = directory
        }
        // The path fits in sun_path (108 bytes with its NUL); ".vfio-user-<pid>-<fd>" beside it does not.
        #expect(path.utf8.count < 108 && (long + "/.vfio-user-0-0").utf8.count >= 108)
        let listener = try UnixSocket.listen(path: path)
        var status = stat()
        #expect(stat(path, &status) == 0 && status.st_mode & S_IFMT == S_IFSOCK && status.st_mode & 0o777 == 0o600)
        #expect(directoryEntries(long) == ["s"])
        _ = try UnixSocket.connect(path: path)
        _ = listener
    }

    @Test func aStaleSocketIsReplacedButALiveOneIsNot() throws {
        let directory = TemporaryDirectory()
        let path = directory.path + "/s.sock"
        do { _ = try UnixSocket.listen(path: path) } // listener closed: the file stays, stale
        let endpoint = try DeviceEndpoint(path: path, device: EmulatedDevice(model: MttyDevice(ports: 1)),
                                          configuration: ServerConfiguration(), name: "t")
        try endpoint.start()
        #expect(throws: TransportError.self) {
            try DeviceEndpoint(path: path, device: EmulatedDevice(model: MttyDevice(ports: 1)), configuration: ServerConfiguration(), name: "u")
        }
        endpoint.stop()
    }

    @Test func fdsSentWithAnyMessageAreClosedAndReconnectLeavesNoneBehind() throws {
        let server = try ServerProcess()
        let baseline = server.openFDCount
        #expect(baseline > 0)
        for _ in 0..<3 {
            let client = try VfioUserClient(path: server.path)
            try client.negotiate()
            let eventfds = try (0..<4).map { _ in try OwnedFileDescriptor.eventfd() }
            try client.setIRQs(.intx, [.dataEventfd, .actionTrigger], fds: [eventfds[0].descriptor])
            try client.setIRQs(.err, [.dataEventfd, .actionTrigger], fds: [eventfds[1].descriptor])
            expectErrno(.invalidArgument) {
                try client.request(.regionRead, payload: le(UInt64(0)) + le(UInt32(7)) + le(UInt32(2)), fds: [eventfds[2].descriptor])
            }
            expectErrno(.invalidArgument) {
                try client.setIRQs(.intx, [.dataNone, .actionUnmask], fds: [eventfds[3].descriptor])
            }
            #expect(server.openFDCount == baseline + 3, "the connection and the two assigned eventfds, nothing else")
            UnixSocket.shutdown(client.socket)
            #expect(server.waitForFDCount(baseline) == baseline, "all closed once the client is gone")
        }
        #expect(server.terminate() == 0)
    }
}

@Suite("Inherited sockets (--fd)")
struct InheritedSocketTests {
    @Test func anInheritedListeningSocketServesOneClientAfterAnother() throws {
        let directory = TemporaryDirectory()
        let path = directory.path + "/parent.sock"
        let listener = try UnixSocket.listen(path: path)
        let server = try ServerProcess(inheriting: listener)
        for _ in 0..<2 {
            let client = try VfioUserClient(path: path)
            try client.negotiate()
            #expect(try client.deviceInfo().numRegions == 9)
            UnixSocket.shutdown(client.socket)
            usleep(100_000)
        }
        #expect(server.terminate() == 0)
    }

    /// The spec's backend convention: the socket handed over may be a connected one. It is one
    /// session, not a listener: nothing accepts on it, so nothing complains about accepting.
    @Test func anInheritedConnectedSocketIsServedAsTheOnlyClientThenTheServerExits() throws {
        let (mine, theirs) = try UnixSocket.pair()
        let server = try ServerProcess(inheriting: theirs)
        let client = VfioUserClient(socket: mine)
        try client.negotiate()
        #expect(try client.read(.config, offset: 0, as: UInt32.self) == 0x3253_4348)
        usleep(300_000) // a session of some length: an acceptor on this socket would have failed 30 times
        #expect(try client.read(.config, offset: 0, as: UInt32.self) == 0x3253_4348)
        #expect(!server.errors.contains("accept"), "\(server.errors)")
        #expect(!server.errors.contains("warning"), "\(server.errors)")
        UnixSocket.shutdown(mine)
        let status = server.waitForExit(milliseconds: 5000)
        #expect(status == 0, "the server leaves, cleanly, when its only client does")
        #expect(server.errors.contains("has gone: stopping"), "\(server.errors)")
    }
}

import CLinux
import Support
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// One thread that waits on many eventfds (epoll) and runs a callback when one is signalled.
///
/// Used for eventfds the *client* signals towards the server: INTx's unmask ("resample") eventfd,
/// which KVM writes on EOI, and virtio doorbells. The callback runs on the watcher thread after the
/// counter has been read, so it must be short and must not block.
public final class EventfdWatcher: Sendable {
    private static let instance = Locked<EventfdWatcher?>(nil)

    /// The process's watcher, made on first use. Throws when no fd or thread is left to make it
    /// (the request that needed it fails with that errno; a later one tries again).
    public static func shared() throws(Errno) -> EventfdWatcher {
        try instance.withLock { (watcher: inout EventfdWatcher?) throws(Errno) -> EventfdWatcher in
            if let watcher { return watcher }
            let made = try EventfdWatcher()
            watcher = made
            return made
        }
    }

    private let epoll: OwnedFileDescriptor
    private let callbacks = Locked<[CInt: Registration]>([:])

    private struct Registration {
        let eventfd: OwnedFileDescriptor
        let action: @Sendable () -> Void
    }

    private init() throws(Errno) {
        let fd = epoll_create1(CInt(EPOLL_CLOEXEC))
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        epoll = OwnedFileDescriptor(taking: FileDescriptor(rawValue: fd))
        try spawnThread(name: "eventfd-watch") { [unowned self] in self.run(fd) }
    }

    /// Watches `eventfd` until `unwatch` (or until the fd is replaced by another registration).
    /// Throws epoll's error (ENOMEM, or ENOSPC past the user's watch limit).
    public func watch(_ eventfd: OwnedFileDescriptor, _ action: @escaping @Sendable () -> Void) throws(Errno) {
        let fd = eventfd.rawValue
        callbacks.withLock { $0[fd] = Registration(eventfd: eventfd, action: action) }
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.fd = fd
        if epoll_ctl(epoll.rawValue, EPOLL_CTL_ADD, fd, &event) != 0 {
            let added = errno
            if added == EEXIST && epoll_ctl(epoll.rawValue, EPOLL_CTL_MOD, fd, &event) == 0 { return }
            callbacks.withLock { registrations in
                if registrations[fd]?.eventfd === eventfd { registrations[fd] = nil }
            }
            throw Errno(rawValue: added == EEXIST ? errno : added)
        }
    }

    /// Stops watching `eventfd` (a wake-up already being handled may still call its callback).
    public func unwatch(_ eventfd: OwnedFileDescriptor) {
        let fd = eventfd.rawValue
        var event = epoll_event()
        _ = epoll_ctl(epoll.rawValue, EPOLL_CTL_DEL, fd, &event)
        callbacks.withLock { registrations in
            if registrations[fd]?.eventfd === eventfd { registrations[fd] = nil }
        }
    }

    private func run(_ epoll: CInt) {
        var events = [epoll_event](repeating: epoll_event(), count: 32)
        while true {
            let ready = epoll_wait(epoll, &events, CInt(events.count), -1)
            if ready < 0 { continue } // EINTR
            for event in events.prefix(Int(ready)) {
                let fd = event.data.fd
                guard let registration = callbacks.withLock({ $0[fd] }) else { continue }
                _ = try? registration.eventfd.readEventfd()
                registration.action()
            }
        }
    }
}

import CLinux
import Locking
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
    public static let shared = EventfdWatcher()

    private let epoll: CInt
    private let callbacks = Locked<[CInt: Registration]>([:])

    private struct Registration {
        let eventfd: OwnedFileDescriptor
        let action: @Sendable () -> Void
    }

    private init() {
        epoll = epoll_create1(CInt(EPOLL_CLOEXEC))
        precondition(epoll >= 0, "epoll_create1 failed")
        let fd = epoll
        spawnThread(name: "eventfd-watch") { [unowned self] in self.run(fd) }
    }

    /// Watches `eventfd` until `unwatch` (or until the fd is replaced by another registration).
    public func watch(_ eventfd: OwnedFileDescriptor, _ action: @escaping @Sendable () -> Void) {
        let fd = eventfd.rawValue
        callbacks.withLock { $0[fd] = Registration(eventfd: eventfd, action: action) }
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.fd = fd
        if epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) != 0 {
            _ = epoll_ctl(epoll, EPOLL_CTL_MOD, fd, &event)
        }
    }

    public func unwatch(_ eventfd: OwnedFileDescriptor) {
        let fd = eventfd.rawValue
        var event = epoll_event()
        _ = epoll_ctl(epoll, EPOLL_CTL_DEL, fd, &event)
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

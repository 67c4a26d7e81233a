import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Starts a detached POSIX thread running `body`. The server's sessions, acceptors and device
/// datapaths are plain threads: a blocking `recvmsg` per session is the shortest path from the
/// socket to the device, and no executor sits between them.
///
/// Throws pthread_create's error (EAGAIN at a thread or memory limit): the caller refuses the one
/// request that needed the thread, and the server goes on.
public func spawnThread(name: String, _ body: @escaping @Sendable () -> Void) throws(Errno) {
    final class Box: @unchecked Sendable { // Handed to exactly one new thread, which consumes it.
        let body: @Sendable () -> Void
        let name: String
        init(_ body: @escaping @Sendable () -> Void, _ name: String) {
            self.body = body
            self.name = name
        }
    }
    let box = Unmanaged.passRetained(Box(body, name)).toOpaque()
    var thread = pthread_t()
    var attributes = pthread_attr_t()
    pthread_attr_init(&attributes)
    pthread_attr_setdetachstate(&attributes, CInt(PTHREAD_CREATE_DETACHED))
    // Sessions and acceptors need little stack; 512 KiB keeps many instances cheap.
    pthread_attr_setstacksize(&attributes, 512 * 1024)
    let result = pthread_create(&thread, &attributes, { raw in
        let box = Unmanaged<AnyObject>.fromOpaque(raw!).takeRetainedValue() as! Box
        String(box.name.prefix(15)).withCString { clinux_set_thread_name($0) }
        box.body()
        return nil
    }, box)
    pthread_attr_destroy(&attributes)
    guard result == 0 else {
        Unmanaged<Box>.fromOpaque(box).release()
        throw Errno(rawValue: result)
    }
}

/// A mutex with a condition variable, for the few places a thread must sleep until another thread
/// changes something (an unmap waiting for pins, a device thread waiting for a DMA reply).
public final class ConditionLock: @unchecked Sendable { // pthread objects are used only through the methods below.
    @usableFromInline let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    /// A mutex and a condition variable on the monotonic clock.
    public init() {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    /// Runs `body` with the mutex held. Inlinable, so a caller in another module (a DMA
    /// translation locks twice) gets a specialised copy rather than the generic entry point, with
    /// its indirect result and closure context.
    @inlinable
    public func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Waits (lock held) until signalled or `milliseconds` pass; returns false on timeout.
    @discardableResult
    public func wait(milliseconds: Int? = nil) -> Bool {
        guard let milliseconds else {
            pthread_cond_wait(condition, mutex)
            return true
        }
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let nanoseconds = Int(deadline.tv_nsec) + (milliseconds % 1000) * 1_000_000
        deadline.tv_sec += milliseconds / 1000 + nanoseconds / 1_000_000_000
        deadline.tv_nsec = nanoseconds % 1_000_000_000
        return pthread_cond_timedwait(condition, mutex, &deadline) == 0
    }

    /// Wakes every waiter (lock held).
    public func broadcast() { pthread_cond_broadcast(condition) }
}

/// Monotonic time in nanoseconds.
public func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

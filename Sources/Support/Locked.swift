import CLinux
import Synchronization

/// A value behind a lock: `Synchronization.Mutex` with one addition, so that the test suite can run
/// under ThreadSanitizer.
///
/// On Linux, `Mutex` locks with atomics and futex calls inside the (uninstrumented) standard library,
/// so ThreadSanitizer never sees the lock taken and reports every access it guards as a race. Built
/// with `-DTSAN` (run-tests does, for its ThreadSanitizer run), each critical section also tells
/// ThreadSanitizer it acquires and releases a token owned by this lock, which is exactly the
/// happens-before edge the mutex provides. In every other build this is `Mutex`, nothing more.
public struct Locked<Value: ~Copyable>: ~Copyable {
    @usableFromInline let mutex: Mutex<Value>
    #if TSAN
    @usableFromInline let token = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 1)
    deinit { token.deallocate() }
    #endif

    /// A lock around `initialValue`.
    @inlinable
    public init(_ initialValue: consuming sending Value) {
        mutex = Mutex(initialValue)
    }

    /// Runs `body` with the value, the lock held.
    @inlinable
    public borrowing func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        #if TSAN
        return try mutex.withLock { (value: inout sending Value) throws(E) -> sending Result in
            clinux_tsan_acquire(token)
            defer { clinux_tsan_release(token) }
            return try body(&value)
        }
        #else
        return try mutex.withLock(body)
        #endif
    }
}

// Safe for the same reason Mutex is: the value is only reached inside withLock, under the lock; the
// ThreadSanitizer token is written once, at init.
extension Locked: @unchecked Sendable where Value: ~Copyable {}

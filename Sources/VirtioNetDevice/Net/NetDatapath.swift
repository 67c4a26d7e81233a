import CLinux
import RegionEmulation
import Support
import Synchronization
import SystemPackage
import VfioUserProto
#if canImport(Glibc)
import Glibc
#endif

/// Counters of a virtio-net device.
public struct NetStatistics: Sendable, Equatable {
    public var transmittedFrames = 0
    public var transmittedBytes = 0
    public var receivedFrames = 0
    public var receivedBytes = 0
    /// Frames the RX filter dropped.
    public var filteredFrames = 0
    /// Frames dropped because the guest's buffers were too small, or the backend refused them.
    public var droppedFrames = 0
    /// Times the backend was full and transmit waited for room (`NetSendOutcome.full`).
    public var transmitStalls = 0
    public var interrupts = 0
    public var kicks = 0
}

/// Where a paused datapath's rings stand, and a received frame still waiting for guest buffers:
/// everything in flight when a virtio-net device is migrated.
struct DatapathSnapshot: Sendable, Equatable {
    struct Ring: Sendable, Equatable {
        var lastAvailable: UInt16
        var usedIndex: UInt16
    }

    /// Receive, transmit, control; nil for a queue the driver did not set up.
    var queues: [Ring?]
    var pendingFrame: [UInt8]
}

/// The datapath of a virtio-net device, on its own thread: it takes frames off the transmit queue
/// into the backend and from the backend into the receive queue, and serves the control queue.
///
/// The session thread only records kicks (a bit per queue, plus a wake-up when the thread sleeps)
/// and starts and stops the datapath through an epoch. The thread never holds a lock while it
/// touches guest memory, and checks the epoch before every access.
///
/// Starting does not wait. Stopping waits for the thread to acknowledge, keeping the socket
/// serviced (`DMASpace.waitServicing`), but only briefly: with fd-less guest memory the thread may
/// be inside a DMA message the client can only answer after the session replied to the very
/// request (QEMU holds its big lock while a vCPU waits for that reply). The thread then stops at its
/// next access, so at most the one DMA message already on the wire completes after the reset.
final class NetDatapath: @unchecked Sendable { // Cross-thread state is atomic or under `lock`; the rest belongs to the thread.
    let backend: NetBackend
    let transport: VirtioPCITransport
    weak var device: VirtioNetDevice?
    /// The device's DMA space and this thread's translation cache, set once by `attach`, which runs
    /// on another thread after this one started: read under the lock (ThreadSanitizer caught the
    /// unsynchronised version). The thread keeps its own copy of the cache, taken at each epoch.
    let attached = Locked<(dma: DMASpace, cache: DMATranslationCache)?>(nil)
    var dma: DMASpace? { attached.withLock { $0?.dma } }
    /// Pinned mappings for this thread's accesses (the thread's copy of `attached`'s).
    var cache: DMATranslationCache?

    let wakeup: OwnedFileDescriptor
    let kicks = Atomic<UInt32>(0)
    let sleeping = Atomic<Bool>(false)
    let requestedEpoch = Atomic<Int>(0)
    let acknowledgedEpoch = Atomic<Int>(0)
    let terminated = Atomic<Bool>(false)
    let lock = ConditionLock()
    var requestedFeatures: VirtioFeatures? // under lock: what to run with (nil: stopped)
    var requestedRestore: DatapathSnapshot? // under lock: ring positions to resume at (migration)
    let counters = Locked(NetStatistics())
    /// Migration's pause: the thread stops at its next safe point (every used entry published) and
    /// records where the rings stand; `pausedGeneration` says it did.
    let pauseRequested = Atomic<Bool>(false)
    let pauseGeneration = Atomic<Int>(0)
    let pausedGeneration = Atomic<Int>(0)
    let pausedSnapshot = Locked<DatapathSnapshot?>(nil)

    // Owned by the datapath thread, which alone touches them: the runtime's exclusivity checks (a
    // thread-local access set, on every packet) would guard against nothing.
    @exclusivity(unchecked) var epoch = 0
    @exclusivity(unchecked) var features: VirtioFeatures = []
    @exclusivity(unchecked) var memory: GuestMemory?
    @exclusivity(unchecked) var rx: SplitVirtqueue?
    @exclusivity(unchecked) var tx: SplitVirtqueue?
    @exclusivity(unchecked) var ctrl: SplitVirtqueue?
    @exclusivity(unchecked) var broken = false
    /// Chains reused for every packet (their arrays keep their capacity: no allocation per packet).
    @exclusivity(unchecked) var transmitChain = DescriptorChain(head: 0)
    @exclusivity(unchecked) var receiveChains = [DescriptorChain](repeating: DescriptorChain(head: 0), count: 64)
    @exclusivity(unchecked) var controlChain = DescriptorChain(head: 0)
    /// The RX filter as last read from the device, and its version.
    @exclusivity(unchecked) var filter = RxFilter()
    @exclusivity(unchecked) var mac: [UInt8] = []
    @exclusivity(unchecked) var filterVersion = -1
    let transmitBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536 + 4096, alignment: 64)
    let receiveBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536 + 4096, alignment: 64)
    /// Bytes of a received frame (with its header) waiting for guest buffers; 0 when none.
    @exclusivity(unchecked) var pendingFrameLength = 0
    /// The receive queue had no buffers at the last look: wait for the driver's kick, not for input
    /// (a backend with frames waiting stays readable, and polling it would spin).
    @exclusivity(unchecked) var receiveStarved = false
    /// The backend refused a frame as full (`NetSendOutcome.full`): transmit waits for room.
    @exclusivity(unchecked) var transmitBlocked = false
    /// The transmit ring was empty after the device asked for kicks: the driver kicks when it adds
    /// a frame, so the ring is not looked at until then (with memory reached by messages, every
    /// look at it costs two round trips).
    @exclusivity(unchecked) var transmitIdle = false

    /// Throws when the process is out of fds (the wake-up eventfd) or threads.
    init(backend: NetBackend, transport: VirtioPCITransport) throws(Errno) {
        self.backend = backend
        self.transport = transport
        wakeup = try OwnedFileDescriptor.eventfd(nonBlocking: true)
        try spawnThread(name: "virtio-net") { [self] in run() }
    }

    deinit {
        transmitBuffer.deallocate()
        receiveBuffer.deallocate()
    }

    func attach(dma: DMASpace) {
        let cache = DMATranslationCache(dma: dma)
        attached.withLock { $0 = (dma, cache) }
        // The kernel's DMA-unmap notifier: give back the pins on an unmapped range at the next safe point.
        // Nothing but a weak self: the space keeps its observers and the cache keeps the space (a
        // strong cache here is a cycle), and a weak reference to the cache would give it a side
        // table, which sends every retain and release of it on the datapath down the slow path.
        dma.onUnmap { [weak self] _, _ in
            guard let self else { return }
            attached.withLock { $0?.cache }?.requestRelease()
            try? wakeup.signalEventfd()
        }
    }

    var statistics: NetStatistics { counters.withLock { $0 } }

    // MARK: Control from the session thread

    func kick(_ queue: Int) {
        kicks.bitwiseOr(1 << UInt32(queue), ordering: .sequentiallyConsistent)
        counters.withLock { $0.kicks += 1 }
        if sleeping.load(ordering: .sequentiallyConsistent) { try? wakeup.signalEventfd() }
    }

    /// DRIVER_OK: run with the negotiated features (the thread picks them up; nothing waits).
    /// `restoring` resumes the rings where a migrated device left them.
    func start(features: VirtioFeatures, restoring: DatapathSnapshot? = nil) {
        _ = changeEpoch(features, restoring: restoring)
    }

    // MARK: Migration

    /// Asks the thread to stop at its next safe point; waits for it briefly (see `stop`: with
    /// message-mode DMA it may be inside a DMA message the client answers only later).
    func pause() {
        let generation = lock.withLock { () -> Int in
            pauseRequested.store(true, ordering: .sequentiallyConsistent)
            return pauseGeneration.add(1, ordering: .sequentiallyConsistent).newValue
        }
        try? wakeup.signalEventfd()
        _ = waitPaused(generation, milliseconds: 100)
    }

    /// Where the rings stand once the thread has paused; nil if it did not within `milliseconds`.
    func pausedState(milliseconds: Int) -> DatapathSnapshot? {
        let generation = pauseGeneration.load(ordering: .sequentiallyConsistent)
        guard pauseRequested.load(ordering: .sequentiallyConsistent), waitPaused(generation, milliseconds: milliseconds) else { return nil }
        return pausedSnapshot.withLock { $0 }
    }

    func waitPaused(_ generation: Int, milliseconds: Int) -> Bool {
        let done = { self.pausedGeneration.load(ordering: .sequentiallyConsistent) >= generation }
        if let dma { return dma.waitServicing(until: done, milliseconds: milliseconds) }
        return pollUntil(done, milliseconds: milliseconds)
    }

    func resume() {
        pauseRequested.store(false, ordering: .sequentiallyConsistent)
        try? wakeup.signalEventfd()
    }

    /// Reset: stop touching the rings. Returns once the thread let go of them, or after 100 ms
    /// when it is inside a DMA message (see the type's comment).
    func stop() {
        let target = changeEpoch(nil)
        let done = { self.acknowledgedEpoch.load(ordering: .sequentiallyConsistent) >= target }
        if let dma { _ = dma.waitServicing(until: done, milliseconds: 100) } else { _ = pollUntil(done, milliseconds: 100) }
    }

    func changeEpoch(_ features: VirtioFeatures?, restoring: DatapathSnapshot? = nil) -> Int {
        let target = lock.withLock { () -> Int in
            requestedFeatures = features
            requestedRestore = restoring
            return requestedEpoch.add(1, ordering: .sequentiallyConsistent).newValue
        }
        try? wakeup.signalEventfd()
        return target
    }

    /// Whether a start or stop is waiting to be picked up: every guest-memory access checks it.
    var epochChanged: Bool {
        requestedEpoch.load(ordering: .sequentiallyConsistent) != acknowledgedEpoch.load(ordering: .sequentiallyConsistent)
    }

    func terminate() {
        terminated.store(true, ordering: .sequentiallyConsistent)
        try? wakeup.signalEventfd()
    }

    // MARK: The thread

    func run() {
        while !terminated.load(ordering: .sequentiallyConsistent) {
            cache?.releaseIfRequested()
            applyEpoch()
            if pauseRequested.load(ordering: .sequentiallyConsistent) {
                acknowledgePause()
                continue
            }
            var worked = false
            if !broken, let memory {
                do {
                    let kicked = kicks.exchange(0, ordering: .sequentiallyConsistent)
                    if ctrl != nil, kicked & (1 << VirtioNetDevice.controlQueue) != 0 { try serveControl(memory) }
                    if !transmitIdle || kicked & (1 << VirtioNetDevice.transmitQueue) != 0 { worked = try transmit(memory) || worked }
                    worked = try receive(memory) || worked
                } catch .stopped {
                    continue // a start or stop is pending: apply it
                } catch {
                    broken = true
                    transport.setNeedsReset()
                }
            }
            if !worked { sleep() }
        }
    }

    /// Picks up a start or stop the session asked for: drops the queues, acknowledges (from here on
    /// accesses are allowed again), then sets up the new ones.
    func applyEpoch() {
        let requested = requestedEpoch.load(ordering: .sequentiallyConsistent)
        guard requested != epoch else { return }
        let (wanted, restore) = lock.withLock { (requestedFeatures, requestedRestore) }
        rx = nil
        tx = nil
        ctrl = nil
        memory = nil
        broken = false
        pendingFrameLength = 0
        receiveStarved = false
        transmitBlocked = false
        transmitIdle = false
        cache?.releaseAll() // no rings in use: an unmap need not wait for us
        epoch = requested
        acknowledgedEpoch.store(requested, ordering: .sequentiallyConsistent)
        guard let wanted, let attachment = attached.withLock({ $0 }) else { return }
        let dma = attachment.dma
        cache = attachment.cache
        features = wanted
        // unowned(unsafe): this memory lives in this thread's run loop, which runs inside a method of
        // self, so self outlives it; a checked reference would retain and release self on every
        // guest-memory access, through the slow path (self has weak references, so a side table).
        let memory = GuestMemory(dma: dma, cache: attachment.cache) { [unowned(unsafe) self] in epochChanged }
        self.memory = memory
        do throws(VirtqueueError) {
            rx = try queue(VirtioNetDevice.receiveQueue)
            tx = try queue(VirtioNetDevice.transmitQueue)
            if wanted.contains(.netControlQueue) { ctrl = try queue(VirtioNetDevice.controlQueue) }
            if let restore { self.restore(restore) }
            try rx?.setNotifications(true, memory)
            try tx?.setNotifications(true, memory)
            try ctrl?.setNotifications(true, memory)
        } catch .stopped {
            return // superseded already; the next turn applies it
        } catch {
            broken = true
            transport.setNeedsReset()
        }
    }

    func queue(_ index: Int) throws(VirtqueueError) -> SplitVirtqueue? {
        guard let configuration = transport.queueConfiguration(index), configuration.enabled else { return nil }
        return try SplitVirtqueue(size: configuration.size, descriptorTable: configuration.descriptorTable,
                                  availableRing: configuration.availableRing, usedRing: configuration.usedRing,
                                  eventIndex: features.contains(.ringEventIndex), indirect: features.contains(.ringIndirectDescriptors))
    }

    /// Paused for migration: every used entry is published (pauses are taken only between
    /// batches), so the rings' positions and a frame still waiting for buffers are the whole
    /// in-flight state. Records them, then sleeps until resumed, restarted or terminated.
    func acknowledgePause() {
        let generation = pauseGeneration.load(ordering: .sequentiallyConsistent)
        if pausedGeneration.load(ordering: .sequentiallyConsistent) < generation {
            let snapshot = DatapathSnapshot(
                queues: [rx, tx, ctrl].map { $0.map { DatapathSnapshot.Ring(lastAvailable: $0.lastAvailable, usedIndex: $0.usedIndex) } },
                pendingFrame: Array(receiveBuffer[..<pendingFrameLength]))
            pausedSnapshot.withLock { $0 = snapshot }
            cache?.releaseAll() // an unmap while stopped need not wait for us
            pausedGeneration.store(generation, ordering: .sequentiallyConsistent)
        }
        sleeping.store(true, ordering: .sequentiallyConsistent)
        defer { sleeping.store(false, ordering: .sequentiallyConsistent) }
        guard pauseRequested.load(ordering: .sequentiallyConsistent), requestedEpoch.load(ordering: .sequentiallyConsistent) == epoch,
              !terminated.load(ordering: .sequentiallyConsistent) else { return }
        var fds = [pollfd(fd: wakeup.rawValue, events: Int16(POLLIN), revents: 0)]
        _ = poll(&fds, 1, -1)
        _ = try? wakeup.readEventfd()
    }

    /// Puts the rings where a migrated device had them.
    func restore(_ snapshot: DatapathSnapshot) {
        for (index, ring) in snapshot.queues.enumerated() {
            guard let ring else { continue }
            switch index {
            case VirtioNetDevice.receiveQueue: rx?.restore(lastAvailable: ring.lastAvailable, usedIndex: ring.usedIndex)
            case VirtioNetDevice.transmitQueue: tx?.restore(lastAvailable: ring.lastAvailable, usedIndex: ring.usedIndex)
            case VirtioNetDevice.controlQueue: ctrl?.restore(lastAvailable: ring.lastAvailable, usedIndex: ring.usedIndex)
            default: break
            }
        }
        let length = min(snapshot.pendingFrame.count, receiveBuffer.count)
        snapshot.pendingFrame.withUnsafeBytes { receiveBuffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[..<length])) }
        pendingFrameLength = length
    }

    /// Waits for a kick, a start/stop, or (when the receive queue can take a frame) backend input.
    func sleep() {
        sleeping.store(true, ordering: .sequentiallyConsistent)
        defer { sleeping.store(false, ordering: .sequentiallyConsistent) }
        // A kick that came between our last look and `sleeping` going true must not be slept through.
        if kicks.load(ordering: .sequentiallyConsistent) != 0 || requestedEpoch.load(ordering: .sequentiallyConsistent) != epoch { return }
        var fds = [pollfd(fd: wakeup.rawValue, events: Int16(POLLIN), revents: 0)]
        // Input is wanted only when the receive queue can take it (a frame already waiting for
        // buffers, or no buffers at all, means waiting for the driver's kick instead); output room
        // only when the backend refused a frame as full.
        let wantInput = rx != nil && !broken && pendingFrameLength == 0 && !receiveStarved
        let wantOutput = tx != nil && !broken && transmitBlocked
        let events = (wantInput ? POLLIN : 0) | (wantOutput ? POLLOUT : 0)
        if events != 0, let backendFD = backend.pollDescriptor { fds.append(pollfd(fd: backendFD, events: Int16(events), revents: 0)) }
        if events != 0 && backend.pollDescriptor == nil { return } // a source always has input, a sink room
        _ = poll(&fds, nfds_t(fds.count), -1)
        _ = try? wakeup.readEventfd()
    }

    func signal(_ queue: Int) {
        counters.withLock { $0.interrupts += 1 }
        transport.signalQueue(queue)
    }
}

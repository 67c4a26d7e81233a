import CLinux
import Locking
import SystemPackage
import RegionEmulation
import Synchronization
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
    private let attached = Locked<(dma: DMASpace, cache: DMATranslationCache)?>(nil)
    private var dma: DMASpace? { attached.withLock { $0?.dma } }
    /// Pinned mappings for this thread's accesses (the thread's copy of `attached`'s).
    private var cache: DMATranslationCache?

    private let wakeup: OwnedFileDescriptor
    private let kicks = Atomic<UInt32>(0)
    private let sleeping = Atomic<Bool>(false)
    private let requestedEpoch = Atomic<Int>(0)
    private let acknowledgedEpoch = Atomic<Int>(0)
    private let terminated = Atomic<Bool>(false)
    private let lock = ConditionLock()
    private var requestedFeatures: VirtioFeatures? // under lock: what to run with (nil: stopped)
    private var requestedRestore: DatapathSnapshot? // under lock: ring positions to resume at (migration)
    private let counters = Locked(NetStatistics())
    /// Migration's pause: the thread stops at its next safe point (every used entry published) and
    /// records where the rings stand; `pausedGeneration` says it did.
    private let pauseRequested = Atomic<Bool>(false)
    private let pauseGeneration = Atomic<Int>(0)
    private let pausedGeneration = Atomic<Int>(0)
    private let pausedSnapshot = Locked<DatapathSnapshot?>(nil)

    // Owned by the datapath thread.
    private var epoch = 0
    private var features: VirtioFeatures = []
    private var memory: GuestMemory?
    private var rx: SplitVirtqueue?
    private var tx: SplitVirtqueue?
    private var ctrl: SplitVirtqueue?
    private var broken = false
    /// Chains reused for every packet (their arrays keep their capacity: no allocation per packet).
    private var transmitChain = DescriptorChain(head: 0)
    private var receiveChains = [DescriptorChain](repeating: DescriptorChain(head: 0), count: 64)
    private var controlChain = DescriptorChain(head: 0)
    /// The RX filter as last read from the device, and its version.
    private var filter = RxFilter()
    private var mac: [UInt8] = []
    private var filterVersion = -1
    private let transmitBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536 + 4096, alignment: 64)
    private let receiveBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536 + 4096, alignment: 64)
    /// Bytes of a received frame (with its header) waiting for guest buffers; 0 when none.
    private var pendingFrameLength = 0
    /// The receive queue had no buffers at the last look: wait for the driver's kick, not for input
    /// (a backend with frames waiting stays readable, and polling it would spin).
    private var receiveStarved = false
    /// The backend refused a frame as full (`NetSendOutcome.full`): transmit waits for room.
    private var transmitBlocked = false

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

    private func waitPaused(_ generation: Int, milliseconds: Int) -> Bool {
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

    private func changeEpoch(_ features: VirtioFeatures?, restoring: DatapathSnapshot? = nil) -> Int {
        let target = lock.withLock { () -> Int in
            requestedFeatures = features
            requestedRestore = restoring
            return requestedEpoch.add(1, ordering: .sequentiallyConsistent).newValue
        }
        try? wakeup.signalEventfd()
        return target
    }

    /// Whether a start or stop is waiting to be picked up: every guest-memory access checks it.
    private var epochChanged: Bool {
        requestedEpoch.load(ordering: .sequentiallyConsistent) != acknowledgedEpoch.load(ordering: .sequentiallyConsistent)
    }

    func terminate() {
        terminated.store(true, ordering: .sequentiallyConsistent)
        try? wakeup.signalEventfd()
    }

    // MARK: The thread

    private func run() {
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
                    worked = try transmit(memory) || worked
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
    private func applyEpoch() {
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

    private func queue(_ index: Int) throws(VirtqueueError) -> SplitVirtqueue? {
        guard let configuration = transport.queueConfiguration(index), configuration.enabled else { return nil }
        return try SplitVirtqueue(size: configuration.size, descriptorTable: configuration.descriptorTable,
                                  availableRing: configuration.availableRing, usedRing: configuration.usedRing,
                                  eventIndex: features.contains(.ringEventIndex), indirect: features.contains(.ringIndirectDescriptors))
    }

    /// Paused for migration: every used entry is published (pauses are taken only between
    /// batches), so the rings' positions and a frame still waiting for buffers are the whole
    /// in-flight state. Records them, then sleeps until resumed, restarted or terminated.
    private func acknowledgePause() {
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
    private func restore(_ snapshot: DatapathSnapshot) {
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
    private func sleep() {
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

    // MARK: Transmit (driver to backend)

    /// Sends what the driver queued; true if anything was done.
    private func transmit(_ memory: GuestMemory) throws(VirtqueueError) -> Bool {
        guard var queue = tx else { return false }
        defer { tx = queue }
        var done = 0
        while true {
            var pending: UInt16 = 0
            var sent = 0, bytes = 0, dropped = 0
            transmitBlocked = false
            while pending < 64, try queue.pop(into: &transmitChain, memory) {
                guard transmitChain.writable.isEmpty else { throw .wrongDirection(head: transmitChain.head) }
                let length = transmitChain.readableLength
                if length >= VirtioNetHeader.size && length <= transmitBuffer.count {
                    let copied = try Self.gather(&transmitChain, into: transmitBuffer, memory)
                    let frame = backend.carriesVirtioHeader
                        ? UnsafeRawBufferPointer(rebasing: transmitBuffer[..<copied])
                        : UnsafeRawBufferPointer(rebasing: transmitBuffer[VirtioNetHeader.size ..< copied])
                    switch backend.send(frame) {
                    case .sent:
                        sent += 1
                        bytes += copied - VirtioNetHeader.size
                    case .dropped:
                        dropped += 1
                    case .full:
                        // Backpressure: the chain goes back to the ring, to be sent once the
                        // backend is writable again (sleep polls for that).
                        queue.rewind(to: queue.lastAvailable &- 1)
                        transmitBlocked = true
                        counters.withLock { $0.transmitStalls += 1 }
                    }
                    if transmitBlocked { break }
                } else {
                    dropped += 1
                }
                try queue.addUsed(head: transmitChain.head, length: 0, memory, pending: &pending)
            }
            if sent > 0 || dropped > 0 {
                counters.withLock { c in
                    c.transmittedFrames += sent
                    c.transmittedBytes += bytes
                    c.droppedFrames += dropped
                }
            }
            guard pending > 0 else {
                if transmitBlocked { return done > 0 }
                // Idle: ask for a kick, then look once more for what raced with that request.
                try queue.setNotifications(true, memory)
                if try queue.pendingCount(memory) > 0 { continue }
                return done > 0
            }
            done += Int(pending)
            try queue.publishUsed(pending, memory)
            if try queue.needsInterrupt(memory) { signal(VirtioNetDevice.transmitQueue) }
            if pauseRequested.load(ordering: .relaxed) || transmitBlocked { return true } // a migration waits for this batch boundary
        }
    }

    // MARK: Receive (backend to driver)

    /// Moves frames from the backend into the driver's buffers; true if anything was done.
    private func receive(_ memory: GuestMemory) throws(VirtqueueError) -> Bool {
        guard var queue = rx else { return false }
        defer { rx = queue }
        let mergeable = features.contains(.netMergeableRxBuffers)
        receiveStarved = false
        refreshFilter()
        var delivered = 0
        var receivedBytes = 0
        var pending: UInt16 = 0
        defer { if pending > 0, let published = try? publish(&queue, pending, memory), published { signal(VirtioNetDevice.receiveQueue) } }
        while delivered < 256 {
            if pendingFrameLength == 0 {
                guard try queue.hasAvailable(memory) else {
                    receiveStarved = true
                    break
                }
                guard let length = nextFrame() else { break }
                pendingFrameLength = length
            }
            let mark = queue.lastAvailable
            var chainCount = 0
            var capacity = 0
            while capacity < pendingFrameLength {
                if chainCount == receiveChains.count { receiveChains.append(DescriptorChain(head: 0)) }
                guard try queue.pop(into: &receiveChains[chainCount], memory) else { break }
                guard receiveChains[chainCount].readable.isEmpty else { throw .wrongDirection(head: receiveChains[chainCount].head) }
                capacity += receiveChains[chainCount].writableLength
                chainCount += 1
                if !mergeable { break }
            }
            if capacity < pendingFrameLength {
                queue.rewind(to: mark)
                if !mergeable && chainCount > 0 {
                    // A single buffer too small for this frame: drop the frame, keep the buffer.
                    pendingFrameLength = 0
                    counters.withLock { $0.droppedFrames += 1 }
                    continue
                }
                // Too few buffers: hold the frame until the driver adds some (it will kick). Try
                // again now only if more arrived than were just tried, or this would spin.
                try queue.setNotifications(true, memory)
                if try queue.pendingCount(memory) > chainCount { continue }
                receiveStarved = true
                break
            }
            // num_buffers in the header: how many buffers this frame spans.
            receiveBuffer.storeBytes(of: UInt16(chainCount).littleEndian, toByteOffset: 10, as: UInt16.self)
            var offset = 0
            for index in 0..<chainCount where offset < pendingFrameLength {
                let part = UnsafeRawBufferPointer(rebasing: receiveBuffer[offset ..< pendingFrameLength])
                let written = try Self.scatter(part, into: &receiveChains[index], memory)
                try queue.addUsed(head: receiveChains[index].head, length: UInt32(written), memory, pending: &pending)
                offset += written
            }
            receivedBytes += pendingFrameLength - VirtioNetHeader.size
            pendingFrameLength = 0
            delivered += 1
            // Published only between frames: Linux's receive_mergeable takes num_buffers entries
            // the moment it sees a frame's first, and drops the frame if any is missing.
            if pending >= 64 {
                if try publish(&queue, pending, memory) { signal(VirtioNetDevice.receiveQueue) }
                pending = 0
            }
        }
        if delivered > 0 {
            counters.withLock { c in
                c.receivedFrames += delivered
                c.receivedBytes += receivedBytes
            }
        }
        if delivered == 0 && pendingFrameLength == 0 {
            try queue.setNotifications(true, memory)
            // Buffers added while we were asking for a kick would get none: look once more.
            if receiveStarved, try queue.pendingCount(memory) > 0 {
                receiveStarved = false
                return true
            }
        }
        return delivered > 0
    }

    private func publish(_ queue: inout SplitVirtqueue, _ count: UInt16, _ memory: GuestMemory) throws(VirtqueueError) -> Bool {
        try queue.publishUsed(count, memory)
        return try queue.needsInterrupt(memory)
    }

    /// `memory.gather` from a chain's readable buffers and `memory.scatter` into its writable ones,
    /// the chain reached in place: its buffer array read from a property or an array element would
    /// be a copy, retained and released around every call (perf, 64-byte frames: 11% of the
    /// datapath's samples at TX, 8-11% at RX); under an inout access it is borrowed.
    private static func gather(_ chain: inout DescriptorChain, into destination: UnsafeMutableRawBufferPointer,
                               _ memory: GuestMemory) throws(VirtqueueError) -> Int {
        try memory.gather(chain.readable, into: destination)
    }

    private static func scatter(_ part: UnsafeRawBufferPointer, into chain: inout DescriptorChain,
                                _ memory: GuestMemory) throws(VirtqueueError) -> Int {
        try memory.scatter(part, into: chain.writable)
    }

    /// Reads the next frame the filter lets through into `receiveBuffer`, header first; nil if none.
    private func nextFrame() -> Int? {
        while true {
            let length: Int
            if backend.carriesVirtioHeader {
                guard let n = backend.receive(into: receiveBuffer), n >= VirtioNetHeader.size else { return nil }
                length = n
                if !features.contains(.netGuestChecksum) {
                    receiveBuffer[0] = 0 // DATA_VALID / NEEDS_CSUM mean nothing to a driver without GUEST_CSUM
                }
            } else {
                let frame = UnsafeMutableRawBufferPointer(rebasing: receiveBuffer[VirtioNetHeader.size...])
                guard let n = backend.receive(into: frame) else { return nil }
                VirtioNetHeader().store(into: UnsafeMutableRawBufferPointer(rebasing: receiveBuffer[..<VirtioNetHeader.size]))
                length = VirtioNetHeader.size + n
            }
            if filter.promiscuous { return length }
            let destination = UnsafeRawBufferPointer(rebasing: receiveBuffer[VirtioNetHeader.size ..< min(length, VirtioNetHeader.size + 6)])
            if filter.accepts(destination: destination, deviceMAC: mac) { return length }
            counters.withLock { $0.filteredFrames += 1 }
        }
    }

    /// Takes the device's filter when it changed (the control queue changes it, on another path).
    private func refreshFilter() {
        guard let device, device.filterVersion != filterVersion else { return }
        (filter, mac, filterVersion) = device.filterSnapshot
    }

    // MARK: Control queue

    private func serveControl(_ memory: GuestMemory) throws(VirtqueueError) {
        guard var queue = ctrl, let device else { return }
        defer { ctrl = queue }
        var served = false
        while true {
            guard try queue.pop(into: &controlChain, memory) else {
                // Idle: ask for a kick, then look once more. The driver spins on each command's
                // used entry and may add the next one before avail_event moved; it would not kick.
                try queue.setNotifications(true, memory)
                if try queue.pendingCount(memory) > 0 { continue }
                break
            }
            let chain = controlChain
            var ack = VirtioNetDevice.controlError
            let length = chain.readableLength
            if length >= 2 && length <= 65536 && chain.writableLength >= 1 {
                let command = try memory.gather(chain.readable, length: length)
                ack = device.control(class: command[0], command: command[1], data: Array(command[2...]), features: features)
            }
            var written = 0
            if chain.writableLength >= 1 {
                written = try memory.scatter([ack], into: chain.writable)
            }
            try queue.push(head: chain.head, length: UInt32(written), memory)
            served = true
        }
        if served, try queue.needsInterrupt(memory) { signal(VirtioNetDevice.controlQueue) }
    }

    private func signal(_ queue: Int) {
        counters.withLock { $0.interrupts += 1 }
        transport.signalQueue(queue)
    }
}

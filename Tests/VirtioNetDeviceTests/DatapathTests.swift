import RegionEmulation
import TestSupport
import Testing
import VfioUserProto
import VirtioNetDevice
import VirtioDriver

@Suite("virtio-net datapath")
struct DatapathTests {
    @Test func transmittedFramesComeOutOfTheBackendByteForByte() throws {
        let bed = try NetTestBed()
        try bed.up()
        let frames = [NetTestBed.frame(length: 60, seed: 1), NetTestBed.frame(length: 1514, seed: 2), NetTestBed.frame(length: 9014, seed: 3)]
        #expect(try bed.driver.transmit(frames) == 3)
        for frame in frames { #expect(try bed.wireReceive() == frame) }
        #expect(try bed.driver.reclaimTransmitted(waitingFor: 3) == 3)
        #expect(bed.model.statistics.transmittedFrames == 3)
    }

    @Test func aFullCableHoldsFramesInTheRingInsteadOfDroppingThem() throws {
        let bed = try NetTestBed()
        try bed.up()
        // Nobody reads the wire: the peer's datagram queue (net.unix.max_dgram_qlen, 10 by default)
        // fills, and the rest must stay in the transmit ring, neither used nor dropped.
        let frames = (0..<64).map { NetTestBed.frame(length: 100 + $0, seed: UInt8($0)) }
        #expect(try bed.driver.transmit(frames) == 64)
        let early = try bed.driver.reclaimTransmitted(waitingFor: 64, milliseconds: 200)
        #expect(early < 64)
        #expect(bed.model.statistics.transmitStalls > 0)
        for frame in frames { #expect(try bed.wireReceive() == frame) }
        #expect(early + (try bed.driver.reclaimTransmitted(waitingFor: 64 - early)) == 64)
        #expect(bed.model.statistics.transmittedFrames == 64)
        #expect(bed.model.statistics.droppedFrames == 0)
    }

    @Test func indirectDescriptorsCarryFramesToo() throws {
        let bed = try NetTestBed()
        try bed.up()
        let frame = NetTestBed.frame(length: 200, seed: 9)
        try bed.driver.transmit([frame], indirect: true)
        #expect(try bed.wireReceive() == frame)
    }

    @Test func receivedFramesArriveWithAHeaderInOneBuffer() throws {
        let bed = try NetTestBed()
        try bed.up()
        try bed.driver.postReceiveBuffers(16)
        let frames = [NetTestBed.frame(length: 60, seed: 4), NetTestBed.frame(length: 1514, seed: 5)]
        frames.forEach(bed.wireSend)
        let received = try bed.driver.receive(count: 2)
        #expect(received.map(\.frame) == frames)
        #expect(received.map(\.header.bufferCount) == [1, 1])
        #expect(fired(bed.driver.vectors[1]) >= 1, "receive interrupts on MSI-X vector 1")
    }

    @Test func mergeableBuffersSpanOneFrameAcrossSeveral() throws {
        let bed = try NetTestBed()
        try bed.up()
        try bed.driver.postReceiveBuffers(16, size: 512)
        let frame = NetTestBed.frame(length: 1514, seed: 6)
        bed.wireSend(frame)
        let received = try bed.driver.receive(count: 1)
        #expect(received.first?.frame == frame)
        #expect(received.first?.header.bufferCount == 3) // 12 + 1514 bytes in 512-byte buffers
    }

    /// Linux's `receive_mergeable` takes `num_buffers` used entries for a frame, and drops it
    /// (`rx_length_errors`) if they are not all published when it looks. So a frame spanning many
    /// buffers must be published whole, never half, whatever else is pending. In message mode the
    /// driver looks after every write of the used index: the worst moment a guest's poll can come.
    @Test(arguments: [false, true])
    func aFrameSpanningManyBuffersIsNeverPublishedHalf(messageMode: Bool) throws {
        let bed = try NetTestBed(messageMode: messageMode)
        try bed.up()
        try bed.driver.postReceiveBuffers(240, size: 128)
        let frames = (0..<19).map { NetTestBed.frame(length: 1514, seed: UInt8($0)) } // 12 buffers each: 228 in all
        frames.forEach(bed.wireSend)
        let received = try bed.driver.receive(count: frames.count)
        #expect(bed.driver.lengthErrors == 0, "frames the driver found half published")
        #expect(received.map { TestFrame.tag(of: $0.frame) } == Array(0..<frames.count))
        let intact = received.map(\.frame) == frames
        #expect(intact, "every byte of every frame")
        #expect(received.map(\.header.bufferCount) == Array(repeating: 12, count: frames.count)) // 12 + 1514 bytes in 128-byte buffers
    }

    @Test func withoutMergeableBuffersAFrameTooBigForABufferIsDroppedAndTheBufferKept() throws {
        let bed = try NetTestBed()
        try bed.up(NetTestBed.defaultFeatures.subtracting(.netMergeableRxBuffers))
        try bed.driver.postReceiveBuffers(4, size: 256)
        bed.wireSend(NetTestBed.frame(length: 1514))
        let small = NetTestBed.frame(length: 100, seed: 7)
        bed.wireSend(small)
        let received = try bed.driver.receive(count: 1)
        #expect(received.map(\.frame) == [small])
        #expect(bed.model.statistics.droppedFrames == 1)
    }

    @Test func framesWaitForBuffersInsteadOfBeingLost() throws {
        let bed = try NetTestBed()
        try bed.up()
        let frames = (0..<8).map { NetTestBed.frame(length: 100, seed: UInt8($0)) }
        frames.forEach(bed.wireSend)
        try bed.driver.wait(milliseconds: 100)
        try bed.driver.postReceiveBuffers(3)
        var received = try bed.driver.receive(count: 3).map(\.frame)
        try bed.driver.postReceiveBuffers(5)
        received += try bed.driver.receive(count: 5).map(\.frame)
        #expect(received == frames)
    }

    @Test func aFrameWaitingForBuffersDoesNotStallTheControlQueue() throws {
        let bed = try NetTestBed()
        try bed.up()
        try bed.driver.postReceiveBuffers(1, size: 512) // too little for the frame below
        let frame = NetTestBed.frame(length: 1514, seed: 8)
        bed.wireSend(frame)
        try bed.driver.wait(milliseconds: 50)
        // The datapath holds the frame without spinning, and still serves the control queue
        // (Linux busy-waits for its answer with the RTNL lock held).
        #expect(try bed.driver.control(class: 0, command: 1, data: [1]) == 0)
        try bed.driver.postReceiveBuffers(4, size: 512)
        #expect(try bed.driver.receive(count: 1).map(\.frame) == [frame])
    }

    @Test(arguments: [(false, 0), (true, 0), (true, 1), (true, 2)])
    func controlCommandsBackToBackAreEachServed(messageMode: Bool, racing: Int) throws {
        // The driver spins on each answer and adds the next command at once, kicking only when
        // avail_event asks for it: after moving avail_event the device must look once more, or
        // a command added after its last look but before the move is never served.
        let bed = try NetTestBed(messageMode: messageMode)
        try bed.up()
        var served = 0
        while served < 200, try bed.driver.control(class: 0, command: 0, data: [UInt8(served & 1)], racing: racing) == 0 {
            served += 1
        }
        #expect(served == 200)
    }

    @Test func theControlQueueSetsFiltersAndTheMAC() throws {
        let bed = try NetTestBed()
        try bed.up()
        try bed.driver.postReceiveBuffers(32)
        #expect(try bed.driver.control(class: 0, command: 0, data: [0]) == 0) // promiscuous off
        let multicast: [UInt8] = [0x33, 0x33, 0, 0, 0, 1]
        let table = le(UInt32(0)) + le(UInt32(1)) + multicast
        #expect(try bed.driver.control(class: 1, command: 0, data: table) == 0)
        #expect(try bed.driver.control(class: 9, command: 9, data: []) == 1) // unknown class: error
        let mine = NetTestBed.frame(length: 64, seed: 1)
        let broadcast = NetTestBed.frame(to: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], length: 64, seed: 2)
        let listed = NetTestBed.frame(to: multicast, length: 64, seed: 3)
        let other = NetTestBed.frame(to: [0x52, 0x54, 0, 9, 9, 9], length: 64, seed: 4)
        let unlisted = NetTestBed.frame(to: [0x01, 0, 0x5E, 0, 0, 0xFB], length: 64, seed: 5)
        [other, mine, unlisted, broadcast, listed].forEach(bed.wireSend)
        #expect(try bed.driver.receive(count: 3).map(\.frame) == [mine, broadcast, listed])
        #expect(bed.model.statistics.filteredFrames == 2)
        let newMAC: [UInt8] = [0x52, 0x54, 0x00, 0xAA, 0xBB, 0xCC]
        #expect(try bed.driver.control(class: 1, command: 1, data: newMAC) == 0)
        #expect(try bed.driver.config(0, count: 6) == newMAC)
    }

    @Test func aMalformedChainSetsNeedsResetAndAResetRecovers() throws {
        let bed = try NetTestBed()
        try bed.up()
        // A transmit chain that loops back on itself.
        let tx = bed.driver.tx!
        tx.writeDescriptor(0, VirtioSpec.Descriptor(address: bed.driver.ram.base, length: 64, flags: VirtioSpec.Descriptor.next, next: 1))
        tx.writeDescriptor(1, VirtioSpec.Descriptor(address: bed.driver.ram.base, length: 64, flags: VirtioSpec.Descriptor.next, next: 0))
        tx.makeAvailable(0)
        try bed.driver.kickIfNeeded(tx, since: 0, force: true)
        #expect(fired(bed.driver.vectors[0], waitingMilliseconds: 3000) >= 1, "a config interrupt")
        #expect(try bed.driver.status.contains(.needsReset))
        // The driver resets and starts over; traffic flows again.
        try bed.up()
        let frame = NetTestBed.frame(length: 80)
        try bed.driver.transmit([frame])
        #expect(try bed.wireReceive() == frame)
    }

    @Test func aBufferOutsideEveryMappingSetsNeedsReset() throws {
        let bed = try NetTestBed()
        try bed.up()
        bed.driver.tx.add([(0x7000_0000_0000, 64, false)])
        try bed.driver.kickIfNeeded(bed.driver.tx, since: 0, force: true)
        #expect(fired(bed.driver.vectors[0], waitingMilliseconds: 3000) >= 1)
        #expect(try bed.driver.status.contains(.needsReset))
    }

    @Test func aResetInTheMiddleOfTrafficStopsTheDatapath() throws {
        let bed = try NetTestBed()
        try bed.up()
        try bed.driver.postReceiveBuffers(64)
        for i in 0..<50 { bed.wireSend(NetTestBed.frame(length: 1000, seed: UInt8(i))) }
        try bed.driver.setStatus([])
        #expect(try bed.driver.status.rawValue == 0)
        let usedAfterReset = bed.driver.rx.usedIndex
        try bed.driver.wait(milliseconds: 200)
        #expect(bed.driver.rx.usedIndex == usedAfterReset, "nothing written to the rings after the reset")
        try bed.up()
        try bed.driver.postReceiveBuffers(128)
        let frame = NetTestBed.frame(length: 70, seed: 99)
        bed.wireSend(frame)
        // Frames still in the cable from before the reset come first, as on a real wire.
        var received: [[UInt8]] = []
        while !received.contains(frame), case let batch = try bed.driver.receive(count: 1, milliseconds: 2000), !batch.isEmpty {
            received += batch.map(\.frame)
        }
        #expect(received.last == frame)
    }

    @Test func everythingWorksWithMessageModeDMA() throws {
        let bed = try NetTestBed(messageMode: true)
        try bed.up()
        try bed.driver.postReceiveBuffers(8)
        let out = NetTestBed.frame(length: 1514, seed: 11)
        try bed.driver.transmit([out])
        #expect(try bed.wireReceive() == out)
        let into = NetTestBed.frame(length: 700, seed: 12)
        bed.wireSend(into)
        #expect(try bed.driver.receive(count: 1).map(\.frame) == [into])
        #expect(bed.driver.client.servedRequests > 0, "the device reached memory with DMA messages")
    }

    /// Every DMA read waits for the client. A look at the ring sends three reads together: the
    /// available index, `used_event`, and behind them the descriptor table with the ring's entries
    /// in one message (the test driver lays a ring out as Linux does: the available ring right
    /// after the table). Then a read per buffer, a frame's buffers together: 2 per two-buffer frame
    /// and a look or two more, where reading each entry and descriptor alone cost 5 per frame. Its
    /// writes are posted: the used elements in one message, the used index and `avail_event`.
    @Test func byMessagesABatchReadsEachRingOnceAndPostsItsWrites() throws {
        let bed = try NetTestBed(messageMode: true)
        try bed.up()
        let first = NetTestBed.frame(length: 100, seed: 99) // the session's first DMA learns the client's layout
        try bed.driver.transmit([first])
        #expect(try bed.wireReceive() == first)
        #expect(try bed.driver.reclaimTransmitted(waitingFor: 1) == 1)
        guard let served = bed.driver.client.dmaHandler else { Issue.record("the driver serves no DMA"); return }
        nonisolated(unsafe) var reads = 0, writes = 0
        bed.driver.client.dmaHandler = DMARequestHandler(read: { reads += 1; return served.read($0, $1) },
                                                         write: { writes += 1; return served.write($0, $1) })
        let posted = bed.driver.client.postedRequests
        // Fewer frames than the cable's datagram queue holds, so the device takes them in one go.
        let frames = (0..<8).map { NetTestBed.frame(length: 200 + $0, seed: UInt8($0)) }
        #expect(try bed.driver.transmit(frames) == 8) // header and data: two buffers a frame
        for frame in frames { #expect(try bed.wireReceive() == frame) }
        #expect(try bed.driver.reclaimTransmitted(waitingFor: 8) == 8)
        #expect(reads <= 2 * frames.count + 6, "\(reads) DMA_READs for \(frames.count) frames of two buffers")
        #expect(writes <= 3, "\(writes) DMA_WRITEs for one batch")
        #expect(bed.driver.client.postedRequests - posted == writes, "every DMA_WRITE is posted")
    }

    /// By messages a receive batch's used elements go out as one posted DMA_WRITE and its used
    /// index as another, though each frame's data is written between its element and the next.
    @Test func byMessagesAReceiveBatchPostsItsUsedElementsInOneMessage() throws {
        let bed = try NetTestBed(messageMode: true)
        try bed.up()
        try bed.driver.postReceiveBuffers(1)
        let first = NetTestBed.frame(length: 90, seed: 30) // the session's first DMA learns the client's layout
        bed.wireSend(first)
        #expect(try bed.driver.receive(count: 1).map(\.frame) == [first])
        guard let served = bed.driver.client.dmaHandler, let rx = bed.driver.rx else { Issue.record("no DMA handler or queue"); return }
        let elements = rx.usedRing + 4 ..< rx.usedRing + 4 + 8 * UInt64(rx.size)
        nonisolated(unsafe) var elementWrites = 0, indexWrites = 0
        bed.driver.client.dmaHandler = DMARequestHandler(read: served.read, write: { address, data in
            if elements.contains(address) { elementWrites += 1 }
            if address == rx.usedRing + 2 { indexWrites += 1 }
            return served.write(address, data)
        })
        // The frames wait in the cable until the driver gives buffers, then go in one batch.
        let frames = (0..<6).map { NetTestBed.frame(length: 300 + $0, seed: UInt8(40 + $0)) }
        for frame in frames { bed.wireSend(frame) }
        try bed.driver.postReceiveBuffers(8)
        var received: [[UInt8]] = []
        while received.count < frames.count, case let batch = try bed.driver.receive(count: 1), !batch.isEmpty { received += batch.map(\.frame) }
        #expect(received == frames)
        #expect(elementWrites == 1, "\(elementWrites) DMA_WRITEs of used elements for one batch of \(frames.count) frames")
        #expect(indexWrites == 1)
    }

    /// What one queue read ahead stays until that queue looks at its ring again, whatever the
    /// other queues do meanwhile: with traffic both ways, no descriptor is read by a message of
    /// its own. (A receive batch's table must survive the acknowledgements the guest transmits.)
    @Test func byMessagesEachQueueKeepsWhatItReadAhead() throws {
        let bed = try NetTestBed(messageMode: true)
        try bed.up()
        try bed.driver.postReceiveBuffers(64)
        guard let served = bed.driver.client.dmaHandler else { Issue.record("the driver serves no DMA"); return }
        let tables = [bed.driver.rx, bed.driver.tx].map { queue in
            queue!.descriptorTable ..< queue!.descriptorTable + 16 * UInt64(queue!.size)
        }
        nonisolated(unsafe) var singleDescriptorReads = 0
        bed.driver.client.dmaHandler = DMARequestHandler(read: { address, buffer in
            if buffer.count == 16 && tables.contains(where: { $0.contains(address) }) { singleDescriptorReads += 1 }
            return served.read(address, buffer)
        }, write: served.write)
        for round in 0..<24 {
            let out = NetTestBed.frame(length: 100 + round, seed: UInt8(round))
            let into = NetTestBed.frame(length: 200 + round, seed: UInt8(100 + round))
            try bed.driver.transmit([out])
            bed.wireSend(into)
            #expect(try bed.wireReceive() == out)
            #expect(try bed.driver.receive(count: 1).map(\.frame) == [into])
            _ = try bed.driver.reclaimTransmitted(waitingFor: 1)
        }
        #expect(singleDescriptorReads == 0)
    }
}

@Suite("Two instances on a datagram cable")
struct CableTests {
    @Test func framesCrossBetweenTwoDevicesWithoutRoot() throws {
        let directory = TemporaryDirectory()
        let a = directory.path + "/a.sock", b = directory.path + "/b.sock"
        let left = try VirtioNetDevice(backend: try DatagramBackend(local: a, peer: b), mac: [0x52, 0x54, 0, 0, 0, 0xA1])
        let right = try VirtioNetDevice(backend: try DatagramBackend(local: b, peer: a), mac: [0x52, 0x54, 0, 0, 0, 0xB2])
        let leftServer = try TestServer(model: left)
        let rightServer = try TestServer(model: right)
        let leftDriver = try VirtioNetDriver(path: leftServer.path)
        let rightDriver = try VirtioNetDriver(path: rightServer.path)
        for driver in [leftDriver, rightDriver] {
            #expect(try driver.negotiate(NetTestBed.defaultFeatures))
            try driver.start()
            try driver.postReceiveBuffers(16)
        }
        let toRight = NetTestBed.frame(to: [0x52, 0x54, 0, 0, 0, 0xB2], length: 300, seed: 1)
        let toLeft = NetTestBed.frame(to: [0x52, 0x54, 0, 0, 0, 0xA1], length: 1200, seed: 2)
        try leftDriver.transmit([toRight])
        try rightDriver.transmit([toLeft])
        #expect(try rightDriver.receive(count: 1).map(\.frame) == [toRight])
        #expect(try leftDriver.receive(count: 1).map(\.frame) == [toLeft])
    }
}

import RegionEmulation
import Synchronization
import VfioUserProto

/// virtio-net migration: the transport's registers, the MAC and RX filter, and the datapath's
/// in-flight state. Stopping pauses the datapath between batches, when every buffer it took from
/// the rings is back in the used ring, so the rings' positions are the whole in-flight state (plus
/// a received frame still waiting for buffers, which travels too). The destination resumes the
/// rings exactly there: no frame is sent twice or lost.
extension VirtioNetDevice: MigratableDevice {
    /// "VIRTNET1" read as a little-endian u64.
    public static let migrationMagic: UInt64 = 0x3154_454E_5452_4956
    public static let migrationVersion: UInt32 = 1

    /// P2P: RUNNING_P2P pauses the datapath (no DMA) while interrupts may still come; PRE_COPY:
    /// the header goes early.
    public var migrationCapabilities: MigrationCapabilities { [.stopCopy, .p2p, .preCopy] }

    public func migrationHeader() -> [UInt8] {
        var writer = ByteWriter(capacity: 24)
        writer.write(Self.migrationMagic)
        writer.write(Self.migrationVersion)
        writer.write(UInt16(transport.queueCount))
        writer.write(UInt16(transport.msixVectors))
        writer.write(transport.maxQueueSize)
        return writer.bytes
    }

    public func checkMigrationHeader(_ header: [UInt8]) throws(MigrationError) {
        let fields = try? ByteReader.decode(header, whole: true) { (r: inout ByteReader) throws(ProtocolError) in
            (try r.read(UInt64.self), try r.read(UInt32.self), try r.read(UInt16.self), try r.read(UInt16.self), try r.read(UInt16.self))
        }
        guard let (magic, version, queues, vectors, _) = fields else { throw .invalidStream("virtio-net header of \(header.count) bytes") }
        guard magic == Self.migrationMagic else { throw .invalidStream("not a virtio-net state (magic 0x\(String(magic, radix: 16)))") }
        guard version == Self.migrationVersion else { throw .invalidStream("virtio-net state version \(version); this device reads 1") }
        guard Int(queues) == transport.queueCount, Int(vectors) == transport.msixVectors else {
            throw .invalidStream("the source has \(queues) queues and \(vectors) vectors; this device \(transport.queueCount) and \(transport.msixVectors)")
        }
    }

    public func migrationQuiesce(_ stopped: Bool) {
        if stopped {
            datapath.pause()
            return
        }
        if let restore = pendingRestore.withLock({ $0.take() }), transport.status.contains(.driverOK) {
            datapath.start(features: transport.negotiatedFeatures, restoring: restore)
        }
        datapath.resume()
    }

    public func saveMigrationState() throws(MigrationError) -> [UInt8] {
        guard let snapshot = datapath.pausedState(milliseconds: 5000) else {
            throw .invalidStream("the datapath did not stop within 5 s (a DMA message unanswered?)")
        }
        let (filter, mac) = state.withLock { ($0.filter, $0.mac) }
        var writer = ByteWriter(capacity: 1024 + snapshot.pendingFrame.count)
        transport.saveState(into: &writer)
        writer.write(mac)
        writer.write(UInt8(filter.promiscuous ? 1 : 0))
        writer.write(UInt8(filter.allMulticast ? 1 : 0))
        for table in [filter.unicast, filter.multicast] {
            writer.write(UInt32(table.count))
            for address in table { writer.write(address) }
        }
        writer.write(UInt16(snapshot.queues.count))
        for ring in snapshot.queues {
            writer.write(UInt8(ring == nil ? 0 : 1))
            writer.write(ring?.lastAvailable ?? 0)
            writer.write(ring?.usedIndex ?? 0)
        }
        writer.write(UInt32(snapshot.pendingFrame.count))
        writer.write(snapshot.pendingFrame)
        return writer.bytes
    }

    public func loadMigrationState(_ bytes: [UInt8]) throws(MigrationError) {
        let transportState: VirtioPCITransport.SavedState, mac: [UInt8], filter: RxFilter, snapshot: DatapathSnapshot
        do throws(ProtocolError) {
            (transportState, mac, filter, snapshot) = try ByteReader.decode(bytes, whole: true) { (reader: inout ByteReader) throws(ProtocolError) in
                let transportState = try transport.decodeState(&reader)
                let mac = Array(try reader.bytes(count: 6))
                var filter = RxFilter()
                filter.promiscuous = try Self.flag(&reader)
                filter.allMulticast = try Self.flag(&reader)
                for table in 0..<2 {
                    let count: UInt32 = try reader.read()
                    guard Int(count) <= reader.remaining / 6 else { throw .invalid("a MAC table of \(count) entries") }
                    let entries = try (0..<Int(count)).map { _ throws(ProtocolError) in Array(try reader.bytes(count: 6)) }
                    if table == 0 { filter.unicast = entries } else { filter.multicast = entries }
                }
                let ringCount: UInt16 = try reader.read()
                guard Int(ringCount) == transport.queueCount else { throw .invalid("\(ringCount) ring positions") }
                var rings: [DatapathSnapshot.Ring?] = []
                for _ in 0..<ringCount {
                    let present = try Self.flag(&reader)
                    let ring = DatapathSnapshot.Ring(lastAvailable: try reader.read(), usedIndex: try reader.read())
                    rings.append(present ? ring : nil)
                }
                let frameLength: UInt32 = try reader.read()
                guard frameLength <= 65536 + 4096 else { throw .invalid("a pending frame of \(frameLength) bytes") }
                let frame = Array(try reader.bytes(count: Int(frameLength)))
                return (transportState, mac, filter, DatapathSnapshot(queues: rings, pendingFrame: frame))
            }
        } catch {
            throw .invalidStream("virtio-net state: \(error)")
        }
        // The driver negotiated with the source's backend: this one must honour the same features.
        let missing = transportState.driverFeatures.subtracting(supportedFeatures)
        guard missing.isEmpty else {
            throw .invalidStream("this device cannot offer the negotiated features \(missing) (another backend?)")
        }

        datapath.stop() // whatever ran here before is replaced
        transport.restoreState(transportState)
        state.withLock { s in
            s.mac = mac
            s.filter = filter
            s.version += 1
        }
        if transportState.status.contains(.featuresOK) { backend.setGuestOffloads(transportState.driverFeatures) }
        pendingRestore.withLock { $0 = snapshot }
    }

    private static func flag(_ reader: inout ByteReader) throws(ProtocolError) -> Bool {
        let value: UInt8 = try reader.read()
        guard value <= 1 else { throw .invalid("flag byte \(value)") }
        return value == 1
    }
}

import RegionEmulation
import VfioUserProto

/// The transport's registers in a migration stream, field by field: status, feature words and
/// selectors, the config vector and generation, ISR, and each queue's size, vector, enable and
/// ring addresses. (Ring positions belong to the datapath, see `DatapathSnapshot`.)
extension VirtioPCITransport {
    struct SavedState {
        fileprivate var state: State
        var status: VirtioStatus { state.status }
        var driverFeatures: VirtioFeatures { state.driverFeatures }
    }

    func saveState(into writer: inout ByteWriter) {
        let s = state.withLock { $0 }
        writer.write(s.status.rawValue)
        writer.write(s.deviceFeatureSelect)
        writer.write(s.driverFeatureSelect)
        writer.write(s.driverFeatures.rawValue)
        writer.write(s.configVector)
        writer.write(s.configGeneration)
        writer.write(s.queueSelect)
        writer.write(s.isr)
        writer.write(UInt16(s.queues.count))
        for queue in s.queues {
            writer.write(queue.size)
            writer.write(queue.msixVector)
            writer.write(UInt8(queue.enabled ? 1 : 0))
            writer.write(queue.descriptorTable)
            writer.write(queue.availableRing)
            writer.write(queue.usedRing)
        }
    }

    /// Reads what `saveState` wrote, checking it fits this transport (queue count, sizes, vectors).
    func decodeState(_ reader: inout ByteReader) throws(ProtocolError) -> SavedState {
        var s = State(queues: [])
        s.status = VirtioStatus(rawValue: try reader.read())
        s.deviceFeatureSelect = try reader.read()
        s.driverFeatureSelect = try reader.read()
        s.driverFeatures = VirtioFeatures(rawValue: try reader.read())
        s.configVector = try reader.read()
        s.configGeneration = try reader.read()
        s.queueSelect = try reader.read()
        s.isr = try reader.read()
        guard s.configVector == virtioNoVector || Int(s.configVector) < msixVectors else { throw .invalid("config vector \(s.configVector)") }
        let count: UInt16 = try reader.read()
        guard Int(count) == queueCount else { throw .invalid("\(count) queues, not \(queueCount)") }
        for index in 0..<Int(count) {
            var queue = QueueConfiguration(size: try reader.read())
            queue.msixVector = try reader.read()
            let enabled: UInt8 = try reader.read()
            queue.enabled = enabled == 1
            queue.descriptorTable = try reader.read()
            queue.availableRing = try reader.read()
            queue.usedRing = try reader.read()
            guard queue.size > 0, queue.size <= maxQueueSize, queue.size.nonzeroBitCount == 1 else {
                throw .invalid("queue \(index) of size \(queue.size); this device takes up to \(maxQueueSize)")
            }
            guard enabled <= 1, queue.msixVector == virtioNoVector || Int(queue.msixVector) < msixVectors else {
                throw .invalid("queue \(index) enable \(enabled), vector \(queue.msixVector)")
            }
            s.queues.append(queue)
        }
        return SavedState(state: s)
    }

    /// Takes a decoded state as it is: no status change is signalled (the datapath is restarted by
    /// the device model when the migrated device resumes).
    func restoreState(_ saved: SavedState) {
        state.withLock { $0 = saved.state }
    }
}

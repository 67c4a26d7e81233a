import Support
import SystemPackage
import VfioUserProto
import VirtioNetDevice

/// A backend that keeps every frame the device sends and hands it frames a test injects: a wire
/// that never drops, for tests that count frames exactly.
final class RecordingBackend: NetBackend {
    private let sent = Locked<[[UInt8]]>([])
    private let inbox = Locked<[[UInt8]]>([])
    /// Readable while frames wait in the inbox.
    private let ready: OwnedFileDescriptor

    init() throws {
        ready = try OwnedFileDescriptor.eventfd(nonBlocking: true)
    }

    var description: String { "recording" }
    var pollDescriptor: CInt? { ready.rawValue }
    var carriesVirtioHeader: Bool { false }
    var offloads: VirtioFeatures { [] }
    func setGuestOffloads(_ negotiated: VirtioFeatures) {}

    func send(_ frame: UnsafeRawBufferPointer) -> NetSendOutcome {
        sent.withLock { $0.append(Array(frame)) }
        return .sent
    }

    func receive(into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        inbox.withLock { frames in
            guard let frame = frames.first, frame.count <= buffer.count else { return nil }
            frames.removeFirst()
            if frames.isEmpty { _ = try? ready.readEventfd() }
            buffer.copyBytes(from: frame)
            return frame.count
        }
    }

    func inject(_ frame: [UInt8]) {
        inbox.withLock { $0.append(frame) }
        try? ready.signalEventfd()
    }

    var frames: [[UInt8]] { sent.withLock { $0 } }
}

import Synchronization

/// Swallows every frame: the transmit side of a benchmark, where only the device's cost counts.
public final class SinkBackend: NetBackend {
    private let frames = Atomic<Int>(0)

    public init() {}
    public var description: String { "sink" }
    public var pollDescriptor: CInt? { nil }
    public var carriesVirtioHeader: Bool { false }
    public var offloads: VirtioFeatures { [] }
    public func setGuestOffloads(_ negotiated: VirtioFeatures) {}

    public func send(_ frame: UnsafeRawBufferPointer) -> NetSendOutcome {
        frames.add(1, ordering: .relaxed)
        return .sent
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer) -> Int? { nil }

    public var framesReceived: Int { frames.load(ordering: .relaxed) }
}

/// Always has a frame of `frameSize` bytes for the device, addressed to `destination`: the receive
/// side of a benchmark.
public final class SourceBackend: NetBackend {
    private let frame: [UInt8]

    public init(frameSize: Int, destination: [UInt8]) {
        var frame = [UInt8](repeating: 0x5A, count: max(frameSize, 14))
        frame.replaceSubrange(0..<6, with: destination)
        frame.replaceSubrange(6..<12, with: [0x02, 0, 0, 0, 0, 0x99])
        frame[12] = 0x08 // EtherType IPv4
        frame[13] = 0x00
        self.frame = frame
    }

    public var description: String { "source of \(frame.count)-byte frames" }
    public var pollDescriptor: CInt? { nil }
    public var carriesVirtioHeader: Bool { false }
    public var offloads: VirtioFeatures { [] }
    public func setGuestOffloads(_ negotiated: VirtioFeatures) {}
    public func send(_ frame: UnsafeRawBufferPointer) -> NetSendOutcome { .sent }

    public func receive(into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        let count = min(frame.count, buffer.count)
        frame.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: count) }
        return count
    }
}

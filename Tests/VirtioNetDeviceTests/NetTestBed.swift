import RegionEmulation
import Support
import SystemPackage
import TestSupport
import Testing
import VfioUserProto
import VirtioNetDevice
import VirtioDriver
#if canImport(Glibc)
import Glibc
#endif

/// A virtio-net device served on a real socket, a driver playing the guest, and the test's end of
/// the datagram cable the device's backend is plugged into.
final class NetTestBed {
    static let mac: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
    let directory = TemporaryDirectory()
    let wire: DatagramBackend
    let model: VirtioNetDevice
    let server: TestServer
    let driver: VirtioNetDriver

    init(messageMode: Bool = false, queueSize: UInt16 = 256, msix: Bool = true) throws {
        wire = try DatagramBackend(local: directory.path + "/wire.sock", peer: directory.path + "/device.sock")
        model = try VirtioNetDevice(backend: try DatagramBackend(local: directory.path + "/device.sock", peer: directory.path + "/wire.sock"),
                                mac: Self.mac, queueSize: queueSize, msix: msix)
        server = try TestServer(model: model)
        driver = try VirtioNetDriver(path: server.path, messageMode: messageMode)
    }

    static let defaultFeatures: VirtioSpec.Features = [.version1, .netMAC, .netStatus, .netMergeableRxBuffers, .netControlQueue,
                                                  .netControlRx, .netControlMACAddress, .ringEventIndex, .ringIndirectDescriptors]

    /// Negotiates and starts with MSI-X.
    func up(_ features: VirtioSpec.Features = NetTestBed.defaultFeatures, useMSIX: Bool = true) throws {
        #expect(try driver.negotiate(features))
        try driver.start(useMSIX: useMSIX)
    }

    /// The next frame the device sent down the cable (serving DMA messages meanwhile).
    func wireReceive(milliseconds: Int = 5000) throws -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 70_000)
        let deadline = monotonicNanoseconds() + UInt64(milliseconds) * 1_000_000
        while monotonicNanoseconds() < deadline {
            let n = buffer.withUnsafeMutableBytes { wire.receive(into: $0) }
            if let n { return Array(buffer[..<n]) }
            try driver.wait(milliseconds: 1)
        }
        return nil
    }

    /// Sends a frame down the cable; while the device's end of it is full (a datagram socket
    /// queues only a few frames), waits for the device to take some, serving DMA messages meanwhile.
    func wireSend(_ frame: [UInt8]) {
        for _ in 0..<5000 {
            if frame.withUnsafeBytes({ wire.send($0) }) != .full { return }
            try? driver.wait(milliseconds: 1)
        }
        Issue.record("the device never took a frame off the cable")
    }

    /// A `TestFrame` of `length` bytes to `destination`, tagged with `seed`.
    static func frame(to destination: [UInt8] = NetTestBed.mac, length: Int, seed: UInt8 = 1) -> [UInt8] {
        TestFrame.make(to: destination, length: length, tag: Int(seed))
    }
}

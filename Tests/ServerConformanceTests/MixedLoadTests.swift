import MttyDevice
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

/// Nothing lost under a long mixed load: serial bytes through both ports of an mtty-2 while frames
/// cross between two virtio-net devices on a datagram cable, in rounds. Every round is a new
/// connection to each device (the previous one dropped without a goodbye), the serial device is
/// reset with DEVICE_RESET halfway through a round, the NICs at its end, and every other round
/// moves the NICs' DMA to messages (no fd). What the client counts sent and received must equal,
/// exactly, what the device models count on their side.
///
/// Runs for `MIXED_LOAD_SECONDS` (default 10, and two rounds at least; RELIABILITY.md has a longer run).
@Suite("Mixed load")
struct MixedLoadTests {
    static let seconds = getenv("MIXED_LOAD_SECONDS").flatMap { Int(String(cString: $0)) } ?? 10
    static let leftMAC: [UInt8] = [0x52, 0x54, 0, 0, 0x10, 0x01]
    static let rightMAC: [UInt8] = [0x52, 0x54, 0, 0, 0x10, 0x02]

    /// What one side counted per port: bytes looped, and overruns (bytes the device lost; LSR reads
    /// showing the overrun bit, on the client's side).
    struct SerialCount: Equatable, CustomStringConvertible {
        var looped = [0, 0]
        var overrun = [0, 0]
        var description: String { "looped \(looped), overrun \(overrun)" }
    }
    struct NetCount: Equatable, CustomStringConvertible {
        var frames = 0, bytes = 0
        var description: String { "\(frames) frames, \(bytes) bytes" }
    }

    @Test func countersMatchOnBothSidesThroughResetsAndReconnects() throws {
        let directory = TemporaryDirectory()
        let serial = MttyDevice(ports: 2)
        let left = try VirtioNetDevice(backend: try DatagramBackend(local: directory.path + "/left", peer: directory.path + "/right"),
                                   mac: Self.leftMAC)
        let right = try VirtioNetDevice(backend: try DatagramBackend(local: directory.path + "/right", peer: directory.path + "/left"),
                                    mac: Self.rightMAC)
        let serialServer = try TestServer(model: serial)
        let leftServer = try TestServer(model: left)
        let rightServer = try TestServer(model: right)

        var serialClient = SerialCount(), serialDevice = SerialCount()
        var sent = [NetCount(), NetCount()], received = [NetCount(), NetCount()] // [left→right, right→left], client side
        let deviceBefore = [left.statistics, right.statistics]
        var rounds = 0
        let deadline = monotonicNanoseconds() + UInt64(Self.seconds) * 1_000_000_000
        while rounds < 2 || monotonicNanoseconds() < deadline { // two rounds at least: a reconnect after a reset
            rounds += 1
            let round = rounds
            // The frames run on their own thread while this one drives the serial ports.
            let netResult = Shared<Result<([NetCount], [NetCount]), NetFailure>>(.failure(NetFailure(message: "did not run")))
            let leftPath = leftServer.path, rightPath = rightServer.path
            let net = Thread {
                netResult.value = Result { () throws(NetFailure) in
                    try Self.netRound(round, leftPath: leftPath, rightPath: rightPath)
                }
            }
            let client = try serialServer.attach()
            for half in 0..<2 {
                let counted = try Self.serialHalfRound(client, seed: round * 2 + half)
                let device = serial.portStates
                for port in 0..<2 {
                    serialClient.looped[port] += counted.looped[port]
                    serialClient.overrun[port] += counted.overrun[port]
                    serialDevice.looped[port] += device[port].bytesLooped
                    serialDevice.overrun[port] += device[port].bytesOverrun
                }
                // DEVICE_RESET clears the UARTs (and their counters): the next half starts from zero.
                if half == 0 { try client.reset() }
            }
            net.join()
            switch netResult.value {
            case let .success((roundSent, roundReceived)):
                for direction in 0..<2 {
                    sent[direction].frames += roundSent[direction].frames
                    sent[direction].bytes += roundSent[direction].bytes
                    received[direction].frames += roundReceived[direction].frames
                    received[direction].bytes += roundReceived[direction].bytes
                }
            case let .failure(failure):
                Issue.record("round \(round): \(failure.message)")
                return
            }
            // Gone without a word; the next round connects anew.
            _ = consume client
            serialServer.waitDetached()
            leftServer.waitDetached()
            rightServer.waitDetached()
        }

        let deviceAfter = [left.statistics, right.statistics]
        let transmitted = (0..<2).map { side in
            NetCount(frames: deviceAfter[side].transmittedFrames - deviceBefore[side].transmittedFrames,
                     bytes: deviceAfter[side].transmittedBytes - deviceBefore[side].transmittedBytes)
        }
        let delivered = (0..<2).map { side in
            NetCount(frames: deviceAfter[1 - side].receivedFrames - deviceBefore[1 - side].receivedFrames,
                     bytes: deviceAfter[1 - side].receivedBytes - deviceBefore[1 - side].receivedBytes)
        }
        let dropped = (0..<2).map { deviceAfter[$0].droppedFrames - deviceBefore[$0].droppedFrames }
        let filtered = (0..<2).map { deviceAfter[$0].filteredFrames - deviceBefore[$0].filteredFrames }
        print("mixed load: \(rounds) rounds in \(Self.seconds) s (\(rounds * 3) reconnects, \(rounds * 3) DEVICE_RESETs); serial client \(serialClient), device \(serialDevice); frames left→right sent \(sent[0]), received \(received[0]); right→left sent \(sent[1]), received \(received[1]); dropped \(dropped), filtered \(filtered)")
        #expect(serialClient.looped.allSatisfy { $0 > 0 })
        #expect(serialDevice == serialClient)
        #expect(serialDevice.overrun == [0, 0])
        for direction in 0..<2 {
            #expect(sent[direction].frames > 0)
            #expect(received[direction] == sent[direction], "direction \(direction): the driver received what its peer sent")
            #expect(transmitted[direction] == sent[direction], "direction \(direction): the sending device counts what its driver sent")
            #expect(delivered[direction] == sent[direction], "direction \(direction): the receiving device counts what crossed")
        }
        #expect(dropped == [0, 0])
        #expect(filtered == [0, 0])
    }

    /// Loops bytes through each port in FIFO-sized chunks, alternating posted REGION_WRITEs and one
    /// REGION_WRITE_MULTI per chunk, and reads every byte back (LSR, then RBR). Returns the bytes
    /// looped and the overruns LSR showed, per port; a byte that does not come back as written is
    /// recorded as an issue.
    static func serialHalfRound(_ client: VfioUserClient, seed: Int) throws -> SerialCount {
        var generator = SplitMix(seed: UInt64(seed))
        var count = SerialCount()
        let bars = [RegionIndex.bar0, .bar1]
        for bar in bars { try client.write(bar, offset: 2, value: UART16550.fcrEnable) }
        for chunk in 0..<200 {
            for (port, bar) in bars.enumerated() {
                let bytes = (0..<Int(generator.next() % 16 + 1)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
                if chunk % 2 == 0 {
                    for byte in bytes { try client.write(bar, offset: 0, value: byte, posted: true) }
                } else {
                    _ = try client.writeMulti(bytes.map { .init(offset: 0, region: bar, count: 1, data: UInt64($0)) })
                }
                var back: [UInt8] = []
                while true {
                    let status = try client.read(bar, offset: 5, as: UInt8.self)
                    if status & UART16550.lsrOverrun != 0 { count.overrun[port] += 1 }
                    guard status & UART16550.lsrDataReady != 0 else { break }
                    back.append(try client.read(bar, offset: 0, as: UInt8.self))
                }
                if back != bytes {
                    Issue.record("port \(port) chunk \(chunk): wrote \(bytes), read back \(back)")
                    return count
                }
                count.looped[port] += bytes.count
            }
        }
        return count
    }

    struct NetFailure: Error { let message: String }

    /// One round of frames both ways: new drivers (memfd or, every other round, DMA by messages),
    /// batches of frames of every length with their sequence in the payload, each frame checked on
    /// arrival; then DEVICE_RESET on both. Returns (sent, received) per direction.
    static func netRound(_ round: Int, leftPath: String, rightPath: String) throws(NetFailure) -> ([NetCount], [NetCount]) {
        do {
            let messageMode = round % 2 == 0
            let drivers = [try VirtioNetDriver(path: leftPath, messageMode: messageMode),
                           try VirtioNetDriver(path: rightPath, messageMode: messageMode)]
            let macs = [leftMAC, rightMAC]
            for driver in drivers {
                guard try driver.negotiate([.version1, .netMAC, .netMergeableRxBuffers, .ringEventIndex]) else {
                    throw NetFailure(message: "negotiation refused")
                }
                try driver.start(queueSize: 256)
                try driver.postReceiveBuffers(64)
            }
            var sent = [NetCount(), NetCount()], received = [NetCount(), NetCount()]
            var sequence = 0
            for batch in 0..<16 {
                for from in 0..<2 {
                    let to = 1 - from
                    let frames = (0..<32).map { i -> [UInt8] in
                        sequence += 1
                        return TestFrame.make(to: macs[to], from: macs[from], length: 60 + (sequence * 97 + batch) % 1455, tag: sequence)
                    }
                    guard try drivers[from].transmit(frames) == frames.count else { throw NetFailure(message: "transmit ring full") }
                    // Both drivers take turns: with DMA by messages, the sender's device reads the
                    // frames through its driver while the receiver's writes them through the other.
                    var arrived: [VirtioNetDriver.Received] = [], reclaimed = 0
                    let deadline = monotonicNanoseconds() + 5_000_000_000
                    while (arrived.count < frames.count || reclaimed < frames.count) && monotonicNanoseconds() < deadline {
                        reclaimed += try drivers[from].reclaimTransmitted(waitingFor: 1, milliseconds: 1)
                        arrived += try drivers[to].receive(count: 1, milliseconds: 1)
                    }
                    guard arrived.map(\.frame) == frames, reclaimed == frames.count else {
                        throw NetFailure(message: "batch \(batch) from \(from): \(arrived.count) of \(frames.count) frames arrived (as sent: \(arrived.map(\.frame) == frames)), \(reclaimed) transmit buffers back")
                    }
                    try drivers[to].postReceiveBuffers(frames.count)
                    sent[from].frames += frames.count
                    sent[from].bytes += frames.reduce(0) { $0 + $1.count }
                    received[from].frames += arrived.count
                    received[from].bytes += arrived.reduce(0) { $0 + $1.frame.count }
                }
            }
            for driver in drivers { try driver.client.reset() }
            return (sent, received)
        } catch let failure as NetFailure {
            throw failure
        } catch {
            throw NetFailure(message: "\(error)")
        }
    }

}

/// A small deterministic generator (SplitMix64), so that a failing round can be replayed.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

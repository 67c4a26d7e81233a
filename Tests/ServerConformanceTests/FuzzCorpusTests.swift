import Support
import FuzzHarness
import MbochsDevice
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The fuzzers' seed corpus and every input that once crashed them, replayed through the same
/// harness on each test run: a fixed crash stays fixed.
@Suite("Fuzz corpus and regressions")
struct FuzzCorpusTests {
    static let root = repositoryRoot + "/Tests/Fuzz"

    static func files(_ directory: String) -> [String] {
        (directoryEntries(directory) ?? []).filter { !$0.hasPrefix(".") }.map { directory + "/" + $0 }
    }

    @Test func theSeedsAreTheConversationOfToday() throws {
        // The committed seeds are what `fuzz-session --seeds` writes: regenerate them when the conversation changes.
        for (name, bytes) in FuzzHarness.sessionSeeds {
            #expect(readBytes(Self.root + "/corpus/session/" + name) == bytes, "\(name)")
        }
        for (name, bytes) in FuzzHarness.decoderSeeds {
            #expect(readBytes(Self.root + "/corpus/decoder/" + name) == bytes, "\(name)")
        }
        for (name, bytes) in FuzzHarness.virtqueueSeeds {
            #expect(readBytes(Self.root + "/corpus/virtqueue/" + name) == bytes, "\(name)")
        }
        for (name, bytes) in FuzzHarness.mbochsSeeds {
            #expect(readBytes(Self.root + "/corpus/mbochs/" + name) == bytes, "\(name)")
        }
    }

    /// The mbochs seeds set what their names say: 320x240 at 32 bits per pixel (a stride of
    /// 1,280 bytes, 230,400 bytes of RGB) shows; 1920x1080 needs 8,294,400 bytes of a 1 MiB
    /// framebuffer and shows nothing.
    @Test func mbochsSeedsReachWhatTheyName() throws {
        let mbochs = FuzzHarness.Mbochs()
        let seeds = Dictionary(uniqueKeysWithValues: FuzzHarness.mbochsSeeds.map { ($0.name, $0.bytes) })
        let shown = FuzzHarness.Mbochs.Outcome(mode: DisplayMode(width: 320, height: 240, stride: 1280, offset: 0), pictureBytes: 230_400)
        #expect(try #require(seeds["mode-320x240"]).withUnsafeBytes { mbochs.run($0) } == shown)
        #expect(try #require(seeds["mode-and-stores"]).withUnsafeBytes { mbochs.run($0) } == shown)
        #expect(try #require(seeds["mode-too-large"]).withUnsafeBytes { mbochs.run($0) } == .init(mode: nil))
    }

    /// The virtqueue seeds do what their names say: two chains taken (the second through an
    /// indirect table), also across the wrap of the indexes; a chain whose next is itself refused
    /// as a loop; an indirect descriptor refused where INDIRECT_DESC was not negotiated. Run as control commands, the first chain
    /// (64 zero bytes: RX PROMISC with 62 bytes of data, where the spec has one) is refused
    /// (VIRTIO_NET_ERR, 1) and the second (RX PROMISC on) accepted (VIRTIO_NET_OK, 0).
    @Test func virtqueueSeedsReachWhatTheyName() throws {
        let virtqueue = FuzzHarness.Virtqueue()
        let seeds = Dictionary(uniqueKeysWithValues: FuzzHarness.virtqueueSeeds.map { ($0.name, $0.bytes) })
        for name in ["two-chains-copies", "two-chains-pointers", "two-chains-no-event-index", "two-chains-across-the-wrap"] {
            let outcome = try #require(seeds[name]).withUnsafeBytes { virtqueue.run($0) }
            #expect(outcome == .init(taken: 2, acks: [1, 0]), "\(name)")
        }
        #expect(try #require(seeds["looping-chain"]).withUnsafeBytes { virtqueue.run($0) } == .init(fault: .loop(head: 0)))
        #expect(try #require(seeds["indirect-not-negotiated"]).withUnsafeBytes { virtqueue.run($0) }
                == .init(taken: 1, acks: [1], fault: .indirectNotNegotiated(head: 2)))
    }

    /// Every input of a target's corpus and regressions through its harness: a failed invariant
    /// traps, as it does under the fuzzer.
    static func replay(_ target: String, atLeast count: Int, _ run: (UnsafeRawBufferPointer) -> Void) throws {
        let inputs = files(root + "/corpus/" + target) + files(root + "/regressions/" + target)
        #expect(inputs.count >= count, "\(target)")
        for input in inputs { try #require(readBytes(input)).withUnsafeBytes(run) }
    }

    @Test func inputsReplayCleanly() throws {
        let session = FuzzHarness.Session(), virtqueue = FuzzHarness.Virtqueue(), mbochs = FuzzHarness.Mbochs()
        try Self.replay("session", atLeast: 16) { session.run($0) }
        try Self.replay("decoder", atLeast: 17) { FuzzHarness.decode($0) }
        try Self.replay("virtqueue", atLeast: 6) { virtqueue.run($0) }
        try Self.replay("mbochs", atLeast: 3) { mbochs.run($0) }
    }
}

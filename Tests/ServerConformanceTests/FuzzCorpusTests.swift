import Support
import FuzzHarness
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
    }

    @Test func sessionInputsReplayCleanly() throws {
        let inputs = Self.files(Self.root + "/corpus/session") + Self.files(Self.root + "/regressions/session")
        #expect(inputs.count >= 16)
        let session = FuzzHarness.Session()
        for input in inputs {
            let bytes = try #require(readBytes(input))
            bytes.withUnsafeBytes { session.run($0) } // a failed invariant traps, as it does under the fuzzer
        }
    }

    @Test func decoderInputsReplayCleanly() throws {
        let inputs = Self.files(Self.root + "/corpus/decoder") + Self.files(Self.root + "/regressions/decoder")
        #expect(inputs.count >= 17)
        for input in inputs {
            try #require(readBytes(input)).withUnsafeBytes { FuzzHarness.decode($0) }
        }
    }
}

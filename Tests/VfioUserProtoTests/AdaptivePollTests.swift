@testable import Support
import Testing

@Suite("Adaptive polling")
struct AdaptivePollTests {
    @Test func thePolicyIsAdaptiveOffOrAMaximumInMicroseconds() {
        #expect(PollPolicy("adaptive") == .adaptive)
        #expect(PollPolicy("off") == .off)
        #expect(PollPolicy("50")?.maximumNanoseconds == 50_000)
        #expect(PollPolicy("10000")?.maximumNanoseconds == 10_000_000)
        for bad in ["10001", "-1", "fast", "", "1.5"] { #expect(PollPolicy(bad) == nil, "\(bad)") }
        #expect(PollPolicy.adaptive.maximumNanoseconds == 256_000)
        #expect(["off", "adaptive", "50"].map { PollPolicy($0)!.description } == ["off", "adaptive", "50"])
    }

    /// Requests that keep coming sooner than the maximum open the window step by step, from
    /// 4 µs doubling to the cap; sleeps longer than the cap close it again, halving to nothing.
    @Test func theWindowGrowsWhileRequestsComeAndClosesWhenIdle() {
        var poll = AdaptivePoll(.adaptive)
        #expect(poll.window == 0, "a new session sleeps until it is busy")
        var opened: [UInt64] = []
        for _ in 0..<8 {
            poll.slept(30_000)
            opened.append(poll.window)
        }
        #expect(opened == [4000, 8000, 16_000, 32_000, 64_000, 128_000, 256_000, 256_000])
        var closed: [UInt64] = []
        for _ in 0..<8 {
            poll.slept(1_000_000_000)
            closed.append(poll.window)
        }
        #expect(closed == [128_000, 64_000, 32_000, 16_000, 8000, 4000, 0, 0])
    }

    @Test func offNeverSpins() {
        var poll = AdaptivePoll(.off)
        for _ in 0..<10 { poll.slept(1000) }
        #expect(poll.window == 0)
    }
}

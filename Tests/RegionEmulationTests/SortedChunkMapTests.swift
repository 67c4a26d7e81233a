import RegionEmulation
import Testing

/// The DMA table's ordered map, against the plainest reference: a sorted array of its keys.
@Suite("Sorted chunk map")
struct SortedChunkMapTests {
    /// A small deterministic generator (xorshift), so a failure replays.
    struct Xorshift {
        var state: UInt64
        mutating func next(below bound: UInt64) -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state % bound
        }
    }

    /// The index of the first key >= `key` in the sorted reference.
    func lowerBound(_ sorted: [UInt64], _ key: UInt64) -> Int {
        var (low, high) = (0, sorted.count)
        while low < high {
            let middle = (low + high) / 2
            if sorted[middle] < key { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// Inserts and removes at random over a key range small enough that both often hit present
    /// keys, so blocks split, empty and merge many times; every answer is checked as it goes.
    @Test func randomInsertsAndRemovesAgreeWithASortedArray() {
        var map = SortedChunkMap<UInt64, Void>()
        var reference: [UInt64] = []
        var random = Xorshift(state: 0x2545_F491_4F6C_DD1D)
        for step in 0..<30_000 {
            let key = random.next(below: 3000) * 3
            let at = lowerBound(reference, key)
            let present = at < reference.count && reference[at] == key
            // Insert more than remove at first, then the reverse, so the table grows past a few
            // hundred keys and shrinks back.
            if random.next(below: 100) < (step < 15_000 ? 65 : 35) {
                #expect(map.insert(key, key &* 7, ()) == !present, "step \(step): insert \(key)")
                if !present { reference.insert(key, at: at) }
            } else {
                #expect(map.remove(key)?.value == (present ? key &* 7 : nil), "step \(step): remove \(key)")
                if present { reference.remove(at: at) }
            }
            let probe = random.next(below: 9100)
            let above = lowerBound(reference, probe) // the ceiling's index
            let hit = above < reference.count && reference[above] == probe
            let floor = hit ? probe : (above > 0 ? reference[above - 1] : nil)
            #expect(map.floor(probe)?.key == floor, "step \(step): floor(\(probe))")
            #expect(map.floor(probe).map { $0.value == $0.key &* 7 } ?? true)
            #expect(map.ceiling(probe)?.key == (above < reference.count ? reference[above] : nil), "step \(step): ceiling(\(probe))")
            #expect(map[probe] == (hit ? probe &* 7 : nil))
        }
        #expect(map.count == reference.count)
        #expect(map.entries.map(\.key) == reference)
        #expect(map.entries.allSatisfy { $0.value == $0.key &* 7 })
    }

    /// Keys in ascending order (how a client usually maps) fill blocks instead of splitting them in
    /// halves, so the keys a lookup searches take half the memory; any order stays correct.
    @Test func ascendingKeysFillTheirBlocks() {
        var ascending = SortedChunkMap<Int, Void>()
        for i in 0..<(65 * 64) { ascending.insert(UInt64(i) * 8192, i, ()) }
        #expect(ascending.blockCount == 65)
        #expect(ascending.entries.map(\.value) == Array(0..<(65 * 64)))

        var descending = SortedChunkMap<Int, Void>()
        for i in (0..<(65 * 64)).reversed() { descending.insert(UInt64(i) * 8192, i, ()) }
        #expect(descending.entries.map(\.value) == Array(0..<(65 * 64)))
        #expect(descending.floor(8191)?.value == 0)
        #expect(descending.ceiling(8193)?.value == 2)
        #expect(descending.blockCount <= 65 * 2, "split in halves at worst")
    }
}

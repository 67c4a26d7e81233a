import RegionEmulation
import Testing

/// The DMA table's ordered map, against the plainest reference: a sorted array of its keys.
@Suite("Sorted chunk map")
struct SortedChunkMapTests {
    /// A small deterministic generator (xorshift), so a failure replays; also the standard
    /// library's generator, for `shuffled(using:)`.
    struct Xorshift: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
        mutating func next(below bound: UInt64) -> UInt64 { next() % bound }
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
    /// keys, so blocks split, empty and merge many times; every answer is checked as it goes, and
    /// every key and gap every three thousand steps.
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
            if step % 3000 == 2999 { expectAgreement(map, reference, &random, "step \(step)") }
        }
        #expect(map.count == reference.count)
        #expect(map.entries.map(\.key) == reference)
        #expect(map.entries.allSatisfy { $0.value == $0.key &* 7 })
    }

    /// Checks floor, ceiling and exact lookups around every key and at random points, over all 64
    /// bits and within the keys' range.
    func expectAgreement(_ map: SortedChunkMap<UInt64, Void>, _ reference: [UInt64], _ random: inout Xorshift,
                         _ label: String) {
        var probes: [UInt64] = [0, 1, .max, .max - 1]
        for key in reference { probes += [key, key &- 1, key &+ 1] }
        for _ in 0..<500 { probes.append(random.next(below: .max)) }
        if let first = reference.first, let last = reference.last, last > first {
            for _ in 0..<2000 { probes.append(first + random.next(below: last - first)) }
        }
        for probe in probes {
            let above = lowerBound(reference, probe)
            let hit = above < reference.count && reference[above] == probe
            let floor = hit ? probe : (above > 0 ? reference[above - 1] : nil)
            #expect(map.floor(probe)?.key == floor, "\(label): floor(\(probe))")
            #expect(map.ceiling(probe)?.key == (above < reference.count ? reference[above] : nil), "\(label): ceiling(\(probe))")
            #expect((map[probe] != nil) == hit, "\(label): [\(probe)]")
        }
    }

    /// Lookups agree with the reference for keys spread evenly, bunched far apart (at 0, 2^40 and
    /// the top of the range), dense (5,000 consecutive keys and one at 2^63) and random over all
    /// 64 bits, before and after each kind of change: a key removed, a key below all others, one
    /// past the end, keys in a gap until a block splits, and enough removals for blocks to empty
    /// and merge.
    @Test func lookupsAgreeForEveryLayoutThroughEveryChange() {
        var random = Xorshift(state: 0x9E37_79B9_7F4A_7C15)
        let even = (0..<3000).map { UInt64($0) * 8192 + 0x1_0000_0000 }
        let uneven = (0..<3000).map { UInt64($0) * 12288 + 0x1_0000_0000 }
        let low: [UInt64] = (0..<1000).map { UInt64($0) * 4096 }
        let middle: [UInt64] = (0..<1000).map { (1 << 40) + UInt64($0) * 64 }
        let top: [UInt64] = (0..<1000).map { UInt64.max - UInt64($0) * 3 }
        let bunched = low + middle + top
        let dense = (0..<5000).map { UInt64($0) } + [1 << 63]
        let scattered: [UInt64] = [0, .max] + (0..<3000).map { _ in random.next(below: .max) }
        for (name, keys) in [("even", even), ("uneven", uneven), ("bunched", bunched), ("dense", dense), ("scattered", scattered)] {
            var map = SortedChunkMap<UInt64, Void>()
            var reference = Array(Set(keys)).sorted()
            // Ascending keys fill their blocks: `even` has blocks of 32.
            for key in name == "even" ? keys : keys.shuffled(using: &random) { map.insert(key, key &* 7, ()) }
            expectAgreement(map, reference, &random, name)
            for change in 0..<5 {
                let countBefore = map.count
                switch change {
                case 0: if map.remove(reference[64 * 3]) != nil { reference.remove(at: 64 * 3) }
                case 1: if reference[0] > 0 { map.insert(reference[0] - 1, 0, ()); reference.insert(reference[0] - 1, at: 0) }
                case 2: if reference.last! < .max { map.insert(reference.last! + 1, 0, ()); reference.append(reference.last! + 1) }
                case 3:
                    let blocks = map.blockCount
                    let mid = reference.count / 3
                    var key = reference[mid] + 1
                    let end = reference[mid + 1]
                    while map.blockCount == blocks && key < end {
                        map.insert(key, 0, ())
                        reference.insert(key, at: lowerBound(reference, key))
                        key += 1
                    }
                    #expect(map.blockCount > blocks || name == "dense", "\(name): a block split")
                default:
                    for (i, key) in reference.enumerated() where i % 3 != 0 { map.remove(key) }
                    reference = reference.indices.filter { $0 % 3 == 0 }.map { reference[$0] }
                }
                // (Keys at 0 or at the top leave nothing to insert below or past them.)
                #expect(map.count == reference.count || (change == 1 || change == 2) && map.count == countBefore)
                expectAgreement(map, reference, &random, "\(name), after change \(change)")
            }
        }
    }

    /// Keys in ascending order (how a client usually maps) fill blocks instead of splitting them in
    /// halves, so the keys a lookup searches take half the memory; any order stays correct.
    @Test func ascendingKeysFillTheirBlocks() {
        var ascending = SortedChunkMap<Int, Void>()
        for i in 0..<(65 * 32) { ascending.insert(UInt64(i) * 8192, i, ()) }
        #expect(ascending.blockCount == 65)
        #expect(ascending.entries.map(\.value) == Array(0..<(65 * 32)))

        var descending = SortedChunkMap<Int, Void>()
        for i in (0..<(65 * 32)).reversed() { descending.insert(UInt64(i) * 8192, i, ()) }
        #expect(descending.entries.map(\.value) == Array(0..<(65 * 32)))
        #expect(descending.floor(8191)?.value == 0)
        #expect(descending.ceiling(8193)?.value == 2)
        #expect(descending.blockCount <= 65 * 2, "split in halves at worst")
    }
}

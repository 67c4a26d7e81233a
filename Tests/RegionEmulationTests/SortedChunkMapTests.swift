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
    /// through buckets built over the map every three thousand steps.
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
            // Now and then a quiet spell: enough lookups for buckets over the map as it has grown.
            if step % 3000 == 2999 {
                for _ in 0..<map.count { map.noteLookup() }
                let built = map.bucketsAreCurrent
                #expect(built || map.count <= 8, "step \(step): buckets built")
                expectAgreement(map, reference, &random, "step \(step), buckets \(map.bucketKinds)")
            }
        }
        #expect(map.count == reference.count)
        #expect(map.entries.map(\.key) == reference)
        #expect(map.entries.allSatisfy { $0.value == $0.key &* 7 })
    }

    /// Checks floor, ceiling and exact lookups around every key and at random points, over all 64
    /// bits and within the keys' range (where a bucket naming the wrong run would show).
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

    /// Counts lookups until the buckets are built, which must take as many as there are keys.
    func expectRebuilt(_ map: inout SortedChunkMap<UInt64, Void>, _ label: String) {
        for _ in 0..<map.count - 1 { map.noteLookup() }
        let early = map.bucketsAreCurrent
        #expect(!early, "\(label): built only once lookups outnumber keys")
        map.noteLookup()
        let built = map.bucketsAreCurrent
        #expect(built, "\(label): built")
    }

    /// The buckets answer as the directory's binary search does, for keys spread evenly (8 KiB
    /// apart: every bucket a run; 12 KiB apart: blocks end inside buckets), bunched far apart (at
    /// 0, 2^40 and the top of the range), dense (5,000 consecutive keys and one at 2^63: one
    /// bucket holds more blocks than a bucket can count) and random over all 64 bits; any change
    /// makes them stale, and they come back after lookups.
    @Test func bucketsAnswerAsTheDirectorySearchDoes() {
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
            // Ascending keys fill their blocks, so `even` has blocks of 64 and buckets of 8 keys.
            for key in name == "even" ? keys : keys.shuffled(using: &random) { map.insert(key, key &* 7, ()) }
            expectAgreement(map, reference, &random, "\(name), directory search")
            expectRebuilt(&map, name)
            let kinds = map.bucketKinds
            switch name {
            case "even": #expect(kinds.directory == 0 && kinds.runs > 0, "\(name): \(kinds)")
            case "uneven": #expect(kinds.directory > 0 && kinds.runs > 15 * kinds.directory, "\(name): \(kinds)")
            default: #expect(kinds.directory > 0, "\(name): \(kinds)")
            }
            expectAgreement(map, reference, &random, "\(name), buckets")

            // Changes, each checked at once (the buckets stale, the directory searched) and again
            // once the buckets are back: a key removed, a key below all others, one past the end,
            // keys in a gap a third of the way in until a block splits, and enough removals for
            // blocks to empty and merge.
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
                guard map.count != countBefore else { continue }
                let stale = !map.bucketsAreCurrent
                #expect(stale, "\(name), change \(change): stale")
                expectAgreement(map, reference, &random, "\(name), right after change \(change)")
                expectRebuilt(&map, "\(name), change \(change)")
                expectAgreement(map, reference, &random, "\(name), after change \(change)")
            }
        }
    }

    /// A bucket's run is read eight keys long wherever it starts, the last block's end included
    /// (the map keeps spare slots past it; a debug build checks each run as it is made): blocks
    /// filled in order by keys whose spacing does not divide a bucket's width start runs at every
    /// place, and every key and the gaps beside it are found through them, in maps of one block
    /// (any with more than eight keys has buckets) to four.
    @Test func runsReachingTheLastBlocksEndAreRead() {
        for spacing: UInt64 in [3 * 8192, 5 * 8192, 7 * 4096] {
            for count in stride(from: 9, through: 200, by: 7) { // from one block to four
                var map = SortedChunkMap<UInt64, Void>()
                let keys = (0..<UInt64(count)).map { 0x1_0000_0000 + $0 * spacing }
                for key in keys { map.insert(key, key &* 7, ()) }
                for _ in 0..<count { map.noteLookup() }
                let kinds = map.bucketKinds
                #expect(map.bucketsAreCurrent && kinds.runs > 0, "spacing \(spacing), \(count) keys: \(kinds)")
                for (i, key) in keys.enumerated() {
                    #expect(map.floor(key)?.value == key &* 7)
                    #expect(map.floor(key + spacing - 1)?.key == key)
                    #expect(map.floor(key - 1)?.key == (i > 0 ? keys[i - 1] : nil))
                }
            }
        }
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

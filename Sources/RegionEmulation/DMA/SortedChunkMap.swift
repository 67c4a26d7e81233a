import CLinux

/// An ordered map from `UInt64` keys to a value and a payload each: sorted blocks of up to 64 keys
/// in one flat array, found through a sorted directory of each block's first key, place and count.
///
/// Values are what lookups read and payloads what only the rare paths need, in arrays of their
/// own: a lookup loads the keys and one value, so a small value keeps the whole searched part of
/// a large map in cache (at 65,535 DMA mappings: 512 KiB of keys and 512 KiB of 8-byte values,
/// where one array of 40-byte records was 2.5 MiB and a memory miss per lookup).
///
/// A lookup is a branchless binary search of the directory, whose records hold each block's place
/// and count beside its first key (in arrays of their own they were two more dependent loads: 5-10
/// ns more per lookup at 1 and at 65,535 mappings alike, measured with both layouts interleaved in
/// one process), then a count in one 512-byte block (of the first keys of its groups of eight, then
/// of one group's keys, whose values are prefetched meanwhile; the loads are independent, where a
/// binary search there measured slower): O(log n) with few cache lines touched and no
/// data-dependent branches to mispredict.
///
/// A map of more than eight keys also has buckets: the range of keys cut into equal buckets, each
/// naming the slot of the greatest key at or below its start and how many keys follow that one in
/// the bucket, when these are at most seven and in the same block (most buckets, when keys are
/// spread about evenly). A lookup then loads its bucket and counts over that run of keys while the
/// run's values are prefetched: two dependent loads instead of the search's five or more. (In the
/// suite's DMA benchmark, random translations at 65,535 mappings against one went from 53-56% to
/// 59-73% with these buckets in place of coarser ones that named a directory record, and to 74-78%
/// once a run was read eight keys long, `clinux_floor_in_run`: the big table added 30-35 ns to a
/// 36-38 ns translation, now 11-15; a single block of 16 to 64 took 8-10 ns more than one key
/// until it had buckets too, now 1-2.) Any other bucket names the run of
/// directory records whose blocks start in it, and its lookups search those as above; so keys
/// bunched into few buckets stay O(log n). The width is the widest, from about eight keys per
/// bucket down to two buckets per key, where at most one bucket in sixteen falls back so.
///
/// Any insert or remove makes the buckets stale, and lookups search the whole directory; they are
/// rebuilt (in O(n)) once `noteLookup` has counted as many lookups as there are keys since, so
/// their cost is spread over those lookups and a run of changes pays nothing.
///
/// Insert and remove move at most one block (64 entries) plus, on a split or a merge,
/// the directory (n/32 to n/64 entries). Blocks live anywhere in the flat arrays and are reused, so
/// nothing else moves. At the 65,535 mappings vfio-user allows this stays flat where one sorted
/// array would move half a megabyte per insert, without a balanced tree's per-node allocations.
public struct SortedChunkMap<Value: BitwiseCopyable, Payload> {
    @usableFromInline static var blockCapacity: Int { 64 }

    /// A block's record in the directory: its first key, where it lies in the flat arrays (its
    /// first slot is `block * blockCapacity`) and how many entries it holds.
    private struct DirectoryEntry {
        var firstKey: UInt64
        var block: Int32
        var count: Int32
    }

    private var directory: [DirectoryEntry] = []
    /// Blocks' keys, then `spareKeys` slots more, so that a bucket's run may always be read eight
    /// keys long (`clinux_floor_in_run`).
    private var keys: [UInt64] = Array(repeating: 0, count: spareKeys)
    /// Not optional, so that a value takes its own size and no more: slots past a block's count
    /// hold stale or filler copies, harmless for plain data (hence `BitwiseCopyable`).
    private var values: [Value] = []
    private var payloads: [Payload?] = []
    private var freeBlocks: [Int] = []
    public private(set) var count = 0

    /// `buckets[i]`, for the keys from `bucketBase + i << bucketShift` to the next bucket's start: a
    /// run, `slot << 3 | n`, the slot of the greatest key <= that start followed in its block by
    /// the bucket's other `n` keys; or, with `blocksFlag`, `entry << 6 | m`, the directory entries
    /// `entry...entry + m` (to the directory's end when `m` is `blocksToEnd`). Empty while stale.
    private var buckets: [UInt32] = []
    private var bucketBase: UInt64 = 0
    private var bucketShift: UInt64 = 0
    /// Lookups counted since the last change.
    private var staleLookups = 0
    private static var spareKeys: Int { 7 }
    private static var blocksFlag: UInt32 { 1 << 31 }
    private static var blocksToEnd: UInt32 { (1 << 6) - 1 }
    /// Slots and directory entries past these do not fit in a bucket (nor does a map so big get buckets).
    private static var maximumBucketedSlots: Int { 1 << 25 }

    public init() {}

    public var isEmpty: Bool { count == 0 }

    /// Blocks in use: `count / blockCount` is how full they are (64 at most).
    public var blockCount: Int { directory.count }

    /// Words from one directory record's first key to the next one's.
    private static var directoryStep: Int { MemoryLayout<DirectoryEntry>.stride / MemoryLayout<UInt64>.stride }

    /// Index of the last directory entry <= `key` in `directory[start..<start + n]`, or -1 (branch-free).
    @inline(__always)
    private static func lastAtMost(_ directory: UnsafeBufferPointer<DirectoryEntry>, _ start: Int, _ n: Int, _ key: UInt64) -> Int {
        // The first keys, `directoryStep` words apart (`firstKey` leads each record).
        assert(MemoryLayout<DirectoryEntry>.offset(of: \.firstKey) == 0)
        let firstKeys = UnsafeRawPointer(directory.baseAddress! + start).assumingMemoryBound(to: UInt64.self)
        return start + Int(clinux_last_at_most(firstKeys, directoryStep, n, key, nil, 0))
    }

    /// The directory entry and the position in its block of the greatest key <= `key`, searching
    /// the `n` directory entries from `start` (the whole directory unless a bucket narrowed it).
    @inline(__always)
    private func locate(_ key: UInt64, entries start: Int = 0, _ n: Int? = nil) -> (entry: Int, block: Int, index: Int)? {
        let entry = directory.withUnsafeBufferPointer { Self.lastAtMost($0, start, n ?? $0.count, key) }
        guard entry >= start else { return nil }
        let record = directory[entry]
        let block = Int(record.block)
        // The block's values go along, for the C search to prefetch the chosen group's.
        let first = block * Self.blockCapacity
        let index = keys.withUnsafeBufferPointer { keys in
            values.withUnsafeBytes { values in
                Int(clinux_last_at_most(keys.baseAddress! + first, 1, Int(record.count), key,
                                        values.baseAddress! + first * MemoryLayout<Value>.stride,
                                        MemoryLayout<Value>.stride))
            }
        }
        return (entry, block, index)
    }

    /// The slot of the greatest key <= `key`, or nil: through its bucket when they are current.
    @inline(__always)
    private func floorSlot(_ key: UInt64) -> Int? {
        var (entry, n) = (0, directory.count) // the directory entries to search
        if !buckets.isEmpty {
            guard key >= bucketBase else { return nil } // the base is the smallest key
            let word = buckets.withUnsafeBufferPointer { buckets in
                buckets[Int(min((key - bucketBase) >> bucketShift, UInt64(buckets.count - 1)))]
            }
            if word & Self.blocksFlag == 0 {
                let slot = Int(word >> 3)
                return slot + keys.withUnsafeBufferPointer { keys in
                    values.withUnsafeBytes { values in
                        Int(clinux_floor_in_run(keys.baseAddress! + slot, Int(word & 7), key,
                                                values.baseAddress! + slot * MemoryLayout<Value>.stride,
                                                MemoryLayout<Value>.stride))
                    }
                }
            }
            // The bucket's start is at or above the first key of `entry`, so the key is too.
            entry = Int((word & ~Self.blocksFlag) >> 6)
            let more = word & Self.blocksToEnd
            n = more == Self.blocksToEnd ? directory.count - entry : Int(more) + 1
        }
        return locate(key, entries: entry, n).map { $0.block * Self.blockCapacity + $0.index }
    }

    /// Whether lookups go through the buckets now (for tests).
    public var bucketsAreCurrent: Bool { !buckets.isEmpty }

    /// How many buckets name a run of keys, and how many directory entries (for tests).
    public var bucketKinds: (runs: Int, directory: Int) {
        let directory = buckets.count { $0 & Self.blocksFlag != 0 }
        return (buckets.count - directory, directory)
    }

    /// Counts a lookup: once as many as there are keys have found the buckets stale, they are
    /// rebuilt. Lookups are right without it, only slower in a big map.
    @inline(__always)
    public mutating func noteLookup() {
        guard buckets.isEmpty, count > 8, keys.count <= Self.maximumBucketedSlots else { return }
        staleLookups += 1
        if staleLookups >= count { rebuildBuckets() }
    }

    /// Buckets as wide as keep all but one in sixteen of them runs, starting from about eight keys
    /// per bucket and narrowing down to two buckets per key.
    private mutating func rebuildBuckets() {
        let base = directory[0].firstKey
        let last = directory[directory.count - 1]
        let span = keys[Int(last.block) * Self.blockCapacity + Int(last.count) - 1] - base
        var shift: UInt64 = 0
        while span >> shift >= UInt64(max(count / 8, 1)) { shift += 1 }
        while fillBuckets(base, span, shift) > buckets.count / 16 && shift > 0 && span >> (shift - 1) < UInt64(2 * count) {
            shift -= 1
        }
        bucketBase = base
        bucketShift = shift
    }

    /// Fills `buckets` for buckets `1 << shift` wide from `base` (the first key) over `span` (to the
    /// last key), walking the keys in order once; returns how many name directory entries rather
    /// than a run.
    private mutating func fillBuckets(_ base: UInt64, _ span: UInt64, _ shift: UInt64) -> Int {
        buckets.removeAll(keepingCapacity: true)
        var (entry, position) = (0, 0) // the greatest key <= the bucket's start: its directory entry and place
        var fallbacks = 0
        for bucket in 0...(span >> shift) {
            let start = base + bucket << shift
            func inBucket(_ key: UInt64) -> Bool { (key - base) >> shift == bucket }
            while true {
                if position + 1 < Int(directory[entry].count) {
                    guard keys[Int(directory[entry].block) * Self.blockCapacity + position + 1] <= start else { break }
                    position += 1
                } else {
                    guard entry + 1 < directory.count, directory[entry + 1].firstKey <= start else { break }
                    (entry, position) = (entry + 1, 0)
                }
            }
            let record = directory[entry]
            let slot = Int(record.block) * Self.blockCapacity + position
            var following = 0
            while following < 8, position + following + 1 < Int(record.count), inBucket(keys[slot + following + 1]) {
                following += 1
            }
            let crosses = position + following + 1 == Int(record.count) && entry + 1 < directory.count
                && inBucket(directory[entry + 1].firstKey)
            if following < 8 && !crosses {
                assert(slot + Self.spareKeys < keys.count, "a run's eight keys must be readable")
                buckets.append(UInt32(slot) << 3 | UInt32(following))
                continue
            }
            var more: UInt32 = 0
            while more < Self.blocksToEnd, entry + Int(more) + 1 < directory.count,
                  inBucket(directory[entry + Int(more) + 1].firstKey) {
                more += 1
            }
            buckets.append(Self.blocksFlag | UInt32(entry) << 6 | more)
            fallbacks += 1
        }
        return fallbacks
    }

    /// The keys changed: the buckets are stale.
    private mutating func changed() {
        if !buckets.isEmpty { buckets.removeAll(keepingCapacity: true) }
        staleLookups = 0
    }

    /// A position in the map, valid until the next change to it.
    public struct Index {
        let slot: Int
    }

    @inline(__always) public func value(at index: Index) -> Value { values[index.slot] }
    public func payload(at index: Index) -> Payload { payloads[index.slot]! }

    /// The position of `key` itself.
    public func index(of key: UInt64) -> Index? {
        guard let slot = floorSlot(key), keys[slot] == key else { return nil }
        return Index(slot: slot)
    }

    public subscript(key: UInt64) -> Value? { index(of: key).map { values[$0.slot] } }

    /// Changes the value stored under `key` in place; false if the key is absent.
    @discardableResult
    public mutating func modify(_ key: UInt64, _ body: (inout Value) -> Void) -> Bool {
        guard let index = index(of: key) else { return false }
        body(&values[index.slot])
        return true
    }

    /// The entry with the greatest key <= `key`, and its position.
    @inline(__always)
    public func floorEntry(_ key: UInt64) -> (index: Index, key: UInt64, value: Value)? {
        guard let slot = floorSlot(key) else { return nil }
        return (Index(slot: slot), keys[slot], values[slot])
    }

    /// `floorEntry` without the position.
    public func floor(_ key: UInt64) -> (key: UInt64, value: Value)? { floorEntry(key).map { ($0.key, $0.value) } }

    /// The entry with the smallest key >= `key`.
    public func ceiling(_ key: UInt64) -> (key: UInt64, value: Value)? {
        guard !directory.isEmpty else { return nil }
        guard let (entry, block, index) = locate(key) else {
            let first = Int(directory[0].block) * Self.blockCapacity
            return (keys[first], values[first])
        }
        let slot = block * Self.blockCapacity + index
        if keys[slot] == key { return (key, values[slot]) }
        if index + 1 < Int(directory[entry].count) { return (keys[slot + 1], values[slot + 1]) }
        guard entry + 1 < directory.count else { return nil }
        let next = Int(directory[entry + 1].block) * Self.blockCapacity
        return (keys[next], values[next])
    }

    /// A block for new entries; `filler` fills its value slots if the arrays have to grow.
    private mutating func allocateBlock(_ filler: Value) -> Int {
        if let block = freeBlocks.popLast() { return block }
        keys.insert(contentsOf: repeatElement(0, count: Self.blockCapacity), at: keys.count - Self.spareKeys)
        values.append(contentsOf: repeatElement(filler, count: Self.blockCapacity))
        payloads.append(contentsOf: repeatElement(nil, count: Self.blockCapacity))
        return values.count / Self.blockCapacity - 1
    }

    private mutating func freeBlock(_ block: Int) {
        for slot in block * Self.blockCapacity ..< (block + 1) * Self.blockCapacity { clear(slot) }
        freeBlocks.append(block)
    }

    private mutating func store(_ slot: Int, _ key: UInt64, _ value: Value, _ payload: Payload) {
        keys[slot] = key
        values[slot] = value
        payloads[slot] = payload
    }

    private mutating func move(_ from: Int, to: Int) {
        keys[to] = keys[from]
        values[to] = values[from]
        payloads[to] = payloads[from]
    }

    private mutating func clear(_ slot: Int) { payloads[slot] = nil }

    /// Inserts a new key; returns false (and changes nothing) if the key is present.
    @discardableResult
    public mutating func insert(_ key: UInt64, _ value: Value, _ payload: Payload) -> Bool {
        if directory.isEmpty {
            changed()
            let block = allocateBlock(value)
            store(block * Self.blockCapacity, key, value, payload)
            directory = [DirectoryEntry(firstKey: key, block: Int32(block), count: 1)]
            count = 1
            return true
        }
        var entry = 0
        var position = 0 // insertion index within the block
        if let found = locate(key) {
            if keys[found.block * Self.blockCapacity + found.index] == key { return false }
            entry = found.entry
            position = found.index + 1
        }
        changed()
        if directory[entry].count == Self.blockCapacity && position == Self.blockCapacity {
            // Past the end of a full block (ascending keys, the order maps usually come in): a new
            // block after it, not a split, so such a table fills its blocks instead of halving them.
            let fresh = allocateBlock(value)
            store(fresh * Self.blockCapacity, key, value, payload)
            directory.insert(DirectoryEntry(firstKey: key, block: Int32(fresh), count: 1), at: entry + 1)
            count += 1
            return true
        }
        if directory[entry].count == Self.blockCapacity {
            // Split: the upper half moves to a new block placed after this one in the directory.
            let half = Self.blockCapacity / 2
            let block = Int(directory[entry].block)
            let upper = allocateBlock(value)
            for i in 0..<half {
                move(block * Self.blockCapacity + half + i, to: upper * Self.blockCapacity + i)
                clear(block * Self.blockCapacity + half + i)
            }
            directory[entry].count = Int32(half)
            directory.insert(DirectoryEntry(firstKey: keys[upper * Self.blockCapacity], block: Int32(upper), count: Int32(half)),
                             at: entry + 1)
            if position > half {
                entry += 1
                position -= half
            }
        }
        let base = Int(directory[entry].block) * Self.blockCapacity
        var i = Int(directory[entry].count)
        while i > position {
            move(base + i - 1, to: base + i)
            i -= 1
        }
        store(base + position, key, value, payload)
        directory[entry].count += 1
        if position == 0 {
            directory[entry].firstKey = key
        }
        count += 1
        return true
    }

    @discardableResult
    public mutating func remove(_ key: UInt64) -> (value: Value, payload: Payload)? {
        guard let (entry, block, index) = locate(key) else { return nil }
        let base = block * Self.blockCapacity
        guard keys[base + index] == key else { return nil }
        changed()
        let removed = (values[base + index], payloads[base + index]!)
        let left = Int(directory[entry].count) - 1
        for i in index ..< left { move(base + i + 1, to: base + i) }
        directory[entry].count = Int32(left)
        clear(base + left)
        count -= 1
        if left == 0 {
            freeBlock(block)
            directory.remove(at: entry)
            return removed
        }
        if index == 0 {
            directory[entry].firstKey = keys[base]
        }
        // Merge a small block with the next one so the directory stays short.
        if entry + 1 < directory.count {
            let next = directory[entry + 1]
            if left + Int(next.count) <= Self.blockCapacity / 2 {
                let from = Int(next.block) * Self.blockCapacity
                for i in 0..<Int(next.count) { move(from + i, to: base + left + i) }
                directory[entry].count += next.count
                freeBlock(Int(next.block))
                directory.remove(at: entry + 1)
                }
        }
        return removed
    }

    public mutating func removeAll() { self = SortedChunkMap() }

    /// All entries in key order.
    public var entries: [(key: UInt64, value: Value, payload: Payload)] {
        var result: [(key: UInt64, value: Value, payload: Payload)] = []
        result.reserveCapacity(count)
        forEach { result.append(($0, $1, $2)) }
        return result
    }

    public func forEach(_ body: (UInt64, Value, Payload) throws -> Void) rethrows {
        for record in directory {
            let first = Int(record.block) * Self.blockCapacity
            for slot in first ..< first + Int(record.count) {
                try body(keys[slot], values[slot], payloads[slot]!)
            }
        }
    }
}

extension SortedChunkMap: Sendable where Value: Sendable, Payload: Sendable {}

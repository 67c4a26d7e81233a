/// An ordered map from `UInt64` keys to a value and a payload each: sorted blocks of up to 32
/// slots in one flat array, found through a sorted directory of each block's first key.
///
/// A lookup is two binary searches, the directory's and then one block's. A slot holds a key and
/// its value, which is what lookups read; payloads, which only the rare paths need, are in an
/// array of their own. An insert or a remove moves at most one block's slots, and on a split or a
/// merge the directory: at the 65,535 DMA mappings vfio-user allows, a few tens of KiB, where one
/// sorted array would move a megabyte. Blocks live anywhere in the flat arrays and are reused.
package struct SortedChunkMap<Value: BitwiseCopyable, Payload> {
    @usableFromInline static var blockCapacity: Int { 32 }

    /// A block's record in the directory: its first key, where it lies in the flat arrays (its
    /// first slot is `block * blockCapacity`) and how many entries it holds.
    private struct DirectoryEntry {
        var firstKey: UInt64
        var block: Int32
        var count: Int32
    }

    /// A key and its value side by side, so that the line a lookup finds its key in holds the value.
    fileprivate struct Slot {
        var key: UInt64
        var value: Value
    }

    private var directory: [DirectoryEntry] = []
    /// Not optional, so that a value takes its own size and no more: slots past a block's count
    /// hold stale or filler copies, harmless for plain data (hence `BitwiseCopyable`).
    private var slots: [Slot] = []
    private var payloads: [Payload?] = []
    private var freeBlocks: [Int] = []
    package private(set) var count = 0

    package init() {}

    package var isEmpty: Bool { count == 0 }

    /// Blocks in use: `count / blockCount` is how full they are (`blockCapacity` at most).
    package var blockCount: Int { directory.count }

    /// The directory entry and the position in its block of the greatest key <= `key`.
    @inline(__always)
    private func locate(_ key: UInt64) -> (entry: Int, block: Int, index: Int)? {
        let entry = directory.withUnsafeBufferPointer { records in
            Self.lastAtMost(key, count: records.count) { records[$0].firstKey }
        }
        guard entry >= 0 else { return nil }
        let record = directory[entry]
        let block = Int(record.block)
        let index = slots.withUnsafeBufferPointer { slots in
            let first = block * Self.blockCapacity
            return Self.lastAtMost(key, count: Int(record.count)) { slots[first + $0].key }
        }
        return (entry, block, index)
    }

    /// The position of the last of `count` ascending keys that is <= `key`, or -1: a binary search
    /// that halves the range by arithmetic, not by a branch, which a random key would mispredict
    /// at every other step. The comparison is the borrow of a 128-bit subtraction (all ones when
    /// `key` is below), which the compiler keeps as arithmetic where it turns a `?:` into a branch.
    @inline(__always)
    private static func lastAtMost(_ key: UInt64, count: Int, _ keyAt: (Int) -> UInt64) -> Int {
        guard count > 0 else { return -1 }
        var base = 0
        var n = count
        while n > 1 {
            let half = n &>> 1
            let below = Int(truncatingIfNeeded: UInt64(truncatingIfNeeded: (UInt128(key) &- UInt128(keyAt(base &+ half))) >> 64))
            base &+= half & ~below
            n &-= half
        }
        return keyAt(base) <= key ? base : base - 1
    }

    /// The slot of the greatest key <= `key`, or nil.
    @inline(__always)
    private func floorSlot(_ key: UInt64) -> Int? {
        locate(key).map { $0.block * Self.blockCapacity + $0.index }
    }

    /// A position in the map, valid until the next change to it.
    package struct Index {
        let slot: Int
    }

    @inline(__always) package func value(at index: Index) -> Value { slots[index.slot].value }
    package func payload(at index: Index) -> Payload { payloads[index.slot]! }

    /// The position of `key` itself.
    package func index(of key: UInt64) -> Index? {
        guard let slot = floorSlot(key), slots[slot].key == key else { return nil }
        return Index(slot: slot)
    }

    package subscript(key: UInt64) -> Value? { index(of: key).map { slots[$0.slot].value } }

    /// Changes the value stored under `key` in place; false if the key is absent.
    @discardableResult
    package mutating func modify(_ key: UInt64, _ body: (inout Value) -> Void) -> Bool {
        guard let index = index(of: key) else { return false }
        body(&slots[index.slot].value)
        return true
    }

    /// The entry with the greatest key <= `key`, and its position.
    @inline(__always)
    package func floorEntry(_ key: UInt64) -> (index: Index, key: UInt64, value: Value)? {
        guard let slot = floorSlot(key) else { return nil }
        return (Index(slot: slot), slots[slot].key, slots[slot].value)
    }

    /// `floorEntry` without the position.
    package func floor(_ key: UInt64) -> (key: UInt64, value: Value)? { floorEntry(key).map { ($0.key, $0.value) } }

    /// The entry with the smallest key >= `key`.
    package func ceiling(_ key: UInt64) -> (key: UInt64, value: Value)? {
        guard !directory.isEmpty else { return nil }
        guard let (entry, block, index) = locate(key) else {
            let first = Int(directory[0].block) * Self.blockCapacity
            return (slots[first].key, slots[first].value)
        }
        let slot = block * Self.blockCapacity + index
        if slots[slot].key == key { return (key, slots[slot].value) }
        if index + 1 < Int(directory[entry].count) { return (slots[slot + 1].key, slots[slot + 1].value) }
        guard entry + 1 < directory.count else { return nil }
        let next = Int(directory[entry + 1].block) * Self.blockCapacity
        return (slots[next].key, slots[next].value)
    }

    /// A block for new entries; `filler` fills its value slots if the arrays have to grow.
    private mutating func allocateBlock(_ filler: Value) -> Int {
        if let block = freeBlocks.popLast() { return block }
        slots.append(contentsOf: repeatElement(Slot(key: 0, value: filler), count: Self.blockCapacity))
        payloads.append(contentsOf: repeatElement(nil, count: Self.blockCapacity))
        return slots.count / Self.blockCapacity - 1
    }

    private mutating func freeBlock(_ block: Int) {
        for slot in block * Self.blockCapacity ..< (block + 1) * Self.blockCapacity { clear(slot) }
        freeBlocks.append(block)
    }

    private mutating func store(_ slot: Int, _ key: UInt64, _ value: Value, _ payload: Payload) {
        slots[slot] = Slot(key: key, value: value)
        payloads[slot] = payload
    }

    private mutating func move(_ from: Int, to: Int) {
        slots[to] = slots[from]
        payloads[to] = payloads[from]
    }

    private mutating func clear(_ slot: Int) { payloads[slot] = nil }

    /// Inserts a new key; returns false (and changes nothing) if the key is present.
    @discardableResult
    package mutating func insert(_ key: UInt64, _ value: Value, _ payload: Payload) -> Bool {
        if directory.isEmpty {
            let block = allocateBlock(value)
            store(block * Self.blockCapacity, key, value, payload)
            directory = [DirectoryEntry(firstKey: key, block: Int32(block), count: 1)]
            count = 1
            return true
        }
        var entry = 0
        var position = 0 // insertion index within the block
        if let found = locate(key) {
            if slots[found.block * Self.blockCapacity + found.index].key == key { return false }
            entry = found.entry
            position = found.index + 1
        }
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
            directory.insert(DirectoryEntry(firstKey: slots[upper * Self.blockCapacity].key, block: Int32(upper), count: Int32(half)),
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
    package mutating func remove(_ key: UInt64) -> (value: Value, payload: Payload)? {
        guard let (entry, block, index) = locate(key) else { return nil }
        let base = block * Self.blockCapacity
        guard slots[base + index].key == key else { return nil }
        let removed = (slots[base + index].value, payloads[base + index]!)
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
            directory[entry].firstKey = slots[base].key
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

    package mutating func removeAll() { self = SortedChunkMap() }

    /// All entries in key order.
    package var entries: [(key: UInt64, value: Value, payload: Payload)] {
        var result: [(key: UInt64, value: Value, payload: Payload)] = []
        result.reserveCapacity(count)
        forEach { result.append(($0, $1, $2)) }
        return result
    }

    package func forEach(_ body: (UInt64, Value, Payload) throws -> Void) rethrows {
        for record in directory {
            let first = Int(record.block) * Self.blockCapacity
            for slot in first ..< first + Int(record.count) {
                try body(slots[slot].key, slots[slot].value, payloads[slot]!)
            }
        }
    }
}

extension SortedChunkMap: Sendable where Value: Sendable, Payload: Sendable {}
extension SortedChunkMap.Slot: Sendable where Value: Sendable {}

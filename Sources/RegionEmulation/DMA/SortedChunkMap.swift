import CLinux

/// An ordered map from `UInt64` keys to values: sorted blocks of up to 64 keys in one flat array,
/// found through a sorted directory of each block's first key.
///
/// A lookup is two branchless binary searches over contiguous `UInt64`s (the directory, then one
/// 512-byte block): O(log n) with few cache lines touched and no data-dependent branches to
/// mispredict. Insert and remove move at most one block (64 entries) plus, on a split or a merge,
/// the directory (n/32 to n/64 entries). Blocks live anywhere in the flat arrays and are reused, so
/// nothing else moves. At the 65,535 mappings vfio-user allows this stays flat where one sorted
/// array would move half a megabyte per insert, without a balanced tree's per-node allocations.
public struct SortedChunkMap<Value> {
    @usableFromInline static var blockCapacity: Int { 64 }

    private var directoryKeys: [UInt64] = []
    private var directoryBlocks: [Int] = []
    private var keys: [UInt64] = []
    private var values: [Value?] = []
    private var counts: [Int] = []
    private var freeBlocks: [Int] = []
    public private(set) var count = 0

    public init() {}

    public var isEmpty: Bool { count == 0 }

    /// Blocks in use: `count / blockCount` is how full they are (64 at most).
    public var blockCount: Int { directoryKeys.count }

    /// Index of the last element <= `key` in `buffer[start..<start + n]`, or -1 (branch-free).
    @inline(__always)
    private static func lastAtMost(_ buffer: UnsafeBufferPointer<UInt64>, _ start: Int, _ n: Int, _ key: UInt64) -> Int {
        Int(clinux_last_at_most(buffer.baseAddress! + start, n, key))
    }

    /// The directory entry and the position in its block of the greatest key <= `key`.
    @inline(__always)
    private func locate(_ key: UInt64) -> (entry: Int, block: Int, index: Int)? {
        let entry = directoryKeys.withUnsafeBufferPointer { Self.lastAtMost($0, 0, $0.count, key) }
        guard entry >= 0 else { return nil }
        let block = directoryBlocks[entry]
        let index = keys.withUnsafeBufferPointer { Self.lastAtMost($0, block * Self.blockCapacity, counts[block], key) }
        return (entry, block, index)
    }

    public subscript(key: UInt64) -> Value? {
        guard let (_, block, index) = locate(key), keys[block * Self.blockCapacity + index] == key else { return nil }
        return values[block * Self.blockCapacity + index]
    }

    /// Changes the value stored under `key` in place; false if the key is absent.
    @discardableResult
    public mutating func modify(_ key: UInt64, _ body: (inout Value) -> Void) -> Bool {
        guard let (_, block, index) = locate(key), keys[block * Self.blockCapacity + index] == key else { return false }
        body(&values[block * Self.blockCapacity + index]!)
        return true
    }

    /// The entry with the greatest key <= `key`. Always inlined: called on a class's stored map,
    /// an out-of-line call copies the whole struct first (a retain and release of every array).
    @inline(__always)
    public func floor(_ key: UInt64) -> (key: UInt64, value: Value)? {
        guard let (_, block, index) = locate(key) else { return nil }
        let slot = block * Self.blockCapacity + index
        return (keys[slot], values[slot]!)
    }

    /// The entry with the smallest key >= `key`.
    public func ceiling(_ key: UInt64) -> (key: UInt64, value: Value)? {
        guard !directoryKeys.isEmpty else { return nil }
        guard let (entry, block, index) = locate(key) else {
            let first = directoryBlocks[0] * Self.blockCapacity
            return (keys[first], values[first]!)
        }
        let slot = block * Self.blockCapacity + index
        if keys[slot] == key { return (key, values[slot]!) }
        if index + 1 < counts[block] { return (keys[slot + 1], values[slot + 1]!) }
        guard entry + 1 < directoryKeys.count else { return nil }
        let next = directoryBlocks[entry + 1] * Self.blockCapacity
        return (keys[next], values[next]!)
    }

    private mutating func allocateBlock() -> Int {
        if let block = freeBlocks.popLast() { return block }
        keys.append(contentsOf: repeatElement(0, count: Self.blockCapacity))
        values.append(contentsOf: repeatElement(nil, count: Self.blockCapacity))
        counts.append(0)
        return counts.count - 1
    }

    private mutating func freeBlock(_ block: Int) {
        for slot in block * Self.blockCapacity ..< (block + 1) * Self.blockCapacity { values[slot] = nil }
        counts[block] = 0
        freeBlocks.append(block)
    }

    /// Inserts a new key; returns false (and changes nothing) if the key is present.
    @discardableResult
    public mutating func insert(_ key: UInt64, _ value: Value) -> Bool {
        if directoryKeys.isEmpty {
            let block = allocateBlock()
            keys[block * Self.blockCapacity] = key
            values[block * Self.blockCapacity] = value
            counts[block] = 1
            directoryKeys = [key]
            directoryBlocks = [block]
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
        var block = directoryBlocks[entry]
        if counts[block] == Self.blockCapacity && position == Self.blockCapacity {
            // Past the end of a full block (ascending keys, the order maps usually come in): a new
            // block after it, not a split, so such a table fills its blocks instead of halving them.
            let fresh = allocateBlock()
            keys[fresh * Self.blockCapacity] = key
            values[fresh * Self.blockCapacity] = value
            counts[fresh] = 1
            directoryKeys.insert(key, at: entry + 1)
            directoryBlocks.insert(fresh, at: entry + 1)
            count += 1
            return true
        }
        if counts[block] == Self.blockCapacity {
            // Split: the upper half moves to a new block placed after this one in the directory.
            let half = Self.blockCapacity / 2
            let upper = allocateBlock()
            for i in 0..<half {
                keys[upper * Self.blockCapacity + i] = keys[block * Self.blockCapacity + half + i]
                values[upper * Self.blockCapacity + i] = values[block * Self.blockCapacity + half + i]
                values[block * Self.blockCapacity + half + i] = nil
            }
            counts[upper] = half
            counts[block] = half
            directoryKeys.insert(keys[upper * Self.blockCapacity], at: entry + 1)
            directoryBlocks.insert(upper, at: entry + 1)
            if position > half {
                entry += 1
                block = upper
                position -= half
            }
        }
        let base = block * Self.blockCapacity
        var i = counts[block]
        while i > position {
            keys[base + i] = keys[base + i - 1]
            values[base + i] = values[base + i - 1]
            i -= 1
        }
        keys[base + position] = key
        values[base + position] = value
        counts[block] += 1
        if position == 0 { directoryKeys[entry] = key }
        count += 1
        return true
    }

    @discardableResult
    public mutating func remove(_ key: UInt64) -> Value? {
        guard let (entry, block, index) = locate(key) else { return nil }
        let base = block * Self.blockCapacity
        guard keys[base + index] == key else { return nil }
        let value = values[base + index]
        for i in index ..< counts[block] - 1 {
            keys[base + i] = keys[base + i + 1]
            values[base + i] = values[base + i + 1]
        }
        counts[block] -= 1
        values[base + counts[block]] = nil
        count -= 1
        if counts[block] == 0 {
            freeBlock(block)
            directoryKeys.remove(at: entry)
            directoryBlocks.remove(at: entry)
            return value
        }
        directoryKeys[entry] = keys[base]
        // Merge a small block with the next one so the directory stays short.
        if entry + 1 < directoryBlocks.count {
            let next = directoryBlocks[entry + 1]
            if counts[block] + counts[next] <= Self.blockCapacity / 2 {
                for i in 0..<counts[next] {
                    keys[base + counts[block] + i] = keys[next * Self.blockCapacity + i]
                    values[base + counts[block] + i] = values[next * Self.blockCapacity + i]
                }
                counts[block] += counts[next]
                freeBlock(next)
                directoryKeys.remove(at: entry + 1)
                directoryBlocks.remove(at: entry + 1)
            }
        }
        return value
    }

    public mutating func removeAll() { self = SortedChunkMap() }

    /// All entries in key order.
    public var entries: [(key: UInt64, value: Value)] {
        var result: [(key: UInt64, value: Value)] = []
        result.reserveCapacity(count)
        forEach { result.append(($0, $1)) }
        return result
    }

    public func forEach(_ body: (UInt64, Value) throws -> Void) rethrows {
        for block in directoryBlocks {
            for slot in block * Self.blockCapacity ..< block * Self.blockCapacity + counts[block] {
                try body(keys[slot], values[slot]!)
            }
        }
    }
}

extension SortedChunkMap: Sendable where Value: Sendable {}

/// An ordered map from `UInt64` keys to values, kept as a sorted list of sorted chunks.
///
/// Lookup is two binary searches (O(log n)); insert and remove move at most one chunk's worth of
/// elements (bounded by `chunkCapacity`) plus, on a split or merge, the small chunk directory. At the
/// 65,535 mappings vfio-user allows this stays flat where a single sorted array would move half a
/// megabyte per insert, and it needs none of a balanced tree's per-node allocations.
public struct SortedChunkMap<Value> {
    public static var chunkCapacity: Int { 256 }

    private var chunks: [[(key: UInt64, value: Value)]] = []
    private var firstKeys: [UInt64] = []
    public private(set) var count = 0

    public init() {}

    public var isEmpty: Bool { count == 0 }

    /// The chunk that would hold `key`: the last chunk whose first key is <= key (or the first chunk).
    private func chunkIndex(for key: UInt64) -> Int {
        var low = 0
        var high = firstKeys.count
        while low < high {
            let mid = (low + high) / 2
            if firstKeys[mid] <= key { low = mid + 1 } else { high = mid }
        }
        return max(low - 1, 0)
    }

    /// Index in `chunk` of the first element with key >= `key`.
    private static func lowerBound(_ chunk: [(key: UInt64, value: Value)], _ key: UInt64) -> Int {
        var low = 0
        var high = chunk.count
        while low < high {
            let mid = (low + high) / 2
            if chunk[mid].key < key { low = mid + 1 } else { high = mid }
        }
        return low
    }

    public subscript(key: UInt64) -> Value? {
        guard !chunks.isEmpty else { return nil }
        let c = chunkIndex(for: key)
        let i = Self.lowerBound(chunks[c], key)
        guard i < chunks[c].count, chunks[c][i].key == key else { return nil }
        return chunks[c][i].value
    }

    /// The entry with the greatest key <= `key`.
    public func floor(_ key: UInt64) -> (key: UInt64, value: Value)? {
        guard !chunks.isEmpty else { return nil }
        let c = chunkIndex(for: key)
        let i = Self.lowerBound(chunks[c], key)
        if i < chunks[c].count, chunks[c][i].key == key { return chunks[c][i] }
        if i > 0 { return chunks[c][i - 1] }
        return nil // key is below every key
    }

    /// The entry with the smallest key >= `key`.
    public func ceiling(_ key: UInt64) -> (key: UInt64, value: Value)? {
        guard !chunks.isEmpty else { return nil }
        var c = chunkIndex(for: key)
        let i = Self.lowerBound(chunks[c], key)
        if i < chunks[c].count { return chunks[c][i] }
        c += 1
        return c < chunks.count ? chunks[c][0] : nil
    }

    /// Inserts a new key; returns false (and changes nothing) if the key is present.
    @discardableResult
    public mutating func insert(_ key: UInt64, _ value: Value) -> Bool {
        if chunks.isEmpty {
            chunks = [[(key, value)]]
            firstKeys = [key]
            count = 1
            return true
        }
        let c = chunkIndex(for: key)
        let i = Self.lowerBound(chunks[c], key)
        if i < chunks[c].count, chunks[c][i].key == key { return false }
        chunks[c].insert((key, value), at: i)
        firstKeys[c] = chunks[c][0].key
        count += 1
        if chunks[c].count > Self.chunkCapacity {
            let upper = Array(chunks[c][(Self.chunkCapacity / 2)...])
            chunks[c].removeSubrange((Self.chunkCapacity / 2)...)
            chunks.insert(upper, at: c + 1)
            firstKeys.insert(upper[0].key, at: c + 1)
        }
        return true
    }

    /// Replaces the value of an existing key.
    public mutating func update(_ key: UInt64, _ body: (inout Value) -> Void) {
        guard !chunks.isEmpty else { return }
        let c = chunkIndex(for: key)
        let i = Self.lowerBound(chunks[c], key)
        guard i < chunks[c].count, chunks[c][i].key == key else { return }
        body(&chunks[c][i].value)
    }

    @discardableResult
    public mutating func remove(_ key: UInt64) -> Value? {
        guard !chunks.isEmpty else { return nil }
        let c = chunkIndex(for: key)
        let i = Self.lowerBound(chunks[c], key)
        guard i < chunks[c].count, chunks[c][i].key == key else { return nil }
        let value = chunks[c].remove(at: i).value
        count -= 1
        if chunks[c].isEmpty {
            chunks.remove(at: c)
            firstKeys.remove(at: c)
        } else {
            firstKeys[c] = chunks[c][0].key
            // Merge a small chunk into its neighbour so the directory stays short.
            if c + 1 < chunks.count, chunks[c].count + chunks[c + 1].count <= Self.chunkCapacity / 2 {
                chunks[c].append(contentsOf: chunks[c + 1])
                chunks.remove(at: c + 1)
                firstKeys.remove(at: c + 1)
            }
        }
        return value
    }

    public mutating func removeAll() {
        chunks = []
        firstKeys = []
        count = 0
    }

    /// All entries in key order.
    public var entries: [(key: UInt64, value: Value)] { chunks.flatMap { $0 } }

    public func forEach(_ body: (UInt64, Value) throws -> Void) rethrows {
        for chunk in chunks { for entry in chunk { try body(entry.key, entry.value) } }
    }
}

extension SortedChunkMap: Sendable where Value: Sendable {}

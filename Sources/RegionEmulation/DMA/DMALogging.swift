import VfioUserProto

/// Dirty-page logging for migration: DEVICE_FEATURE DMA_LOGGING_START / STOP / REPORT (the
/// kernel's `vfio_device_feature_dma_logging_*`, spec "DEVICE_FEATURE").
///
/// Every device write to client memory marks its 4 KiB pages in the mapping's bitmap, lock-free
/// (see `DMAMapping.markDirty`). Logging decides what is reported: only pages inside the ranges
/// START named (not "everything", as libvfio-user does), at any power-of-two page size of at least
/// 4 KiB, each page reported once per write.
struct DMALogging {
    var pageSize: UInt64
    var ranges: [DMARange]

    func covers(_ iova: UInt64, _ length: UInt64) -> Bool {
        ranges.contains { iova >= $0.iova && iova - $0.iova <= $0.length && length <= $0.length - (iova - $0.iova) }
    }
}

extension DMASpace {
    /// DMA_LOGGING_START: from now on, writes inside `ranges` are reported. No ranges means every
    /// range mapped now. Errors: EINVAL (page size, empty, overlapping or wrapping ranges), EBUSY
    /// (logging is on already).
    public func startLogging(pageSize: UInt64, ranges requested: [DMARange]) throws(DMAError) {
        guard pageSize >= UInt64(Self.pageSize), pageSize.nonzeroBitCount == 1 else {
            throw .invalid("logging page size \(pageSize) is not a power of two of at least 4096")
        }
        for range in requested {
            guard range.length > 0, range.iova <= UInt64.max - range.length + 1 else {
                throw .invalid("logging range 0x\(String(range.iova, radix: 16))+0x\(String(range.length, radix: 16)) is empty or wraps")
            }
        }
        let sorted = requested.sorted { $0.iova < $1.iova }
        for (a, b) in zip(sorted, sorted.dropFirst()) where b.iova - a.iova < a.length {
            throw .invalid("logging ranges at 0x\(String(a.iova, radix: 16)) and 0x\(String(b.iova, radix: 16)) overlap")
        }
        try lock.withLock { () throws(DMAError) in
            guard logging == nil else { throw .busy("dirty logging is on already") }
            let ranges = sorted.isEmpty ? table.entries.map { DMARange(iova: $0.key, length: $0.payload.takeUnretainedValue().size) } : sorted
            // Only writes from now on count.
            for range in ranges { _ = collectDirty(range.iova, size: range.length, pageSize: Self.pageSize, clear: true) }
            logging = DMALogging(pageSize: pageSize, ranges: ranges)
        }
    }

    /// DMA_LOGGING_STOP. Stopping when logging is off is not an error.
    public func stopLogging() {
        lock.withLock { logging = nil }
    }

    /// Whether dirty logging is on.
    public var isLogging: Bool { lock.withLock { logging != nil } }

    /// DMA_LOGGING_REPORT: the dirty bitmap of `[iova, iova + length)` at `pageSize`, one bit per
    /// page (u64 words), cleared as it is reported. The range must lie inside one logged range.
    public func loggingReport(iova: UInt64, length: UInt64, pageSize: UInt64) throws(DMAError) -> [UInt64] {
        guard pageSize >= UInt64(Self.pageSize), pageSize.nonzeroBitCount == 1, iova % pageSize == 0 else {
            throw .invalid("report page size \(pageSize) must be a power of two of at least 4096 that aligns iova 0x\(String(iova, radix: 16))")
        }
        return try lock.withLock { () throws(DMAError) in
            guard let logging else { throw .invalid("dirty logging is off") }
            guard length > 0, logging.covers(iova, length) else {
                throw .invalid("report range 0x\(String(iova, radix: 16))+0x\(String(length, radix: 16)) is not inside a logged range")
            }
            return collectDirty(iova, size: length, pageSize: Int(pageSize), clear: true)
        }
    }

    /// The dirty bitmap of `[iova, iova + size)` at `pageSize` (a power of two, at least 4 KiB): one
    /// bit per page, little-endian u64 words. `clear` takes the reported bits. The range may span
    /// several mappings; pages outside any mapping read clean.
    public func dirtyBitmap(_ iova: UInt64, size: UInt64, pageSize: Int, clear: Bool) throws(DMAError) -> [UInt64] {
        guard pageSize >= Self.pageSize, pageSize.nonzeroBitCount == 1 else {
            throw .invalid("dirty page size \(pageSize) is not a power of two >= 4096")
        }
        guard size > 0, iova <= UInt64.max - size + 1 else { throw .invalid("bad dirty bitmap range") }
        return lock.withLock { collectDirty(iova, size: size, pageSize: pageSize, clear: clear) }
    }

    /// Walks the mappings' bitmaps a word at a time over the pages of `[iova, iova + size)` only.
    /// Caller holds `lock`.
    private func collectDirty(_ iova: UInt64, size: UInt64, pageSize: Int, clear: Bool) -> [UInt64] {
        let pages = Int((size - 1) / UInt64(pageSize)) + 1
        var bitmap = [UInt64](repeating: 0, count: (pages + 63) / 64)
        let shift = UInt64(pageSize.trailingZeroBitCount)
        let last = iova &+ (size - 1)
        table.forEach { _, _, reference in
            let mapping = reference.takeUnretainedValue()
            let mappingLast = mapping.last // not `end - 1`: a mapping may end at 2^64
            guard mappingLast >= iova, mapping.iova <= last else { return }
            let firstPage = Int((max(mapping.iova, iova) - mapping.iova) >> Self.pageShift)
            let lastPage = Int((min(mappingLast, last) - mapping.iova) >> Self.pageShift)
            var page = firstPage
            while page <= lastPage {
                let word = page / 64
                let low = page % 64
                let high = min(63, low + (lastPage - page))
                let mask = (high == 63 ? UInt64.max : (UInt64(1) << UInt64(high + 1)) - 1) & ~((UInt64(1) << UInt64(low)) - 1)
                var bits = mapping.dirtyBits(word: word, mask: mask, clear: clear)
                while bits != 0 {
                    let address = mapping.iova + UInt64(word * 64 + bits.trailingZeroBitCount) << Self.pageShift
                    let bit = Int((max(address, iova) - iova) >> shift)
                    bitmap[bit / 64] |= 1 << UInt64(bit % 64)
                    bits &= bits - 1
                }
                page = word * 64 + high + 1
            }
        }
        return bitmap
    }
}

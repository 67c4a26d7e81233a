import RegionEmulation
import Testing

/// The report reads config space bytes from a device it does not trust: broken capability lists
/// end the walk with a problem instead of looping or reading out of bounds.
@Suite("Config space report")
struct ConfigSpaceReportTests {
    /// 4 KiB of config space with the capability-list status bit set and the given pointer.
    func space(capabilityPointer: UInt8) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: ConfigSpace.expressSize)
        bytes[PCIConfig.status] = UInt8(PCIConfig.statusCapabilityList)
        bytes[PCIConfig.capabilityPointer] = capabilityPointer
        return bytes
    }

    @Test func aLoopingListEndsWithAProblemAfterEachEntryOnce() {
        var bytes = space(capabilityPointer: 0x40)
        bytes[0x40] = 0x09; bytes[0x41] = 0x50 // vendor-specific, next 0x50
        bytes[0x50] = 0x09; bytes[0x51] = 0x40 // back to 0x40
        let report = ConfigSpaceReport(bytes)
        #expect(report.capabilities.map(\.offset) == [0x40, 0x50])
        #expect(report.problems == ["the capability list loops at 0x40"])
    }

    @Test func pointersOutsideTheirAreaEndTheWalk() {
        var bytes = space(capabilityPointer: 0x20) // inside the header
        #expect(ConfigSpaceReport(bytes).problems == ["capability pointer 0x20 is outside the capability area"])
        bytes[PCIConfig.capabilityPointer] = 0xFF // masked to 0xFC: the last place a capability fits
        bytes[0xFC] = 0x09; bytes[0xFD] = 0x00
        #expect(ConfigSpaceReport(bytes).capabilities.map(\.offset) == [0xFC])
        // Extended list: an entry pointing at itself, then one pointing past the end.
        var extended = space(capabilityPointer: 0)
        extended[PCIConfig.extendedStart] = 0x0B // vendor-specific extended capability
        extended[PCIConfig.extendedStart + 3] = 0x10 // next = 0x100: itself
        #expect(ConfigSpaceReport(extended).problems == ["the extended capability list loops at 0x100"])
        extended[PCIConfig.extendedStart + 2] = 0xC0; extended[PCIConfig.extendedStart + 3] = 0xFF // next = 0xFFC
        extended[0xFFC] = 0x0B; extended[0xFFE] = 0x00; extended[0xFFF] = 0x00
        #expect(ConfigSpaceReport(extended).capabilities.map(\.offset) == [0x100, 0xFFC])
        #expect(ConfigSpaceReport(Array(extended[..<0xFFE])).problems == ["extended capability pointer 0xffc is outside config space"])
    }
}

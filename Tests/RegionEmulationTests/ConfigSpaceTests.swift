import RegionEmulation
import Testing
import VfioUserProto

/// A function with one BAR of each kind, to exercise the header.
func makeFunction(capabilities: [PCICapability] = [], extended: [PCIExtendedCapability] = [],
                  configSize: Int = 256, bars: [BARDefinition?]? = nil) throws -> PCIFunction {
    let identity = PCIIdentity(vendorID: 0x1AF4, deviceID: 0x1041, subsystemVendorID: 0x1AF4, subsystemID: 0x1100,
                               revision: 1, classCode: 0x02_00_00)
    return try PCIFunction(PCIFunctionDescription(
        identity: identity,
        bars: bars ?? [.io(size: 8), .memory(size: 0x1000), .memory(size: 0x10_0000, is64Bit: true, prefetchable: true), nil],
        configSize: configSize, capabilities: capabilities, extendedCapabilities: extended))
}

extension PCIFunction {
    func config<T: FixedWidthInteger>(_ offset: Int, as: T.Type = T.self) -> T {
        var bytes = [UInt8](repeating: 0, count: MemoryLayout<T>.size)
        bytes.withUnsafeMutableBytes { readConfig(offset: offset, into: $0) }
        return bytes.reversed().reduce(T(0)) { ($0 << 8) | T($1) }
    }

    @discardableResult
    func setConfig<T: FixedWidthInteger>(_ offset: Int, _ value: T) -> ConfigWriteEffect {
        withUnsafeBytes(of: value.littleEndian) { writeConfig(offset: offset, data: $0) }
    }
}

@Suite("Config space header")
struct ConfigSpaceTests {
    @Test func identityFields() throws {
        let f = try makeFunction()
        #expect(f.config(0x00, as: UInt32.self) == 0x1041_1AF4)
        #expect(f.config(0x08, as: UInt32.self) == 0x0200_0001) // class 02/00/00, revision 1
        #expect(f.config(0x2C, as: UInt32.self) == 0x1100_1AF4)
        #expect(f.config(0x3D, as: UInt8.self) == 1) // INTA#
        #expect(f.config(0x0E, as: UInt8.self) == 0) // type-0 header, single function
    }

    @Test func readOnlyFieldsIgnoreWrites() throws {
        let f = try makeFunction()
        f.setConfig(0x00, UInt32.max)
        f.setConfig(0x08, UInt32.max)
        f.setConfig(0x2C, UInt32.max)
        f.setConfig(0x3D, UInt8(4))
        f.setConfig(0x34, UInt8(0x40))
        #expect(f.config(0x00, as: UInt32.self) == 0x1041_1AF4)
        #expect(f.config(0x08, as: UInt32.self) == 0x0200_0001)
        #expect(f.config(0x2C, as: UInt32.self) == 0x1100_1AF4)
        #expect(f.config(0x3D, as: UInt8.self) == 1)
        #expect(f.config(0x34, as: UInt8.self) == 0)
    }

    @Test func commandRegisterKeepsOnlyDefinedBits() throws {
        let f = try makeFunction()
        f.setConfig(0x04, UInt16.max)
        #expect(f.config(0x04, as: UInt16.self) == 0x0547)
        #expect(f.isBusMaster)
    }

    @Test func statusErrorBitsAreWriteOneToClear() throws {
        let f = try makeFunction()
        #expect(f.config(0x06, as: UInt16.self) == 0x0200)
        f.setConfig(0x06, UInt16.max) // nothing set yet: stays
        #expect(f.config(0x06, as: UInt16.self) == 0x0200)
    }

    @Test func ioBarSizing() throws {
        let f = try makeFunction()
        #expect(f.config(0x10, as: UInt32.self) == 0x1)
        f.setConfig(0x10, UInt32.max)
        #expect(f.config(0x10, as: UInt32.self) == 0xFFFF_FFF9) // ~(8-1) | I/O, as the kernel's mtty answers
        f.setConfig(0x10, UInt32(0xC040))
        #expect(f.config(0x10, as: UInt32.self) == 0xC041)
    }

    @Test func memory32BarSizing() throws {
        let f = try makeFunction()
        f.setConfig(0x14, UInt32.max)
        #expect(f.config(0x14, as: UInt32.self) == 0xFFFF_F000)
        f.setConfig(0x14, UInt32(0xFEB0_1234))
        #expect(f.config(0x14, as: UInt32.self) == 0xFEB0_1000)
    }

    @Test func memory64PrefetchableBarSizingUsesTwoSlots() throws {
        let f = try makeFunction()
        #expect(f.config(0x18, as: UInt32.self) == 0xC) // 64-bit, prefetchable
        f.setConfig(0x18, UInt32.max)
        f.setConfig(0x1C, UInt32.max)
        #expect(f.config(0x18, as: UInt32.self) == 0xFFF0_000C)
        #expect(f.config(0x1C, as: UInt32.self) == 0xFFFF_FFFF)
        f.setConfig(0x1C, UInt32(0x12))
        #expect(f.config(0x1C, as: UInt32.self) == 0x12)
    }

    @Test func absentBarsAndRomReadZeroAfterASizeProbe() throws {
        let f = try makeFunction()
        for offset in [0x20, 0x24, 0x30] {
            f.setConfig(offset, offset == 0x30 ? UInt32(0xFFFF_F800) : UInt32.max)
            #expect(f.config(offset, as: UInt32.self) == 0, "offset 0x\(String(offset, radix: 16))")
        }
    }

    @Test func interruptLineIsWritable() throws {
        let f = try makeFunction()
        f.setConfig(0x3C, UInt8(11))
        #expect(f.config(0x3C, as: UInt8.self) == 11)
    }

    @Test func byteWritesInsideABarKeepTheMask() throws {
        let f = try makeFunction()
        f.setConfig(0x14, UInt8(0xFF))
        #expect(f.config(0x14, as: UInt32.self) == 0)
        f.setConfig(0x15, UInt8(0xFF))
        #expect(f.config(0x14, as: UInt32.self) == 0xF000)
    }

    @Test func resetRestoresPowerOnContents() throws {
        let f = try makeFunction()
        f.setConfig(0x04, UInt16(7))
        f.setConfig(0x10, UInt32(0xC040))
        f.setConfig(0x3C, UInt8(9))
        f.reset(lostConnection: true)
        #expect(f.config(0x04, as: UInt16.self) == 0)
        #expect(f.config(0x10, as: UInt32.self) == 1)
        #expect(f.config(0x3C, as: UInt8.self) == 0)
    }
}

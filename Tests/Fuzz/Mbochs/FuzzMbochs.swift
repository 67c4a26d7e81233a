import FuzzHarness

/// libFuzzer over the mbochs display's registers and framebuffer (see FuzzHarness.Mbochs).
let mbochs = FuzzHarness.Mbochs()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMbochs(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    mbochs.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

@main
enum FuzzMbochsMain {
    static func main() { FuzzReplay.main(seeds: FuzzHarness.mbochsSeeds, fuzzMbochs) }
}

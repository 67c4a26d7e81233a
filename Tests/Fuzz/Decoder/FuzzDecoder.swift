import FuzzHarness

/// libFuzzer over the decoder: captured dumps in every form and raw streams (see FuzzReplay).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDecoder(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzHarness.decode(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

@main
enum FuzzDecoder {
    static func main() { FuzzReplay.main(seeds: FuzzHarness.decoderSeeds, fuzzDecoder) }
}

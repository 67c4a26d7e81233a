import FuzzHarness

/// libFuzzer over a whole server session of an mtty (see FuzzReplay).
let session = FuzzHarness.Session()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSession(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    session.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

@main
enum FuzzSession {
    static func main() { FuzzReplay.main(seeds: FuzzHarness.sessionSeeds, fuzzSession) }
}

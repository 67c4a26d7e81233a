import FuzzHarness

/// libFuzzer over the virtio-net device's virtqueue engine, guest memory as the input (see
/// FuzzHarness.Virtqueue).
let virtqueue = FuzzHarness.Virtqueue()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtqueue(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    virtqueue.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

@main
enum FuzzVirtqueueMain {
    static func main() { FuzzReplay.main(seeds: FuzzHarness.virtqueueSeeds, fuzzVirtqueue) }
}

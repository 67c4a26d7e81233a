import CLinux
import Support
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The main of a fuzz target. Built with -DFUZZING -sanitize=fuzzer (scripts/fuzz.sh), it hands
/// the command line to libFuzzer, which calls the target on each input. A plain build:
///   fuzz-X FILE...        runs each file through the target (a crash reproduces as it did)
///   fuzz-X --seeds DIR    writes the seed corpus into DIR
public enum FuzzReplay {
    /// `target` is the target's LLVMFuzzerTestOneInput.
    public static func main(seeds: [(name: String, bytes: [UInt8])],
                            _ target: @escaping @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> Never {
        #if FUZZING
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, target))
        #else
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "--seeds", arguments.count == 2 {
            for seed in seeds {
                guard let file = fopen(arguments[1] + "/" + seed.name, "w") else { fatalError("cannot write \(arguments[1])/\(seed.name)") }
                seed.bytes.withUnsafeBytes { _ = fwrite($0.baseAddress, 1, $0.count, file) }
                fclose(file)
            }
            print("\(seeds.count) seeds written to \(arguments[1])")
            exit(0)
        }
        guard !arguments.isEmpty, !arguments[0].hasPrefix("-") else {
            print("usage: \(CommandLine.arguments[0]) FILE... | --seeds DIR")
            exit(2)
        }
        for path in arguments {
            guard let bytes = readBytes(path) else { fatalError("cannot read \(path)") }
            _ = bytes.withUnsafeBufferPointer { target($0.baseAddress, $0.count) }
        }
        print("\(arguments.count) inputs replayed")
        exit(0)
        #endif
    }
}

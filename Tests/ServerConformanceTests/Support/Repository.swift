/// The repository's root directory (this file is Tests/ServerConformanceTests/Support/Repository.swift).
let repositoryRoot: String = {
    var path = #filePath
    for _ in 0..<4 { path = String(path[..<path.lastIndex(of: "/")!]) }
    return path
}()

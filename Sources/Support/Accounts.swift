#if canImport(Glibc)
import Glibc
#endif

/// Users and groups of the system's databases, by name or number: who a socket or a worker
/// process should belong to.
public enum Accounts {
    /// The user `name` (or a numeric uid that exists): its canonical name, uid and primary gid.
    public static func user(named name: String) -> (name: String, uid: uid_t, gid: gid_t)? {
        guard let entry = getpwnam(name) ?? UInt32(name).flatMap({ getpwuid($0) }) else { return nil }
        return (String(cString: entry.pointee.pw_name), entry.pointee.pw_uid, entry.pointee.pw_gid)
    }

    /// The group `name` (or a numeric gid that exists).
    public static func group(named name: String) -> gid_t? {
        guard let entry = getgrnam(name) ?? UInt32(name).flatMap({ getgrgid($0) }) else { return nil }
        return entry.pointee.gr_gid
    }
}

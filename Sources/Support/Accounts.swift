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

    /// Who a file should belong to: a user of the database by name, or any uid by number (as for
    /// chown(1): the file may be for a uid this system does not list, such as a container's).
    public static func fileOwner(_ text: String) -> uid_t? { user(named: text)?.uid ?? UInt32(text) }

    /// The group a file should belong to: by name, or any gid by number.
    public static func fileGroup(_ text: String) -> gid_t? { group(named: text) ?? UInt32(text) }
}

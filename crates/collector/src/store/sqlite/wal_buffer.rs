//! A VFS for the ingest writer's connection that gathers its WAL appends in memory and
//! writes them out in 64 KiB writes when SQLite syncs the WAL at the commit.
//!
//! SQLite appends a commit's frames with two writes each (the frame header, then the
//! page): ~3 system calls per error event, ~43 % of the SQLite thread's time under load
//! (BENCHMARKS.md, "8 KiB pages for new stores"). This VFS
//! wraps the default one; only files SQLite opens as a WAL are wrapped, every other file
//! is the default VFS's own.
//!
//! Why the WAL's content is always what SQLite wrote, whoever reads it:
//! - The connection runs with `synchronous = FULL` (checked when the writer opens it).
//!   SQLite then syncs the WAL at every commit *before* it publishes the commit in the
//!   wal-index, the shared memory other connections read: the buffer is written out at
//!   that sync, so no other connection ever looks for a frame that is still in it.
//! - This connection's own reads of the file (checkpoints, a page read back within a
//!   transaction, checksum rewrites) write out an overlapping buffer first; writes that
//!   fall inside the buffered range patch it in place. In-order, as if each write had gone
//!   through.
//! - A rolled-back transaction's frames are dropped (the rollback hook), never written
//!   later: by then another connection may have committed frames at the same offsets.
//!   Closing drops what is left, which under FULL is only an unfinished transaction's.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, Ordering};

use rusqlite::ffi;

/// The VFS's registered name.
pub(crate) const NAME: &str = "sightline-wal-buffer";
const NAME_C: &CStr = c"sightline-wal-buffer";

/// Most bytes held before they are written regardless (a commit's frames are ~1.5 MB at
/// a thousand error events).
const CAP: usize = 4 << 20;

/// Bytes per write to the wrapped file: the `unix` VFS writes at most 128 KiB − 1 per call
/// (`seekAndWriteFd` masks the length with `0x1ffff`) and reports a longer write as a
/// full disk.
const CHUNK: usize = 64 << 10;

/// The default VFS this one wraps.
static INNER_VFS: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(ptr::null_mut());

/// A WAL file: SQLite's file object first, then the buffer, then the wrapped file.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    /// Bytes written by SQLite and not yet to the file, starting at offset `at`.
    pending: Vec<u8>,
    at: i64,
    inner: *mut ffi::sqlite3_file,
}

/// Where the wrapped file lives inside SQLite's allocation for a `WalFile`.
const INNER_OFFSET: usize = size_of::<WalFile>().next_multiple_of(16);

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    // Version 1: a WAL file is never memory-mapped or given shared memory.
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

/// Registers the VFS (once per process). Fails only if SQLite has no default VFS.
#[allow(unsafe_code)]
pub(crate) fn register() -> Result<(), &'static str> {
    static REGISTERED: OnceLock<Result<(), &'static str>> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        // SAFETY: `sqlite3_vfs_find` initializes SQLite and returns the default VFS, which
        // lives as long as the process. The copy is leaked, so it does too; it names the
        // wrapped VFS's own functions, which take any VFS object with its `pAppData` and
        // `mxPathname` (copied), and opens through `open` below.
        unsafe {
            let inner = ffi::sqlite3_vfs_find(ptr::null());
            if inner.is_null() {
                return Err("SQLite has no default VFS");
            }
            INNER_VFS.store(inner, Ordering::Release);
            let mut vfs = *inner;
            vfs.zName = NAME_C.as_ptr();
            vfs.pNext = ptr::null_mut();
            vfs.szOsFile = c_int::try_from(INNER_OFFSET)
                .ok()
                .and_then(|offset| offset.checked_add((*inner).szOsFile))
                .ok_or("VFS file size out of range")?;
            vfs.xOpen = Some(open);
            if ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 0) != ffi::SQLITE_OK {
                return Err("registering the WAL-buffering VFS failed");
            }
            Ok(())
        }
    })
}

/// Drops the buffered frames of a rolled-back transaction on `db` (see the module docs).
/// Set on the writer's connection with `sqlite3_rollback_hook`, its argument the handle.
#[allow(unsafe_code)]
pub(crate) unsafe extern "C" fn discard_on_rollback(db: *mut c_void) {
    let mut file: *mut ffi::sqlite3_file = ptr::null_mut();
    // SAFETY: `db` is the open connection the hook was set on (SQLite calls the hook with
    // its mutex held; the mutex is recursive). The journal pointer is its WAL file, ours
    // only if it carries our methods.
    unsafe {
        let rc = ffi::sqlite3_file_control(
            db.cast(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_JOURNAL_POINTER,
            (&raw mut file).cast(),
        );
        if rc == ffi::SQLITE_OK && !file.is_null() && ptr::eq((*file).pMethods, &METHODS) {
            (*file.cast::<WalFile>()).pending.clear();
        }
    }
}

#[allow(unsafe_code)]
unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite hands `file` with `szOsFile` bytes: room for a `WalFile` and the
    // wrapped VFS's file after it, or for the wrapped file alone at its start.
    unsafe {
        let inner_vfs = INNER_VFS.load(Ordering::Acquire);
        let Some(inner_open) = (*inner_vfs).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return inner_open(inner_vfs, name, file, flags, out_flags);
        }
        let inner = file
            .cast::<u8>()
            .add(INNER_OFFSET)
            .cast::<ffi::sqlite3_file>();
        let rc = inner_open(inner_vfs, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            (*file).pMethods = ptr::null();
            return rc;
        }
        file.cast::<WalFile>().write(WalFile {
            base: ffi::sqlite3_file { pMethods: &METHODS },
            pending: Vec::new(),
            at: 0,
            inner,
        });
        ffi::SQLITE_OK
    }
}

/// The `WalFile` behind `file` and its wrapped file's methods.
///
/// # Safety
/// `file` is a file `open` wrapped, not yet closed.
#[allow(unsafe_code)]
unsafe fn parts<'a>(
    file: *mut ffi::sqlite3_file,
) -> (
    &'a mut WalFile,
    *mut ffi::sqlite3_file,
    &'a ffi::sqlite3_io_methods,
) {
    // SAFETY: per the contract; the wrapped file was opened successfully, so its methods
    // are set.
    unsafe {
        let wal = &mut *file.cast::<WalFile>();
        let inner = wal.inner;
        (wal, inner, &*(*inner).pMethods)
    }
}

/// Writes the buffer out to `inner` (the wrapped file, with its `methods`), in `CHUNK`s.
///
/// # Safety
/// `inner` is the open wrapped file of `wal`, as [`parts`] returns them.
#[allow(unsafe_code)]
unsafe fn flush(
    wal: &mut WalFile,
    inner: *mut ffi::sqlite3_file,
    methods: &ffi::sqlite3_io_methods,
) -> c_int {
    // SAFETY: per the contract.
    let rc = unsafe { write_through(inner, methods, &wal.pending, wal.at) };
    wal.pending.clear();
    rc
}

/// Writes `bytes` at `offset` to the wrapped file, in `CHUNK`s.
///
/// # Safety
/// `inner` is an open file of the wrapped VFS and `methods` its methods.
#[allow(unsafe_code)]
unsafe fn write_through(
    inner: *mut ffi::sqlite3_file,
    methods: &ffi::sqlite3_io_methods,
    bytes: &[u8],
    offset: i64,
) -> c_int {
    let Some(write) = methods.xWrite else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let mut at = offset;
    for chunk in bytes.chunks(CHUNK) {
        // SAFETY: `inner` is an open file of the wrapped VFS; a chunk is at most `CHUNK`
        // bytes, within `c_int`.
        let rc = unsafe { write(inner, chunk.as_ptr().cast(), chunk.len() as c_int, at) };
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        at += chunk.len() as i64;
    }
    ffi::SQLITE_OK
}

#[allow(unsafe_code)]
unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite passes `amount` readable bytes at `data`; see `parts`.
    unsafe {
        let Ok(n) = usize::try_from(amount) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let bytes = std::slice::from_raw_parts(data.cast::<u8>(), n);
        let (wal, inner, methods) = parts(file);
        if !wal.pending.is_empty() {
            let end = wal.at + wal.pending.len() as i64;
            if offset == end && wal.pending.len() + n <= CAP {
                wal.pending.extend_from_slice(bytes);
                return ffi::SQLITE_OK;
            }
            if offset >= wal.at && offset + n as i64 <= end {
                let start = (offset - wal.at) as usize;
                wal.pending[start..start + n].copy_from_slice(bytes);
                return ffi::SQLITE_OK;
            }
            let rc = flush(wal, inner, methods);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        if n >= CAP {
            return write_through(inner, methods, bytes, offset);
        }
        wal.at = offset;
        wal.pending.extend_from_slice(bytes);
        ffi::SQLITE_OK
    }
}

#[allow(unsafe_code)]
unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    data: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: see `parts`.
    unsafe {
        let (wal, inner, methods) = parts(file);
        let end = wal.at + wal.pending.len() as i64;
        if !wal.pending.is_empty() && offset < end && offset + i64::from(amount) > wal.at {
            let rc = flush(wal, inner, methods);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        match methods.xRead {
            Some(read) => read(inner, data, amount, offset),
            None => ffi::SQLITE_IOERR_READ,
        }
    }
}

#[allow(unsafe_code)]
unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: see `parts`; after this the file is not used again.
    unsafe {
        let (wal, inner, methods) = parts(file);
        let rc = methods.xClose.map_or(ffi::SQLITE_OK, |close| close(inner));
        ptr::drop_in_place(&raw mut wal.pending);
        (*file).pMethods = ptr::null();
        rc
    }
}

/// Does what the wrapped file does, after writing the buffer out when `$flush`.
macro_rules! forwarding {
    ($flush:literal, $name:ident, $method:ident, ($($arg:ident: $ty:ty),*), $fail:expr) => {
        #[allow(unsafe_code)]
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> c_int {
            // SAFETY: see `parts`.
            unsafe {
                let (wal, inner, methods) = parts(file);
                if $flush {
                    let rc = flush(wal, inner, methods);
                    if rc != ffi::SQLITE_OK {
                        return rc;
                    }
                }
                match methods.$method {
                    Some(method) => method(inner, $($arg),*),
                    None => $fail,
                }
            }
        }
    };
}

forwarding!(true, sync, xSync, (flags: c_int), ffi::SQLITE_IOERR_FSYNC);
forwarding!(true, truncate, xTruncate, (size: i64), ffi::SQLITE_IOERR_TRUNCATE);
forwarding!(true, file_size, xFileSize, (size: *mut i64), ffi::SQLITE_IOERR_FSTAT);
forwarding!(true, file_control, xFileControl, (op: c_int, arg: *mut c_void), ffi::SQLITE_NOTFOUND);
forwarding!(false, lock, xLock, (level: c_int), ffi::SQLITE_OK);
forwarding!(false, unlock, xUnlock, (level: c_int), ffi::SQLITE_OK);
forwarding!(false, check_reserved_lock, xCheckReservedLock, (out: *mut c_int), ffi::SQLITE_OK);
forwarding!(false, sector_size, xSectorSize, (), 4096);
forwarding!(false, device_characteristics, xDeviceCharacteristics, (), 0);

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};
    use tempfile::TempDir;

    use super::*;

    fn wal_len(dir: &TempDir) -> u64 {
        std::fs::metadata(dir.path().join("t.db-wal")).map_or(0, |m| m.len())
    }

    /// A connection on the buffering VFS, as the writer's: WAL, FULL, the rollback hook.
    #[allow(unsafe_code)]
    fn buffered(dir: &TempDir) -> Connection {
        register().unwrap();
        let conn = Connection::open_with_flags_and_vfs(
            dir.path().join("t.db"),
            OpenFlags::default(),
            NAME,
        )
        .unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            .unwrap();
        // SAFETY: the handle is open for as long as `conn`, which the hook is set on.
        unsafe {
            let db = conn.handle();
            ffi::sqlite3_rollback_hook(db, Some(discard_on_rollback), db.cast());
        }
        conn
    }

    #[test]
    fn a_commits_frames_reach_the_file_at_its_sync_and_not_before() {
        let dir = TempDir::new().unwrap();
        let conn = buffered(&dir);
        conn.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let before = wal_len(&dir);
        // A small page cache: the transaction spills pages to the WAL before it commits.
        conn.execute_batch("PRAGMA cache_size = 10; BEGIN").unwrap();
        for _ in 0..200 {
            conn.execute("INSERT INTO t VALUES (randomblob(2000))", [])
                .unwrap();
        }
        assert_eq!(wal_len(&dir), before, "spilled frames wait in the buffer");
        // Read back within the transaction: the spilled pages come from the WAL.
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t WHERE length(x) = 2000", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 200);
        conn.execute_batch("COMMIT").unwrap();
        assert!(
            wal_len(&dir) > before + 200 * 2000,
            "{} bytes",
            wal_len(&dir)
        );
        let other = Connection::open(dir.path().join("t.db")).unwrap();
        let n: i64 = other
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 200);
    }

    #[test]
    fn a_rolled_back_transactions_frames_never_overwrite_another_connections_commit() {
        let dir = TempDir::new().unwrap();
        let conn = buffered(&dir);
        conn.execute_batch("CREATE TABLE t (who TEXT, x BLOB)")
            .unwrap();
        // Frames spilled into the buffer, then rolled back.
        conn.execute_batch("PRAGMA cache_size = 10; BEGIN").unwrap();
        for _ in 0..200 {
            conn.execute("INSERT INTO t VALUES ('gone', randomblob(2000))", [])
                .unwrap();
        }
        conn.execute_batch("ROLLBACK").unwrap();
        // Another connection commits at the offsets those frames had.
        let other = Connection::open(dir.path().join("t.db")).unwrap();
        other
            .execute_batch(
                "BEGIN; INSERT INTO t VALUES ('other', randomblob(3000));
                 INSERT INTO t VALUES ('other', randomblob(3000)); COMMIT",
            )
            .unwrap();
        // The buffering connection commits after them.
        conn.execute("INSERT INTO t VALUES ('writer', randomblob(10))", [])
            .unwrap();
        drop(conn);
        drop(other);
        // Read back by a fresh connection (which recovers the WAL from the file alone).
        let fresh = Connection::open(dir.path().join("t.db")).unwrap();
        let rows: Vec<(String, i64)> = fresh
            .prepare("SELECT who, count(*) FROM t GROUP BY who ORDER BY who")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, [("other".into(), 2), ("writer".into(), 1)]);
        let check: String = fresh
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
}

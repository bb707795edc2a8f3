//! The directory lock: one store at a time per directory, across
//! processes and within one.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::durable::StoreError;

/// An exclusive `flock` on the directory's `LOCK` file, held while this
/// lives. Closing the file (on drop, or when the process dies) releases it.
#[derive(Debug)]
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir`, or [`StoreError::Locked`] if another open
    /// file holds it (another store, in this process or another).
    pub(super) fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let path = dir.join("LOCK");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io("open lock file", &path, e))?;
        loop {
            // SAFETY: `flock` only reads its arguments; the descriptor is
            // open, owned by `file`, which outlives the call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(DirLock { _file: file });
            }
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    return Err(StoreError::Locked {
                        dir: dir.to_path_buf(),
                    });
                }
                _ => return Err(StoreError::io("lock", &path, error)),
            }
        }
    }
}

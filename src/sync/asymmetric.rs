//! Asymmetric fences: a cheap one for the frequent side of a store/load
//! handshake (an exclusive producer's claim, once per push) and an expensive
//! one for the rare side (the drainer about to park, the closer).
//!
//! The pair orders like a `SeqCst` fence on both sides: of a producer that
//! stores `X` then loads `Y`, and a drainer that stores `Y` then loads `X`,
//! at least one sees the other's store. On Linux the heavy side is
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`: it runs a full barrier on
//! every CPU that runs a thread of this process, so the light side needs
//! only a compiler fence. Under loom both sides are `SeqCst` fences, which
//! loom models.

/// Whether the heavy fence works here (registered once per process).
/// Without it, exclusive producers claim with the ordinary CAS.
#[cfg(not(loom))]
pub(crate) fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(imp::register)
}

/// Under loom the pair is modelled by two `SeqCst` fences.
#[cfg(loom)]
pub(crate) fn available() -> bool {
    true
}

/// The light side: keeps the compiler from moving the store before it
/// past the load after it; the heavy side does the rest.
#[inline(always)]
pub(crate) fn light() {
    #[cfg(not(loom))]
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    #[cfg(loom)]
    loom::sync::atomic::fence(loom::sync::atomic::Ordering::SeqCst);
}

/// The heavy side. Returns false if no barrier could be run (the caller
/// must then act as if the other side's store were seen, or give up).
///
/// A process can lose its `membarrier` registration (a forked child
/// does on some kernels) or be refused by a seccomp filter after it
/// registered: the barrier is then tried once more after registering
/// again, and last by the page-protection barrier (x86 Linux), whose
/// TLB shootdown interrupts every CPU running a thread of the process.
#[cold]
pub(crate) fn heavy() -> bool {
    #[cfg(not(loom))]
    {
        if !available() {
            return false;
        }
        imp::barrier() || (imp::register() && imp::barrier()) || imp::page_barrier()
    }
    #[cfg(loom)]
    {
        loom::sync::atomic::fence(loom::sync::atomic::Ordering::SeqCst);
        true
    }
}

/// Tests: makes the next `n` `membarrier` calls (barrier or
/// registration) of this thread fail, and with `page` the
/// page-protection barrier too.
#[cfg(all(test, not(loom), target_os = "linux"))]
pub(crate) fn fail_next(n: u32, page: bool) {
    inject::FAIL.with(|fail| fail.set((n, page)));
}

#[cfg(all(test, not(loom), target_os = "linux"))]
mod inject {
    use core::cell::Cell;

    std::thread_local! {
        /// Calls to fail, and whether the page barrier fails too.
        pub(super) static FAIL: Cell<(u32, bool)> = const { Cell::new((0, false)) };
    }

    /// Whether this call is made to fail (and counts it).
    pub(super) fn membarrier() -> bool {
        FAIL.with(|fail| {
            let (n, page) = fail.get();
            fail.set((n.saturating_sub(1), page));
            n > 0
        })
    }

    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "x86")),
        allow(dead_code)
    )]
    pub(super) fn page() -> bool {
        FAIL.with(|fail| fail.get().1)
    }
}

#[cfg(all(not(test), not(loom), target_os = "linux"))]
mod inject {
    #[inline(always)]
    pub(super) fn membarrier() -> bool {
        false
    }

    #[inline(always)]
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "x86")),
        allow(dead_code)
    )]
    pub(super) fn page() -> bool {
        false
    }
}

#[cfg(all(not(loom), target_os = "linux"))]
mod imp {
    const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    /// Registers the process for expedited private barriers.
    pub(super) fn register() -> bool {
        if super::inject::membarrier() {
            return false;
        }
        // SAFETY: `membarrier` takes two integer arguments and touches no
        // memory of ours; an unknown command fails with an error code.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                0 as libc::c_long,
            )
        };
        rc == 0
    }

    pub(super) fn barrier() -> bool {
        if super::inject::membarrier() {
            return false;
        }
        // SAFETY: as in `register`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_PRIVATE_EXPEDITED,
                0 as libc::c_long,
            )
        };
        rc == 0
    }

    /// The fallback barrier: changing a touched page's protection makes
    /// the kernel shoot down its TLB entry on every CPU that runs a
    /// thread of this process, by an interrupt that serialises each of
    /// them. That holds on x86 only (arm64 invalidates by broadcast
    /// instruction, without interrupting the other CPUs).
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    pub(super) fn page_barrier() -> bool {
        use std::sync::{Mutex, OnceLock};
        if super::inject::page() {
            return false;
        }
        // The page's address, or 0 if it could not be mapped.
        static PAGE: OnceLock<usize> = OnceLock::new();
        static LOCK: Mutex<()> = Mutex::new(());
        let page = *PAGE.get_or_init(|| {
            // SAFETY: an anonymous private mapping of one page at an
            // address of the kernel's choosing touches no memory of ours.
            let p = unsafe {
                libc::mmap(
                    core::ptr::null_mut(),
                    page_size(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED { 0 } else { p as usize }
        });
        if page == 0 {
            return false;
        }
        // One barrier at a time: each needs the page writable, then not.
        let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let p = page as *mut libc::c_void;
        // SAFETY: `p` is the page mapped above, never unmapped; while
        // `LOCK` is held nobody else changes its protection, and it is
        // writable between the two calls, where the write lands.
        unsafe {
            if libc::mprotect(p, page_size(), libc::PROT_READ | libc::PROT_WRITE) != 0 {
                return false;
            }
            // Dirty the page, so that its TLB entry exists to shoot down.
            core::ptr::write_volatile(p.cast::<u8>(), 1);
            libc::mprotect(p, page_size(), libc::PROT_NONE) == 0
        }
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
    pub(super) fn page_barrier() -> bool {
        false
    }

    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    fn page_size() -> usize {
        // SAFETY: `sysconf` reads a configuration value.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size).unwrap_or(4096)
    }
}

#[cfg(all(not(loom), not(target_os = "linux")))]
mod imp {
    pub(super) fn register() -> bool {
        false
    }

    pub(super) fn barrier() -> bool {
        false
    }

    pub(super) fn page_barrier() -> bool {
        false
    }
}

#[cfg(all(test, not(loom), target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_failed_barrier_is_retried_after_registering_again() {
        if !available() {
            return;
        }
        // The barrier fails once; the re-registration and second
        // barrier succeed.
        fail_next(1, true);
        assert!(heavy(), "the second membarrier runs");
        fail_next(0, false);
    }

    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    #[test]
    fn a_lost_registration_falls_back_to_the_page_barrier() {
        if !available() {
            return;
        }
        fail_next(u32::MAX, false);
        assert!(heavy(), "the page barrier runs when membarrier fails");
        assert!(heavy(), "and again (the page is made writable each time)");
        fail_next(0, false);
    }

    #[test]
    fn heavy_says_when_no_barrier_ran() {
        if !available() {
            return;
        }
        fail_next(u32::MAX, true);
        assert!(!heavy(), "no barrier could run");
        fail_next(0, false);
    }
}

//! Child processes a run starts (hooks, command sources): each in its own
//! process group, so a terminal's Ctrl-C does not reach it and a timeout or
//! an interrupted run kills everything it started. Also the allocator
//! setting of the process itself ([`single_malloc_arena`]).

/// Sends SIGKILL to the process group led by `pid`.
pub fn kill_group(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill with a negative pid signals that process group.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// Kills a child's process group when dropped while still armed (the run
/// was interrupted, or the child timed out); [`GroupGuard::disarm`] once the
/// child ended.
#[derive(Debug)]
pub struct GroupGuard(Option<u32>);

impl GroupGuard {
    /// Guards the group led by `pid` (`None`: nothing to guard).
    pub fn new(pid: Option<u32>) -> Self {
        GroupGuard(pid)
    }

    /// The child ended: dropping the guard no longer kills anything.
    pub fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            kill_group(pid);
        }
    }
}

/// Makes glibc's allocator use one arena for every thread. Call it first
/// thing in `main`, before any thread starts (as `MALLOC_ARENA_MAX=1`).
///
/// The pipelines allocate and free blocks of 1–8 MiB on several threads at
/// once; with an arena per thread, freed blocks stay resident in each
/// (bench/chunked.sh, a chunked backup of 768 MiB: 126 MiB peak RSS with
/// glibc's default, 94 MiB with two arenas, 64 MiB with one, at the same
/// wall and CPU time: the threads hold large blocks, not many small ones).
/// Nothing happens where the allocator is not glibc's.
pub fn single_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

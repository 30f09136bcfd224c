//! Child processes a run starts (hooks, command sources): each in its own
//! process group, so a terminal's Ctrl-C does not reach it and a timeout or
//! an interrupted run kills everything it started.

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

//! The open-files limit: raised at start from the soft limit to the hard one, so that a
//! worker can hold as many connections as the system allows it (a soft limit of 1,024 is
//! common and far too low for a server); workers inherit it across the fork.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The soft limit before and after, when it was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raised {
    /// The soft limit found at start.
    pub(crate) from: u64,
    /// The soft limit now (the hard limit).
    pub(crate) to: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. `None` when it already was there, or
/// when the kernel refused (the server then runs with the limit it was given, as before).
pub(crate) fn raise_to_hard_limit() -> Option<Raised> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft >= hard {
        return None;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Some(Raised {
            from: soft,
            to: hard,
        }),
        Err(e) => {
            tracing::warn!("cannot raise the open-files limit from {soft} to {hard}: {e}");
            None
        }
    }
}

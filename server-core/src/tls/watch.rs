//! Noticing that the certificate files changed: a fingerprint of each file (device, inode,
//! size, modification time of the file a symlink points to, so that Kubernetes' swap of a
//! secret's `..data` link counts), compared at every check.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use super::certificate::ServedPair;
use super::{load_pair, TlsError, TlsSettings};

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    device: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        device: meta.dev(),
        inode: meta.ino(),
        size: meta.size(),
        modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    })
}

/// What a check found.
#[derive(Debug)]
pub(crate) enum PairChange {
    /// The files are as last seen.
    Unchanged,
    /// They changed and hold a good pair: serve it.
    Loaded(Arc<ServedPair>),
    /// They changed and do not load: keep the old pair (reported once per change).
    Refused(TlsError),
}

/// Watches the certificate and key files of `settings`.
#[derive(Debug)]
pub(crate) struct PairWatch {
    settings: TlsSettings,
    seen: Option<(Option<Fingerprint>, Option<Fingerprint>)>,
}

impl PairWatch {
    /// A watch that reports the files as changed at its first check (a process started
    /// with an inherited pair loads the files as they are now).
    pub(crate) fn new(settings: TlsSettings) -> Self {
        Self {
            settings,
            seen: None,
        }
    }

    fn fingerprints(&self) -> (Option<Fingerprint>, Option<Fingerprint>) {
        (
            fingerprint(&self.settings.cert_file),
            fingerprint(&self.settings.key_file),
        )
    }

    /// Compares the files with the last check; loads them if they changed. A pair caught
    /// half-written (certificate replaced, key not yet) is refused now and loaded at the
    /// check after the second file changes.
    pub(crate) fn check(&mut self) -> PairChange {
        let now = self.fingerprints();
        if self.seen == Some(now) {
            return PairChange::Unchanged;
        }
        self.seen = Some(now);
        match load_pair(&self.settings) {
            Ok(pair) => PairChange::Loaded(pair),
            Err(e) => PairChange::Refused(e),
        }
    }
}

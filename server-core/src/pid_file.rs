//! The parent's pid file: written atomically once the listener is open, removed at exit.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A pid file this process wrote.
#[derive(Debug)]
pub(crate) struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's pid to `path` through a temporary file and a rename, so that
    /// a reader never sees a partial file.
    pub(crate) fn create(path: &Path) -> Result<Self> {
        let pid = std::process::id();
        let tmp = path.with_extension(format!("tmp.{pid}"));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            writeln!(file, "{pid}")?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::PidFile {
                path: path.to_path_buf(),
                source: e,
            }
        })?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for PidFile {
    /// Removes the file, unless another process has taken it over since (the new parent
    /// of a binary upgrade writes its own pid there).
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

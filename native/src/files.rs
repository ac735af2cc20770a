//! Writing output files so that a reader never sees half of one: write a temporary file beside
//! the target, flush it to disk, then rename it over the target (atomic on one filesystem).

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary name used while `path` is being written.
pub fn temp_path(path: &Path) -> PathBuf {
    temp_path_of(path, std::process::id())
}

fn temp_path_of(path: &Path, pid: u32) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{pid}"))
}

/// Removes the temporary files a process writing `path` left when it was killed mid-write (a
/// `kill -9`, an MPI job aborted while rank 0 wrote): `.NAME.tmp-PID` beside it whose process
/// is gone (on Linux, where /proc says; elsewhere none is removed). Returns those removed.
pub fn remove_stale_temps(path: &Path) -> Vec<PathBuf> {
    let Some(dir) = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    }) else {
        return Vec::new();
    };
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let alive =
        |pid: u32| !Path::new("/proc").is_dir() || Path::new(&format!("/proc/{pid}")).exists();
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e
                .file_name()
                .to_str()?
                .strip_prefix(&prefix)?
                .parse()
                .ok()?;
            let stale = temp_path_of(path, pid);
            (!alive(pid) && std::fs::remove_file(&stale).is_ok()).then_some(stale)
        })
        .collect()
}

/// Writes `bytes` to `path` atomically. On any failure (no space left, a folder made read-only
/// or removed) the temporary file is removed and whatever `path` held before is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        if fails_for_the_test() {
            // Half of it written, then the disk is full.
            f.write_all(&bytes[..bytes.len() / 2])?;
            return Err(std::io::Error::from_raw_os_error(28));
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("{}: cannot write", path.display()))
}

/// Fault injection for the tests of failed writes, not a user setting:
/// `GPUMLP_TEST_FAIL_WRITE=N` makes the Nth atomic write of this process (1-based) fail as a full
/// disk does.
fn fails_for_the_test() -> bool {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed) + 1;
    std::env::var("GPUMLP_TEST_FAIL_WRITE")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        == Some(n)
}

/// Fails early, before any work, if `path` could not be written later: its folder must exist
/// and it must not be a folder itself. `flag` names the option in the error.
pub fn check_writable(flag: &str, path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        anyhow::bail!(
            "{flag} {}: folder {} does not exist",
            path.display(),
            parent.display()
        );
    }
    if path.is_dir() {
        anyhow::bail!(
            "{flag} {}: is a folder, expected a file name",
            path.display()
        );
    }
    for stale in remove_stale_temps(path) {
        eprintln!(
            "note: removed {}, left by an earlier run that was killed while writing {}",
            stale.display(),
            path.display()
        );
    }
    Ok(())
}

/// Reads a whole file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))
}

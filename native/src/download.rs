//! Downloading dataset files: each file is tried on every mirror in turn, streamed to a temporary
//! file while its MD5 is computed, and renamed into place only when the MD5 matches the published
//! one. Offline, the first attempt fails within the connect timeout (DNS failures at once).

use crate::files::temp_path;
use anyhow::{bail, Result};
use md5::{Digest, Md5};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A file to fetch: its name under each mirror's base URL and its published MD5 (hex).
#[derive(Clone, Debug)]
pub struct RemoteFile {
    pub name: String,
    pub md5: String,
}

/// How long to wait for a connection before trying the next mirror.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// No dataset file is anywhere near this; a server sending more is wrong.
const MAX_BYTES: u64 = 256 << 20;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_resolve(Some(CONNECT_TIMEOUT))
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(Duration::from_secs(15)))
        .timeout_recv_body(Some(Duration::from_secs(600)))
        .build()
        .into()
}

/// Downloads `file` into `dir` from the first mirror that serves it with the right MD5, and
/// returns its path. The error lists what each mirror did.
pub fn fetch(mirrors: &[String], file: &RemoteFile, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot create folder: {e}", dir.display()))?;
    let dest = dir.join(&file.name);
    let agent = agent();
    let mut failures = Vec::new();
    for base in mirrors {
        let url = format!("{}/{}", base.trim_end_matches('/'), file.name);
        match fetch_one(&agent, &url, &file.md5, &dest) {
            Ok(()) => return Ok(dest),
            Err(e) => failures.push(format!("{url}: {e}")),
        }
    }
    if mirrors.is_empty() {
        bail!("{}: no mirror to download it from", file.name);
    }
    bail!("cannot download {}: {}", file.name, failures.join("; "))
}

fn fetch_one(agent: &ureq::Agent, url: &str, md5: &str, dest: &Path) -> Result<()> {
    let tmp = temp_path(dest);
    let result = (|| -> Result<()> {
        let mut response = agent.get(url).call()?;
        let mut body = response.body_mut().with_config().limit(MAX_BYTES).reader();
        let mut out = std::fs::File::create(&tmp)?;
        let mut hasher = Md5::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = body.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
        }
        let got = format!("{:x}", hasher.finalize());
        if !got.eq_ignore_ascii_case(md5) {
            bail!("MD5 {got} does not match the published {md5}");
        }
        out.sync_all()?;
        std::fs::rename(&tmp, dest)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

//! Helpers for the program's tests: running the binary, writing IDX fixtures, and a tiny HTTP
//! server on 127.0.0.1 that serves canned replies.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `gpumlp` with `args`, offline by construction: an empty cache and an MNIST mirror that
/// refuses connections, so no test ever reaches the network or a developer's real cache.
pub fn gpumlp(args: &[&str], cache: &Path) -> Output {
    gpumlp_env(args, cache, &[])
}

pub fn gpumlp_env(args: &[&str], cache: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gpumlp"));
    cmd.args(args)
        .env("GPUMLP_CACHE_DIR", cache)
        .env("GPUMLP_MNIST_MIRRORS", refused_base())
        .env("GPUMLP_FASHION_MIRRORS", refused_base());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the gpumlp binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The last line of stdout, parsed as JSON.
pub fn json(o: &Output) -> serde_json::Value {
    let out = stdout(o);
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last stdout line is not JSON ({e}): {out}"))
}

/// Asserts a successful run, showing its stderr otherwise.
pub fn assert_ok(o: &Output) {
    assert!(o.status.success(), "gpumlp failed: {}", stderr(o));
}

/// Asserts the contract for bad input: exit status 2, one line on stderr that mentions every
/// one of `needles`, and no panic.
pub fn assert_refused(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected exit status 2; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "it panicked: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "expected a one-line error, got: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "error does not mention '{n}': {err}");
    }
}

/// Raw or gzip bytes of an IDX image file and a label file.
pub fn idx_files(images: &[u8], labels: &[u8], gz: bool) -> (Vec<u8>, Vec<u8>) {
    let (i, l) = (
        gpumlp::idx::encode_images(images),
        gpumlp::idx::encode_labels(labels),
    );
    if gz {
        (gzip(&i), gzip(&l))
    } else {
        (i, l)
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use flate2::write::GzEncoder;
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A folder with the four IDX files of the first `train`/`test` digits of the built-in sample.
pub fn sample_dir(dir: &Path, train: usize, test: usize, gz: bool) -> PathBuf {
    let s = gpumlp::dataset::mnist_sample();
    std::fs::create_dir_all(dir).unwrap();
    let suffix = if gz { ".gz" } else { "" };
    for (prefix, set, n) in [("train", &s.train, train), ("t10k", &s.test, test)] {
        let labels: Vec<u8> = set.labels[..n].iter().map(|&l| l as u8).collect();
        let (i, l) = idx_files(&set.features.as_bytes()[..n * 784], &labels, gz);
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{suffix}")), i).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{suffix}")), l).unwrap();
    }
    dir.to_path_buf()
}

/// What the test server answers for a path.
#[derive(Clone)]
pub enum Reply {
    /// 200 with this body.
    Body(Vec<u8>),
    /// This status, empty body.
    Status(u16),
    /// 200 claiming `claimed` bytes of Content-Length, sending only `body`, then closing.
    CutShort { claimed: usize, body: Vec<u8> },
}

/// Serves `routes` on 127.0.0.1 until the test process ends; returns its base URL.
pub fn serve(routes: Vec<(&str, Reply)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let routes: Vec<(String, Reply)> = routes
        .into_iter()
        .map(|(p, r)| (p.to_string(), r))
        .collect();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request);
            let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
            let reply = routes
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, r)| r.clone())
                .unwrap_or(Reply::Status(404));
            let (status, claimed, body) = match reply {
                Reply::Body(b) => (200, b.len(), b),
                Reply::Status(s) => (s, 0, Vec::new()),
                Reply::CutShort { claimed, body } => (200, claimed, body),
            };
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    base
}

/// A base URL on 127.0.0.1 where nothing listens: connections are refused at once.
pub fn refused_base() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// Files in `dir` (to check that nothing, temporary files included, was left behind).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[path = "../../../tests/common/gated.rs"]
mod gated;
#[allow(unused_imports)] // not every test file gates its tests
pub use gated::gated;

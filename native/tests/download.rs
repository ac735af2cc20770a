//! The downloader against a local HTTP server: a good file, a wrong checksum, a second mirror
//! after a failing first, a refused connection, and a body cut short. Nothing but a whole,
//! verified file may ever appear at the destination.

mod common;

use common::{listing, refused_base, serve, Reply};
use gpumlp_native::download::{fetch, RemoteFile};
use md5::{Digest, Md5};

fn body() -> Vec<u8> {
    (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect()
}

fn file(content: &[u8]) -> RemoteFile {
    RemoteFile {
        name: "data.gz".into(),
        md5: format!("{:x}", Md5::digest(content)),
    }
}

#[test]
fn a_good_file_is_downloaded_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let base = serve(vec![("/data.gz", Reply::Body(body()))]);
    let path = fetch(&[base], &file(&body()), dir.path()).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body());
    assert_eq!(
        listing(dir.path()),
        ["data.gz"],
        "temporary files left behind"
    );
}

#[test]
fn a_wrong_checksum_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut tampered = body();
    tampered[1000] ^= 1;
    let base = serve(vec![("/data.gz", Reply::Body(tampered))]);
    let err = fetch(&[base], &file(&body()), dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("MD5") && err.contains("data.gz"), "{err}");
    assert!(
        listing(dir.path()).is_empty(),
        "left {:?}",
        listing(dir.path())
    );
}

#[test]
fn the_second_mirror_serves_when_the_first_fails() {
    let dir = tempfile::tempdir().unwrap();
    let missing = serve(vec![]); // answers 404 to everything
    let good = serve(vec![("/mirror/data.gz", Reply::Body(body()))]);
    let mirrors = [refused_base(), missing, format!("{good}/mirror/")];
    let path = fetch(&mirrors, &file(&body()), dir.path()).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body());
}

#[test]
fn a_refused_connection_fails_fast_with_the_url_named() {
    let dir = tempfile::tempdir().unwrap();
    let base = refused_base();
    let start = std::time::Instant::now();
    let err = fetch(std::slice::from_ref(&base), &file(&body()), dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&base) && err.to_lowercase().contains("refused"),
        "{err}"
    );
    assert!(
        start.elapsed().as_secs() < 5,
        "a refused connection took {:?}",
        start.elapsed()
    );
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn a_body_cut_short_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let full = body();
    let base = serve(vec![(
        "/data.gz",
        Reply::CutShort {
            claimed: full.len(),
            body: full[..50_000].to_vec(),
        },
    )]);
    let err = fetch(&[base], &file(&full), dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("data.gz"), "{err}");
    assert!(
        listing(dir.path()).is_empty(),
        "left {:?}",
        listing(dir.path())
    );
}

//! Runs the browser tests (web/tests/demo.test.mjs) from `cargo test`, so the README's one test
//! command covers the demo too: builds web/pkg with web/build.sh, then `node --test` drives
//! Debian's Chromium through Playwright. Without Chromium, Node's playwright-core or a wasm32
//! toolchain the test fails under CI (CI=true) and says SKIPPED elsewhere.

use std::path::Path;
use std::process::Command;

#[test]
fn the_demo_trains_draws_and_loads_native_models_in_chromium() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR"));
    let missing: Vec<&str> = [
        (
            "/usr/bin/chromium (apt-get install chromium)",
            Path::new("/usr/bin/chromium").exists(),
        ),
        (
            "web/node_modules/playwright-core (npm ci in web/)",
            web.join("node_modules/playwright-core").exists(),
        ),
        (
            "a wasm32 toolchain (apt-get install rustc-web cargo-web rust-web-src lld-22)",
            Path::new("/usr/lib/llvm-22/bin/wasm-ld").exists() || has_rustup_wasm32(),
        ),
    ]
    .into_iter()
    .filter(|(_, present)| !present)
    .map(|(what, _)| what)
    .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI lacks {missing:?}: .ci/run must install them"
        );
        eprintln!("SKIPPED: the browser tests need {missing:?}");
        return;
    }
    let build = Command::new(web.join("build.sh"))
        .status()
        .expect("web/build.sh runs");
    assert!(build.success(), "web/build.sh failed");
    let node = Command::new("node")
        .args(["--test", "--test-concurrency=1", "tests/"])
        .current_dir(web)
        .status()
        .expect("node runs");
    assert!(
        node.success(),
        "the browser tests failed (their output is above)"
    );
}

fn has_rustup_wasm32() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == "wasm32-unknown-unknown")
        })
}

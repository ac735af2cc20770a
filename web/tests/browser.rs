//! Runs the browser tests (web/tests/*.test.mjs: the demo and its server) from `cargo test`, so
//! the README's one test command covers the demo too: builds web/pkg with web/build.sh, then `node --test` drives
//! Debian's Chromium through Playwright. Without Chromium, Node's playwright-core or a wasm32
//! toolchain the test is reported as ignored, with what is missing, in the test summary, and
//! fails under CI (CI=true).

use std::path::Path;
use std::process::{Command, ExitCode};

#[path = "../../tests/common/gated.rs"]
mod gated;

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let missing = missing();
    let reason = (!missing.is_empty()).then(|| format!("needs {}", missing.join(", ")));
    let trial = gated::gated(
        "the_demo_trains_draws_and_loads_native_models_in_chromium",
        reason.as_deref(),
        the_demo_trains_draws_and_loads_native_models_in_chromium,
    );
    libtest_mimic::run(&args, vec![trial]).exit_code()
}

/// What the browser tests need and this machine lacks.
fn missing() -> Vec<&'static str> {
    let web = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
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
    .collect()
}

fn the_demo_trains_draws_and_loads_native_models_in_chromium() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR"));
    let missing = missing();
    assert!(
        missing.is_empty(),
        "CI lacks {missing:?}: .ci/run must install them"
    );
    let build = Command::new(web.join("build.sh"))
        .status()
        .expect("web/build.sh runs");
    assert!(build.success(), "web/build.sh failed");
    // The program of this same build (target/<profile>/gpumlp beside target/<profile>/deps/):
    // one test compares its predictions with the page's.
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("gpumlp"));
    let mut node = Command::new("node");
    node.args(["--test", "--test-concurrency=1", "tests/"])
        .current_dir(web);
    if let Some(bin) = bin.filter(|b| b.exists()) {
        node.env("GPUMLP_BIN", bin);
    }
    let node = node.status().expect("node runs");
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

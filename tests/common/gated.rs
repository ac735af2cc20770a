//! The gate of the test harnesses that decide at run time (libtest-mimic, `harness = false`),
//! shared by the core crate's, the program's and the demo's tests (`#[path]`-included).

/// A test that runs where `missing` is None. Where something it needs is missing it is reported
/// as ignored, the reason shown beside its name, except under CI (CI=true), where it runs and
/// fails: CI must install everything the tests need.
pub fn gated(
    name: &str,
    missing: Option<&str>,
    body: impl FnOnce() + Send + 'static,
) -> libtest_mimic::Trial {
    let trial = libtest_mimic::Trial::test(name, move || {
        body();
        Ok(())
    });
    match missing {
        Some(reason) if std::env::var_os("CI").is_none() => trial
            .with_ignored_flag(true)
            .with_kind(format!("ignored: {reason}")),
        _ => trial,
    }
}

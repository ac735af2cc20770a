//! The GPU harnesses' trials: every test in both of the modes the kernels run in.

use super::gated;
use gpumlp::backend::gpu::GpuContext;
use pollster::block_on;

/// A GPU test's body, given a context on the adapter in one mode.
pub type GpuTest = fn(GpuContext);

/// Each of `tests` twice on `adapter`, named `trusted::NAME` and `checked::NAME`: with the
/// kernels as the program runs them natively (trusted modules, no runtime bounds checks,
/// subgroup reductions where the adapter has them), and with naga's bounds checks and the plain
/// reductions, as in a browser. Gated on `missing` (`gated`): ignored with that reason where
/// there is no adapter, failed under CI.
pub fn per_mode(
    tests: &'static [(&'static str, GpuTest)],
    adapter: Option<wgpu::Adapter>,
    missing: Option<&str>,
) -> Vec<libtest_mimic::Trial> {
    [("trusted", false), ("checked", true)]
        .into_iter()
        .flat_map(|(mode, checked)| {
            let adapter = adapter.clone();
            tests.iter().map(move |&(name, body)| {
                let adapter = adapter.clone();
                gated(&format!("{mode}::{name}"), missing, move || {
                    let adapter = adapter.expect("a GPU adapter");
                    let mut ctx = block_on(GpuContext::with_checks(&adapter, checked)).unwrap();
                    assert_eq!(ctx.checked, checked);
                    ctx.subgroups &= !checked;
                    body(ctx)
                })
            })
        })
        .collect()
}

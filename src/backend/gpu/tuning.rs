//! Which GEMM variant runs each product shape: the candidates ([`VARIANTS`]), the shapes they
//! are chosen for ([`Shape`]), and the choices made on one adapter ([`GemmTuning`]), which the
//! program caches per adapter and driver. The timing that makes the choices is in `tuner`, the
//! kernels themselves in `gemm`.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A block tile of `bm x bn` outputs per workgroup, `tm x tn` per invocation, and the number
/// of parts the product's K range is split into (split-K: each part's workgroups write a
/// partial tile to a workspace, and a second dispatch sums the parts and applies the epilogue).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Variant {
    pub bm: u32,
    pub bn: u32,
    pub tm: u32,
    pub tn: u32,
    /// 1 (no split) or one of [`SPLITS`]; absent from tuning files written before split-K.
    #[serde(default = "no_split")]
    pub split: u32,
    /// 0 for the f32 kernel (gemm.wgsl); else the side (8 or 16) of the cooperative matrices of
    /// the mixed-precision kernel (gemm_mixed.wgsl), `tm x tn` of them per workgroup (1 or 2
    /// each), so `bm = matrix * tm`, `bn = matrix * tn`.
    #[serde(default)]
    pub matrix: u32,
}

fn no_split() -> u32 {
    1
}

impl Variant {
    pub fn invocations(self) -> u32 {
        (self.bm / self.tm) * (self.bn / self.tn)
    }

    /// The same tile with K split in `split` parts.
    pub fn split(self, split: u32) -> Self {
        Variant { split, ..self }
    }

    /// The mixed-precision variant of `t x t` cooperative matrices of side `matrix`.
    pub fn cooperative(matrix: u32, t: u32) -> Self {
        Variant {
            bm: matrix * t,
            bn: matrix * t,
            tm: t,
            tn: t,
            split: 1,
            matrix,
        }
    }

    /// Whether this gemm.wgsl or gemm_mixed.wgsl variant exists in this version.
    fn known(&self) -> bool {
        if self.matrix > 0 {
            return matches!(self.matrix, 8 | 16)
                && matches!(self.tm, 1 | 2)
                && *self == Variant::cooperative(self.matrix, self.tm);
        }
        VARIANTS.contains(&self.split(1)) && (self.split == 1 || SPLITS.contains(&self.split))
    }
}

/// The mixed-precision candidates on an adapter offering cooperative matrices of `sizes`.
pub fn cooperative_variants(sizes: &[u32]) -> Vec<Variant> {
    sizes
        .iter()
        .flat_map(|&s| [Variant::cooperative(s, 2), Variant::cooperative(s, 1)])
        .collect()
}

impl fmt::Display for Variant {
    /// `128x64/8x4`, and `128x64/8x4 k/4` split in four; `32x32/2x2 f16 16x16` for 2 x 2
    /// cooperative matrices of 16 x 16.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}x{}/{}x{}", self.bm, self.bn, self.tm, self.tn)?;
        if self.matrix > 0 {
            write!(f, " f16 {m}x{m}", m = self.matrix)?;
        }
        if self.split > 1 {
            write!(f, " k/{}", self.split)?;
        }
        Ok(())
    }
}

const fn v(bm: u32, bn: u32, tm: u32, tn: u32) -> Variant {
    Variant {
        bm,
        bn,
        tm,
        tn,
        split: 1,
        matrix: 0,
    }
}

/// The split factors a product's K range may be cut into.
pub const SPLITS: [u32; 3] = [2, 4, 8];

/// The least K each part of a split product keeps: below it the second dispatch and the
/// workspace cost more than the parallelism gains.
pub const MIN_SPLIT_K: u32 = 128;

/// The candidates, largest tiles first: large ones for large products, small ones so that a
/// batch-128 product still spreads over every multiprocessor of a big GPU.
pub const VARIANTS: [Variant; 6] = [
    v(128, 128, 8, 8),
    v(128, 64, 8, 4),
    v(64, 64, 4, 4),
    v(64, 64, 8, 4),
    v(32, 64, 4, 4),
    v(32, 32, 4, 4),
];

/// One product's shape as the tuner keys it: `C[m, n] = A[m, k] B[k, n]` and the operands'
/// layouts. The weight gradients (A transposed: `dZ^T @ X`) carry the bias gradients' sums and
/// have the batch as K: their K is never split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shape {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub a_t: bool,
    pub b_t: bool,
}

impl fmt::Display for Shape {
    /// `128x784x512 A·Bᵀ` style, as m x k x n (the order `gpumlp bench` prints).
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let t = |x: bool| if x { "T" } else { "N" };
        write!(
            f,
            "{}x{}x{} {}{}",
            self.m,
            self.k,
            self.n,
            t(self.a_t),
            t(self.b_t)
        )
    }
}

impl Shape {
    /// The grid of `variant`'s workgroups over this shape: x over columns, y over rows of tiles.
    pub fn grid(&self, variant: Variant) -> (u32, u32) {
        (self.n.div_ceil(variant.bn), self.m.div_ceil(variant.bm))
    }

    /// Workgroups of `variant` over this shape.
    fn workgroups(&self, variant: Variant) -> u64 {
        let (x, y) = self.grid(variant);
        x as u64 * y as u64
    }

    /// Whether K may be split: not for a weight gradient (see above), and only where each part
    /// keeps at least [`MIN_SPLIT_K`].
    pub fn splits(&self) -> impl Iterator<Item = u32> + '_ {
        SPLITS
            .into_iter()
            .filter(move |&s| !self.a_t && self.k >= s * MIN_SPLIT_K)
    }

    /// The rule of thumb where nothing was timed: the largest tile that still gives 64
    /// workgroups (enough to keep a big GPU's multiprocessors busy), else the smallest tile
    /// with K split in as few parts as bring it to 64 workgroups (as many as K allows).
    pub fn default_variant(&self, max_invocations: u32) -> Variant {
        let fitting: Vec<Variant> = VARIANTS
            .into_iter()
            .filter(|v| v.invocations() <= max_invocations)
            .collect();
        let smallest = fitting
            .last()
            .copied()
            .unwrap_or(VARIANTS[VARIANTS.len() - 1]);
        if let Some(v) = fitting.into_iter().find(|v| self.workgroups(*v) >= 64) {
            return v;
        }
        let groups = self.workgroups(smallest);
        let split = self
            .splits()
            .find(|&s| groups * s as u64 >= 64)
            .or_else(|| self.splits().last())
            .unwrap_or(1);
        smallest.split(split)
    }

    /// The candidates the tuner times: every tile that fits the device, then the split K of
    /// the best of those and of the largest tile (a split pays where tiles are few).
    pub fn candidates(&self, max_invocations: u32) -> Vec<Variant> {
        VARIANTS
            .into_iter()
            .filter(|v| v.invocations() <= max_invocations)
            .collect()
    }

    /// The mixed-precision rule of thumb: the largest matrices offered, four to a workgroup
    /// where that still gives 64 workgroups, else one.
    pub fn default_cooperative(&self, sizes: &[u32]) -> Option<Variant> {
        let largest = *sizes.iter().max()?;
        let four = Variant::cooperative(largest, 2);
        Some(if self.workgroups(four) >= 64 {
            four
        } else {
            Variant::cooperative(largest, 1)
        })
    }

    /// The split variants of `best` and of the largest fitting tile, for the tuner's second
    /// round.
    pub fn split_candidates(&self, best: Variant, max_invocations: u32) -> Vec<Variant> {
        let mut tiles = vec![best.split(1)];
        if let Some(largest) = self.candidates(max_invocations).first() {
            if *largest != best.split(1) {
                tiles.push(*largest);
            }
        }
        tiles
            .into_iter()
            .flat_map(|t| self.splits().map(move |s| t.split(s)))
            .collect()
    }
}

/// The variant chosen for each shape on one adapter, and whether tuning (timing the candidates
/// at a shape's first use) is on. The program loads and saves it per adapter and driver; the
/// core crate only reads and fills it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GemmTuning {
    /// The adapter and driver the choices were timed on.
    pub device: String,
    /// `Shape` (as displayed) to the fastest variant.
    pub choices: BTreeMap<String, Variant>,
    /// Every candidate's time in seconds per shape, from the last tuning of this run (for
    /// `gpumlp bench --tune`); not saved.
    #[serde(skip)]
    pub timings: BTreeMap<String, Vec<(Variant, f64)>>,
    /// Time each shape's candidates at first use (else the rule of thumb).
    #[serde(skip)]
    pub enabled: bool,
    /// Choices were added since it was loaded.
    #[serde(skip)]
    pub changed: bool,
    /// Wall-clock seconds spent timing candidates in this run (compiling included).
    #[serde(skip)]
    pub seconds: f64,
    /// Run every shape with this variant, whatever was chosen (for tests that cover each one).
    #[serde(skip)]
    pub force: Option<Variant>,
    /// Never split K (`GPUMLP_NO_SPLIT_K=1`, for measuring what split-K gives: see
    /// scripts/gpu-check.sh).
    #[serde(skip)]
    pub no_split: bool,
    /// The adapter is a software rasterizer (lavapipe, SwiftShader): the rule of thumb then
    /// takes the largest tile, since a CPU gains nothing from many workgroups (`gpumlp bench
    /// --tune` on one shows it; README, "Devices").
    #[serde(skip)]
    pub software: bool,
}

impl GemmTuning {
    /// The variant for `shape` where nothing was timed: the largest tile on a software
    /// rasterizer, else [`Shape::default_variant`].
    pub fn rule_of_thumb(&self, shape: Shape, max_invocations: u32) -> Variant {
        if self.software {
            if let Some(v) = VARIANTS.iter().find(|v| v.invocations() <= max_invocations) {
                return *v;
            }
        }
        let v = shape.default_variant(max_invocations);
        if self.no_split {
            v.split(1)
        } else {
            v
        }
    }

    /// The choices as the JSON the program caches.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("tuning serialises")
    }

    /// Reads a cached tuning for `device`; refuses a malformed file, one for another device,
    /// or one naming a variant this version does not have.
    pub fn from_json(text: &str, device: &str) -> Result<Self> {
        let tuning: GemmTuning = serde_json::from_str(text)
            .map_err(|e| Error::Gpu(format!("not a GEMM tuning file ({e})")))?;
        if tuning.device != device {
            return Err(Error::Gpu(format!(
                "tuned for {}, not {device}",
                tuning.device
            )));
        }
        if let Some((shape, v)) = tuning.choices.iter().find(|(_, v)| !v.known()) {
            return Err(Error::Gpu(format!(
                "{shape}: variant {v} is not one this gpumlp has"
            )));
        }
        Ok(tuning)
    }

    /// `adapter name, backend, driver and driver info`: what a cached choice is valid for.
    pub fn device_key(info: &wgpu::AdapterInfo) -> String {
        format!(
            "{} ({}, driver {} {})",
            info.name,
            info.backend.to_str(),
            info.driver,
            info.driver_info
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_of_thumb_keeps_64_workgroups_where_it_can() {
        let shape = |m, n| Shape {
            m,
            n,
            k: 256,
            a_t: false,
            b_t: false,
        };
        assert_eq!(shape(4096, 4096).default_variant(1024), VARIANTS[0]);
        // 128 x 512: 128x128 tiles give 4 workgroups; 32x32 gives 64.
        assert_eq!(
            shape(128, 512).default_variant(1024).to_string(),
            "32x32/4x4"
        );
        // A device allowing 128 invocations per workgroup never gets a 256-invocation variant.
        assert!(shape(4096, 4096).default_variant(128).invocations() <= 128);
        // 128 x 256 with K = 256: 32 workgroups, so K in two parts of 128 (the least a part keeps).
        assert_eq!(
            shape(128, 256).default_variant(1024).to_string(),
            "32x32/4x4 k/2"
        );
        // 128 x 10 with K = 2048: 4 workgroups; split 8 gives 32, the most K allows is enough.
        let wide = Shape {
            k: 2048,
            ..shape(128, 10)
        };
        assert_eq!(wide.default_variant(1024).split, 8);
        // A weight gradient's K (the batch) is never split.
        let dw = Shape {
            a_t: true,
            k: 4096,
            ..shape(16, 16)
        };
        assert_eq!(dw.default_variant(1024).split, 1);
        assert!(dw.split_candidates(VARIANTS[5], 1024).is_empty());
        assert_eq!(wide.split_candidates(VARIANTS[5], 1024).len(), 6);
    }

    #[test]
    fn a_tuning_file_round_trips_and_is_refused_for_another_device_or_variant() {
        let mut t = GemmTuning {
            device: "GPU X (vulkan, driver 1)".into(),
            ..Default::default()
        };
        t.choices.insert("128x784x512 NT".into(), VARIANTS[2]);
        let json = t.to_json();
        let back = GemmTuning::from_json(&json, &t.device).unwrap();
        assert_eq!(back.choices, t.choices);
        assert!(GemmTuning::from_json(&json, "GPU Y").is_err());
        assert!(GemmTuning::from_json("{ not json", &t.device).is_err());
        // A file from before split-K (no `split`) reads as unsplit.
        let old = json.replace(",\n      \"split\": 1", "");
        assert!(!old.contains("split"), "{old}");
        assert_eq!(
            GemmTuning::from_json(&old, &t.device).unwrap().choices,
            t.choices
        );
        let foreign = json.replace("\"bm\": 64", "\"bm\": 96");
        let err = GemmTuning::from_json(&foreign, &t.device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not one this gpumlp has"), "{err}");
    }
}

//! IDX parsing and dataset checks: every malformed input gets an error naming the file and the
//! problem, and a header claiming a huge size allocates nothing from the claim.

use flate2::write::GzEncoder;
use flate2::Compression;
use gpumlp::dataset::{self, Dataset};
use gpumlp::idx::{self, encode_images, encode_labels};
use std::io::Write;

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn images(n: usize) -> Vec<u8> {
    (0..n * 784).map(|i| (i % 256) as u8).collect()
}

fn err_images(bytes: &[u8]) -> String {
    idx::parse_images("imgs.idx", bytes)
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn the_built_in_sample_is_the_real_mnist_test_set() {
    let all = Dataset::from_idx(
        "i",
        dataset::SAMPLE_IMAGES_GZ,
        "l",
        dataset::SAMPLE_LABELS_GZ,
    )
    .unwrap()
    .0;
    assert_eq!(all.len(), 10_000);
    // Label counts of the MNIST test set, as published.
    let mut counts = [0usize; 10];
    all.labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(
        counts,
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    let s = dataset::mnist_sample();
    assert_eq!((s.train.len(), s.test.len()), (8000, 2000));
    // The split is a permutation: nothing lost, nothing repeated.
    let mut train_and_test = s.train.labels.clone();
    train_and_test.extend(&s.test.labels);
    let mut per_class = [0usize; 10];
    train_and_test
        .iter()
        .for_each(|&l| per_class[l as usize] += 1);
    assert_eq!(per_class, counts);
}

#[test]
fn good_files_parse_raw_and_gzipped() {
    let px = images(3);
    let parsed = idx::parse_images("a", &encode_images(&px)).unwrap();
    assert_eq!((parsed.shape, &parsed.pixels), ([28, 28, 1], &px));
    assert_eq!(
        idx::parse_images("a", &gz(&encode_images(&px)))
            .unwrap()
            .pixels,
        px
    );
    assert_eq!(
        idx::parse_labels("b", &gz(&encode_labels(&[0, 9, 5]))).unwrap(),
        vec![0, 9, 5]
    );
}

#[test]
fn wrong_magic_is_refused() {
    let e = err_images(&encode_labels(&[1, 2, 3]));
    assert!(
        e.contains("imgs.idx") && e.contains("magic 0x00000801 (a label file)"),
        "{e}"
    );
    let e = idx::parse_labels("lbl", &encode_images(&images(1)))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lbl") && e.contains("not an IDX label file"),
        "{e}"
    );
    let e = err_images(b"PK\x03\x04 this is a zip file, not IDX at all");
    assert!(e.contains("not an IDX image file"), "{e}");
}

#[test]
fn truncated_files_are_refused_raw_and_gzipped() {
    let full = encode_images(&images(4));
    for cut in [&full[..10], &full[..full.len() - 1]] {
        let e = err_images(cut);
        assert!(e.contains("truncated"), "{e}");
        let e = err_images(&gz(cut));
        assert!(e.contains("truncated"), "{e}");
    }
    // A gzip stream cut short (the compressed bytes themselves end early).
    let z = gz(&full);
    let e = err_images(&z[..z.len() / 2]);
    assert!(e.contains("truncated") || e.contains("corrupt gzip"), "{e}");
}

#[test]
fn a_header_claiming_billions_of_images_allocates_nothing() {
    let mut lying = encode_images(&images(2));
    lying[4..8].copy_from_slice(&3_000_000_000u32.to_be_bytes());
    // 3e9 x 784 bytes would be 2.3 TB; both forms must fail at once from the real length.
    let e = err_images(&lying);
    assert!(e.contains("header claims 3000000000 images"), "{e}");
    lying[4..8].copy_from_slice(&5_000_000u32.to_be_bytes());
    let e = err_images(&gz(&lying));
    assert!(
        e.contains("header claims 5000000 images") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn trailing_data_and_empty_images_are_refused() {
    let mut extra = encode_images(&images(2));
    extra.extend_from_slice(&[0; 5]);
    assert!(err_images(&extra).contains("5 bytes of trailing data"));
    let mut empty = encode_images(&images(0));
    empty[8..12].copy_from_slice(&0u32.to_be_bytes());
    assert!(err_images(&empty).contains("images of 0x28 make 0 pixels"));
}

#[test]
fn images_of_any_size_and_colour_parse_with_their_shape() {
    // Two 14x28 grey images, then three 32x32 RGB ones (an IDX file of 4 dimensions).
    let grey: Vec<u8> = (0..2 * 14 * 28).map(|i| i as u8).collect();
    let parsed = idx::parse_images("a", &idx::encode_images_of([14, 28, 1], &grey)).unwrap();
    assert_eq!((parsed.shape, parsed.pixels), ([14, 28, 1], grey));
    let rgb: Vec<u8> = (0..3 * 32 * 32 * 3).map(|i| (i * 7) as u8).collect();
    let bytes = gz(&idx::encode_images_of([32, 32, 3], &rgb));
    let (set, shape) = Dataset::from_idx("c", &bytes, "l", &encode_labels(&[4, 0, 46])).unwrap();
    assert_eq!((shape, set.width, set.classes()), ([32, 32, 3], 3072, 47));
}

#[test]
fn labels_name_their_classes() {
    // EMNIST-style: 47 classes from labels 0..=46.
    let labels = idx::parse_labels("labels.idx", &encode_labels(&[1, 2, 46, 3])).unwrap();
    assert_eq!(labels, vec![1, 2, 46, 3]);
}

#[test]
fn corrupt_gzip_is_refused() {
    let mut z = gz(&encode_images(&images(3)));
    let mid = z.len() / 2;
    for b in &mut z[mid..mid + 16] {
        *b ^= 0x5a;
    }
    let e = err_images(&z);
    assert!(
        e.contains("imgs.idx") && (e.contains("corrupt gzip") || e.contains("truncated")),
        "{e}"
    );
}

#[test]
fn image_and_label_counts_must_agree() {
    let e = Dataset::from_idx(
        "i.idx",
        &encode_images(&images(3)),
        "l.idx",
        &encode_labels(&[1, 2]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("i.idx") && e.contains("3 samples but 2 labels"),
        "{e}"
    );
}

/// What fuzzing found in the IDX parser, kept: each input is refused with an error, no panic.
#[test]
fn the_idx_inputs_fuzzing_found_are_refused() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/idx");
    let mut found = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().contains("regression-") {
            continue;
        }
        found += 1;
        let bytes = std::fs::read(&path).unwrap();
        // A colour image header whose three dimensions multiply past 64 bits.
        assert!(idx::parse_images("f", &bytes).is_err(), "{path:?}");
        assert!(idx::parse_labels("f", &bytes).is_err(), "{path:?}");
    }
    assert!(found >= 1, "the regression inputs are missing");
}

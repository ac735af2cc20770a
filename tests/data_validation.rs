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
    (0..n * idx::PIXELS).map(|i| (i % 256) as u8).collect()
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
    .unwrap();
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
    assert_eq!(idx::parse_images("a", &encode_images(&px)).unwrap(), px);
    assert_eq!(
        idx::parse_images("a", &gz(&encode_images(&px))).unwrap(),
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
fn trailing_data_and_wrong_image_size_are_refused() {
    let mut extra = encode_images(&images(2));
    extra.extend_from_slice(&[0; 5]);
    assert!(err_images(&extra).contains("5 bytes of trailing data"));
    let mut small = encode_images(&images(1));
    small[8..12].copy_from_slice(&14u32.to_be_bytes());
    assert!(err_images(&small).contains("images are 14x28, expected 28x28"));
}

#[test]
fn labels_above_nine_are_refused() {
    let e = idx::parse_labels("labels.idx", &encode_labels(&[1, 2, 12, 3]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("labels.idx") && e.contains("label 12 at index 2"),
        "{e}"
    );
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
        e.contains("i.idx") && e.contains("3 images but 2 labels"),
        "{e}"
    );
}

//! Digit pictures of any size and polarity come out as MNIST-like 28x28 images.

use gpumlp::dataset;
use gpumlp::preprocess::digit_from_luma;
use gpumlp::preprocess::{PIXELS, SIDE};

/// Centre of mass (x, y) of a 28x28 image, in pixel-index coordinates.
fn centre(img: &[u8]) -> (f64, f64) {
    let (mut m, mut x, mut y) = (0.0, 0.0, 0.0);
    for (i, &v) in img.iter().enumerate() {
        m += v as f64;
        x += v as f64 * (i % SIDE) as f64;
        y += v as f64 * (i / SIDE) as f64;
    }
    (x / m, y / m)
}

#[test]
fn an_enlarged_inverted_mnist_digit_comes_back_close_to_itself() {
    let sample = dataset::mnist_sample();
    for i in 0..20 {
        let digit = sample.test.image(i);
        // Dark ink on white paper, 5x larger, as a photo or a drawing would be.
        let scale = 5;
        let side = SIDE * scale;
        let big: Vec<u8> = (0..side * side)
            .map(|p| 255 - digit[(p / side / scale) * SIDE + (p % side) / scale])
            .collect();
        let back = digit_from_luma(side as u32, side as u32, &big).unwrap();
        assert_eq!(back.len(), PIXELS);
        let (cx, cy) = centre(&back);
        assert!(
            (cx - 14.0).abs() <= 1.0 && (cy - 14.0).abs() <= 1.0,
            "digit {i}: centre of mass at ({cx:.1}, {cy:.1})"
        );
        // Close to the original (MNIST digits are already in this form, up to a pixel's shift).
        let dot = |a: &[u8], b: &[u8]| {
            a.iter()
                .zip(b)
                .map(|(&x, &y)| x as f64 * y as f64)
                .sum::<f64>()
        };
        let similarity = dot(&back, digit) / (dot(&back, &back) * dot(digit, digit)).sqrt();
        assert!(
            similarity > 0.9,
            "digit {i}: cosine similarity {similarity:.3} with the original"
        );
    }
}

#[test]
fn light_on_dark_and_off_centre_digits_are_centred() {
    // A bright bar, off in a corner of a dark 60x40 picture.
    let (w, h) = (60usize, 40usize);
    let img: Vec<u8> = (0..w * h)
        .map(|p| {
            if (5..9).contains(&(p % w)) && (3..30).contains(&(p / w)) {
                250
            } else {
                10
            }
        })
        .collect();
    let out = digit_from_luma(w as u32, h as u32, &img).unwrap();
    let (cx, cy) = centre(&out);
    assert!(
        (cx - 14.0).abs() <= 1.0 && (cy - 14.0).abs() <= 1.0,
        "({cx}, {cy})"
    );
    // The bar's 27-pixel height is scaled to 20 rows.
    let rows = (0..SIDE)
        .filter(|&y| out[y * SIDE..(y + 1) * SIDE].iter().any(|&v| v > 64))
        .count();
    assert!((19..=21).contains(&rows), "{rows} inked rows");
}

#[test]
fn blank_and_malformed_pictures_are_refused() {
    let e = digit_from_luma(10, 10, &[200; 100])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no digit found"), "{e}");
    assert!(digit_from_luma(10, 10, &[0; 99]).is_err());
    assert!(digit_from_luma(0, 0, &[]).is_err());
}

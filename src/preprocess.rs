//! Turning a picture of a digit into the 28x28 input the model was trained on.
//!
//! MNIST digits were made this way (LeCun et al.): white ink on black, the digit's bounding box
//! scaled to fit 20x20 keeping its aspect ratio (anti-aliased, hence grey levels), then placed in
//! a 28x28 field so that its centre of mass sits at the centre. Pictures people give us are any
//! size and usually dark ink on a light background, so the polarity is read off the border first.

use crate::error::{Error, Result};
use image::{imageops, GrayImage};

/// Side of an MNIST-style digit image.
pub const SIDE: usize = 28;
/// Its pixels.
pub const PIXELS: usize = SIDE * SIDE;

/// Side of the box the digit is scaled to fit, as in MNIST.
const BOX: u32 = 20;

/// Gray levels of RGBA pixels (Rec. 709 luma), composited over white paper: a digit drawn on
/// a transparent canvas reads as dark ink on light. The program and the browser demo both use
/// it, so the same picture gives the same digit in both.
pub fn luma_over_white(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .map(|p| {
            let l = 0.2126 * p[0] as f32 + 0.7152 * p[1] as f32 + 0.0722 * p[2] as f32;
            let a = p[3] as f32 / 255.0;
            (l * a + 255.0 * (1.0 - a)).round() as u8
        })
        .collect()
}

/// 784 MNIST-style pixels (ink high, background 0) from a grayscale image of `width x height`.
pub fn digit_from_luma(width: u32, height: u32, luma: &[u8]) -> Result<Vec<u8>> {
    let (w, h) = (width as usize, height as usize);
    if w == 0 || h == 0 || luma.len() != w * h {
        return Err(Error::Image(format!(
            "image of {width}x{height} pixels with {} values is malformed",
            luma.len()
        )));
    }
    // The border is background: if it is light, the ink is dark and we invert.
    let border: Vec<u8> = (0..w)
        .flat_map(|x| [luma[x], luma[(h - 1) * w + x]])
        .chain((0..h).flat_map(|y| [luma[y * w], luma[y * w + w - 1]]))
        .collect();
    let light = border.iter().map(|&v| v as u64).sum::<u64>() > 127 * border.len() as u64;
    let ink: Vec<u8> = luma
        .iter()
        .map(|&v| if light { 255 - v } else { v })
        .collect();
    // Subtract the background level (the border's median) and stretch what remains to 0..255.
    let mut levels: Vec<u8> = border
        .iter()
        .map(|&v| if light { 255 - v } else { v })
        .collect();
    levels.sort_unstable();
    let background = levels[levels.len() / 2] as f32;
    let peak = *ink.iter().max().expect("non-empty") as f32;
    if peak - background < 32.0 {
        return Err(Error::Image(
            "no digit found: the image is blank or has too little contrast".into(),
        ));
    }
    let ink: Vec<u8> = ink
        .iter()
        .map(|&v| {
            (((v as f32 - background) / (peak - background)).clamp(0.0, 1.0) * 255.0).round() as u8
        })
        .collect();

    // Bounding box of clearly inked pixels (a faint speck of noise should not stretch it).
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for y in 0..h {
        for x in 0..w {
            if ink[y * w + x] >= 64 {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
        }
    }
    let (bw, bh) = ((x1 - x0 + 1) as u32, (y1 - y0 + 1) as u32);
    let cropped = GrayImage::from_fn(bw, bh, |x, y| {
        image::Luma([ink[(y0 + y as usize) * w + x0 + x as usize]])
    });
    let scale = BOX as f32 / bw.max(bh) as f32;
    let (sw, sh) = (
        ((bw as f32 * scale).round() as u32).max(1),
        ((bh as f32 * scale).round() as u32).max(1),
    );
    let scaled = imageops::resize(&cropped, sw, sh, imageops::FilterType::Triangle);

    // Place it so its centre of mass, in pixel-index coordinates, lands on (14, 14): where it
    // lies in MNIST (the mean over the test set is (14.01, 13.99)).
    let (mut mass, mut mx, mut my) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y, p) in scaled.enumerate_pixels() {
        let v = p.0[0] as f64;
        mass += v;
        mx += v * x as f64;
        my += v * y as f64;
    }
    let (cx, cy) = if mass > 0.0 {
        (mx / mass, my / mass)
    } else {
        (sw as f64 / 2.0, sh as f64 / 2.0)
    };
    let half = (SIDE / 2) as f64;
    let ox = ((half - cx).round() as i64).clamp(0, (SIDE as u32 - sw) as i64) as usize;
    let oy = ((half - cy).round() as i64).clamp(0, (SIDE as u32 - sh) as i64) as usize;
    let mut out = vec![0u8; PIXELS];
    for (x, y, p) in scaled.enumerate_pixels() {
        out[(oy + y as usize) * SIDE + ox + x as usize] = p.0[0];
    }
    Ok(out)
}

/// A picture scaled to `[height, width, channels]` bytes, row-major, channels last (1 grey,
/// 3 RGB, 4 RGBA): what a model of other images than 28x28 grey digits reads. Taken as it is,
/// without the digit preparation (no polarity, cropping or centring: such images were not made
/// that way).
pub fn scaled_picture(picture: &image::DynamicImage, [h, w, c]: [usize; 3]) -> Result<Vec<u8>> {
    let resized = picture.resize_exact(w as u32, h as u32, imageops::FilterType::Triangle);
    Ok(match c {
        1 => resized.to_luma8().into_raw(),
        3 => resized.to_rgb8().into_raw(),
        4 => resized.to_rgba8().into_raw(),
        _ => {
            return Err(Error::Image(format!(
                "the model reads images of {c} channels; a picture gives 1, 3 or 4"
            )))
        }
    })
}

//! The `--plot` PNG: loss and accuracy per epoch, train and test, drawn with plotters into memory
//! (with a bundled font, so no system fonts are needed) and written atomically.

use crate::files::write_atomic;
use anyhow::{anyhow, Result};
use image::ImageEncoder;
use plotters::prelude::*;
use std::path::Path;

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 420;
static FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

/// One epoch's figures, as plotted.
pub struct Point {
    pub epoch: usize,
    pub train_loss: f64,
    pub test_loss: f64,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
}

pub fn write(path: &Path, title: &str, points: &[Point]) -> Result<()> {
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    draw(&mut rgb, title, points)
        .map_err(|e| anyhow!("{}: cannot draw the plot: {e}", path.display()))?;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, WIDTH, HEIGHT, image::ExtendedColorType::Rgb8)
        .map_err(|e| anyhow!("{}: cannot encode the plot: {e}", path.display()))?;
    write_atomic(path, &png)
}

fn draw(rgb: &mut [u8], title: &str, points: &[Point]) -> Result<(), Box<dyn std::error::Error>> {
    // Registering twice is harmless; plotters keeps the last font per family.
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| "bundled font is invalid")?;
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (left, right) = root.split_horizontally(WIDTH / 2);
    let last = points.last().map_or(1, |p| p.epoch).max(2) as f64;
    let first = points.first().map_or(1, |p| p.epoch) as f64;

    let max_loss = points
        .iter()
        .flat_map(|p| [p.train_loss, p.test_loss])
        .fold(0.0, f64::max)
        .max(1e-3)
        * 1.05;
    // Epochs are whole numbers: as many ticks as fit, labelled without decimals, and a right
    // margin wide enough for the last label.
    let ticks = ((last - first) as usize + 1).min(10);
    let whole = |x: &f64| {
        if x.fract() == 0.0 {
            format!("{x:.0}")
        } else {
            String::new()
        }
    };
    let mut chart = ChartBuilder::on(&left)
        .caption("loss", ("sans-serif", 16))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(32)
        .y_label_area_size(52)
        .build_cartesian_2d(first..last, 0.0..max_loss)?;
    chart
        .configure_mesh()
        .x_labels(ticks)
        .x_label_formatter(&whole)
        .x_desc("epoch")
        .y_desc("cross-entropy")
        .draw()?;
    series(&mut chart, points, |p| p.train_loss, |p| p.test_loss)?;

    let min_acc = points
        .iter()
        .flat_map(|p| [p.train_accuracy, p.test_accuracy])
        .fold(1.0, f64::min);
    let low = ((min_acc * 100.0 - 1.0).floor() / 100.0).clamp(0.0, 0.99);
    let mut chart = ChartBuilder::on(&right)
        .caption("accuracy", ("sans-serif", 16))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(32)
        .y_label_area_size(52)
        .build_cartesian_2d(first..last, low..1.0)?;
    chart
        .configure_mesh()
        .x_labels(ticks)
        .x_label_formatter(&whole)
        .x_desc("epoch")
        .y_desc("fraction correct")
        .draw()?;
    series(
        &mut chart,
        points,
        |p| p.train_accuracy,
        |p| p.test_accuracy,
    )?;
    root.present()?;
    Ok(())
}

type Axes =
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>;

fn series<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Axes>,
    points: &[Point],
    train: impl Fn(&Point) -> f64,
    test: impl Fn(&Point) -> f64,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    for (label, color, value) in [
        ("train", BLUE, &train as &dyn Fn(&Point) -> f64),
        ("test", RED, &test),
    ] {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.epoch as f64, value(p))),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

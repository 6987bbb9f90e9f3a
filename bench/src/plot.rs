//! SVG charts of suite results (plotters, SVG backend only, so no fonts or
//! image libraries are needed to build them).

use std::path::Path;

use anyhow::Context as _;
use plotters::coord::Shift;
use plotters::prelude::*;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 540;
const PALETTE: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// One named row of values, one value per group.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

/// Grouped vertical bars: one group per entry of `groups`, one bar per series.
/// `log_y` draws a logarithmic axis (for values spanning orders of magnitude).
pub fn grouped_bars(
    path: &Path,
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[Series],
    log_y: bool,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    draw_grouped_bars(&root, title, y_label, groups, series, log_y)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("drawing {}", path.display()))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw_grouped_bars(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[Series],
    log_y: bool,
) -> DrawResult {
    root.fill(&WHITE)?;
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let positive_min = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let groups_len = groups.len().max(1) as f64;
    let x_range = -0.5..groups_len - 0.5;
    let group_label = |x: &f64| {
        let index = x.round();
        if (x - index).abs() < 1e-6 && index >= 0.0 {
            groups.get(index as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let bar_width = 0.8 / series.len().max(1) as f64;
    let bar_left = |group: usize, index: usize| group as f64 - 0.4 + bar_width * index as f64;

    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80);
    if log_y {
        let low = if positive_min.is_finite() {
            positive_min / 2.0
        } else {
            1.0
        };
        let mut chart = builder.build_cartesian_2d(x_range, (low..max * 2.0).log_scale())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(groups.len() + 1)
            .x_label_formatter(&group_label)
            .y_desc(y_label)
            .y_label_formatter(&|v| short_number(*v))
            .draw()?;
        for (index, s) in series.iter().enumerate() {
            let color = PALETTE[index % PALETTE.len()];
            chart
                .draw_series(
                    s.values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| **v > 0.0)
                        .map(|(group, v)| {
                            let left = bar_left(group, index);
                            Rectangle::new([(left, low), (left + bar_width, *v)], color.filled())
                        }),
                )?
                .label(s.name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    } else {
        let mut chart = builder.build_cartesian_2d(x_range, 0.0..max * 1.15)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(groups.len() + 1)
            .x_label_formatter(&group_label)
            .y_desc(y_label)
            .y_label_formatter(&|v| short_number(*v))
            .draw()?;
        for (index, s) in series.iter().enumerate() {
            let color = PALETTE[index % PALETTE.len()];
            chart
                .draw_series(s.values.iter().enumerate().map(|(group, v)| {
                    let left = bar_left(group, index);
                    Rectangle::new([(left, 0.0), (left + bar_width, *v)], color.filled())
                }))?
                .label(s.name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

/// Side-by-side line charts with one shared y scale, one per `(caption,
/// series)` panel (e.g. one per I/O driver).
pub fn lines_panels(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    x: &[u32],
    panels: &[(String, Vec<Series>)],
) -> anyhow::Result<()> {
    let width = WIDTH.max(560 * panels.len() as u32);
    let root = SVGBackend::new(path, (width, HEIGHT)).into_drawing_area();
    let drawn = root
        .fill(&WHITE)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|()| {
            let below = root
                .titled(title, ("sans-serif", 22))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let y_max = panels
                .iter()
                .flat_map(|(_, series)| series.iter().flat_map(|s| s.values.iter().copied()))
                .fold(0.0f64, f64::max)
                .max(1e-9);
            let areas = below.split_evenly((1, panels.len().max(1)));
            for ((caption, series), area) in panels.iter().zip(&areas) {
                draw_lines(area, caption, x_label, y_label, x, series, y_max)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            Ok(())
        });
    drawn.with_context(|| format!("drawing {}", path.display()))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

fn draw_lines(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    x_label: &str,
    y_label: &str,
    x: &[u32],
    series: &[Series],
    y_max: f64,
) -> DrawResult {
    let x_max = x.iter().copied().max().unwrap_or(1);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(0.5f64..f64::from(x_max) + 0.5, 0.0..y_max * 1.15)?;
    chart
        .configure_mesh()
        .x_labels(x.len() + 1)
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 1e-6 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        })
        .x_desc(x_label)
        .y_desc(y_label)
        .y_label_formatter(&|v| short_number(*v))
        .draw()?;
    for (index, s) in series.iter().enumerate() {
        let color = PALETTE[index % PALETTE.len()];
        let points: Vec<(f64, f64)> = x
            .iter()
            .zip(&s.values)
            .filter(|(_, y)| **y > 0.0)
            .map(|(x, y)| (f64::from(*x), *y))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// 1234567 → "1.2M", for axis labels.
pub fn short_number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1e9 {
        format!("{:.1}G", value / 1e9)
    } else if magnitude >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if magnitude >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else if magnitude >= 10.0 || magnitude == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

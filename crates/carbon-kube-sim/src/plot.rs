//! The report's picture: zone intensities over time, where and when
//! Carbon-Kube ran work, and cumulative emissions per policy. SVG needs no
//! fonts; PNG text uses DejaVu Sans, embedded (Bitstream Vera licence, DejaVu
//! changes public domain; see NOTICE).

use std::path::Path;

use plotters::prelude::*;

use crate::engine::Outcome;
use crate::error::{Result, SimError};
use crate::trace::TraceSet;

static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn palette(i: usize) -> RGBColor {
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

/// Averages a series into at most `max` points.
fn downsample(v: &[f64], max: usize) -> (usize, Vec<f64>) {
    let step = v.len().div_ceil(max.max(1)).max(1);
    (
        step,
        v.chunks(step)
            .map(|c| c.iter().sum::<f64>() / c.len() as f64)
            .collect(),
    )
}

/// Writes the plot to `path` (`.svg` or `.png`). `highlight` names the
/// outcome whose per-zone CPU use is drawn.
pub fn write_plot(
    path: &Path,
    traces: &TraceSet,
    outcomes: &[Outcome],
    highlight: &str,
) -> Result<()> {
    let png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    let err = |e: String| SimError::file(path, format!("drawing the plot: {e}"));
    // Text is laid out with this font in both backends (registering twice
    // is harmless).
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, DEJAVU_SANS);
    if png {
        let root = BitMapBackend::new(path, (1400, 1200)).into_drawing_area();
        draw(root, traces, outcomes, highlight).map_err(err)
    } else {
        let root = SVGBackend::new(path, (1400, 1200)).into_drawing_area();
        draw(root, traces, outcomes, highlight).map_err(err)
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    traces: &TraceSet,
    outcomes: &[Outcome],
    highlight: &str,
) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let panels = root.split_evenly((3, 1));
    let max_points = 1500;
    let hours = traces.hours() as f64;
    let label = if traces.modelled {
        " (MODELLED traces)"
    } else {
        ""
    };
    // 1. Intensities.
    let ymax = traces
        .zones
        .iter()
        .flat_map(|z| z.values.iter().copied())
        .fold(0.0f64, f64::max)
        * 1.05;
    let mut chart = ChartBuilder::on(&panels[0])
        .caption(
            format!("Carbon intensity by zone, g/kWh{label}"),
            ("sans-serif", 22),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..hours, 0f64..ymax.max(1.0))
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("hours from start")
        .draw()
        .map_err(e)?;
    for (i, z) in traces.zones.iter().enumerate() {
        let (step, pts) = downsample(&z.values, max_points);
        chart
            .draw_series(LineSeries::new(
                pts.iter().enumerate().map(|(k, v)| ((k * step) as f64, *v)),
                palette(i),
            ))
            .map_err(e)?
            .label(z.zone.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], palette(i)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    // 2. Where and when the highlighted policy ran work.
    if let Some(o) = outcomes.iter().find(|o| o.policy == highlight) {
        let cmax = o
            .hourly_cpu
            .iter()
            .flat_map(|v| v.iter().copied())
            .fold(0.0f32, f32::max) as f64
            * 1.05;
        let mut chart = ChartBuilder::on(&panels[1])
            .caption(
                format!("vCPUs in use per zone: {highlight}"),
                ("sans-serif", 22),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..hours, 0f64..cmax.max(1.0))
            .map_err(e)?;
        chart.configure_mesh().draw().map_err(e)?;
        for (i, z) in o.hourly_cpu.iter().enumerate() {
            let v: Vec<f64> = z.iter().map(|x| f64::from(*x)).collect();
            let (step, pts) = downsample(&v, max_points);
            chart
                .draw_series(LineSeries::new(
                    pts.iter().enumerate().map(|(k, v)| ((k * step) as f64, *v)),
                    palette(i),
                ))
                .map_err(e)?;
        }
    }
    // 3. Cumulative emissions.
    let cum: Vec<Vec<f64>> = outcomes
        .iter()
        .map(|o| {
            let mut acc = 0.0;
            o.hourly_kg
                .iter()
                .map(|x| {
                    acc += x;
                    acc
                })
                .collect()
        })
        .collect();
    let kmax = cum
        .iter()
        .filter_map(|c| c.last().copied())
        .fold(0.0f64, f64::max)
        * 1.05;
    let mut chart = ChartBuilder::on(&panels[2])
        .caption(
            "Cumulative emissions per policy, kgCO2eq",
            ("sans-serif", 22),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..hours, 0f64..kmax.max(1.0))
        .map_err(e)?;
    chart.configure_mesh().draw().map_err(e)?;
    for (i, (o, c)) in outcomes.iter().zip(&cum).enumerate() {
        let (step, pts) = downsample(c, max_points);
        chart
            .draw_series(LineSeries::new(
                pts.iter().enumerate().map(|(k, v)| ((k * step) as f64, *v)),
                palette(i),
            ))
            .map_err(e)?
            .label(o.policy.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], palette(i)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

//! The `--svg` chart: four panels over time (connections, memory, throughput, p99
//! latency), drawn with plotters' SVG backend.

use std::path::Path;

use plotters::prelude::*;

use crate::timeline::Row;

type Series<'a> = (&'a str, RGBColor, Box<dyn Fn(&Row) -> Option<f64> + 'a>);

const MIB: f64 = 1024.0 * 1024.0;

/// Draws the chart into `path`.
///
/// # Errors
/// The file cannot be written.
pub fn draw(path: &Path, rows: &[Row]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1000, 1300)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((4, 1));
    let t_max = rows.last().map_or(1.0, |r| r.t).max(1.0);
    let specs: [(&str, &str, Vec<Series<'_>>); 4] = [
        (
            "Connections",
            "open",
            vec![
                ("open", BLUE, Box::new(|r: &Row| Some(r.connections as f64))),
                ("logged in", GREEN, Box::new(|r: &Row| Some(r.logged_in as f64))),
            ],
        ),
        (
            "Memory",
            "MiB",
            vec![
                ("server RSS", RED, Box::new(|r: &Row| Some(r.server_rss as f64 / MIB))),
                ("kernel slab", MAGENTA, Box::new(|r: &Row| Some(r.slab as f64 / MIB))),
                ("loadgen RSS", CYAN, Box::new(|r: &Row| Some(r.loadgen_rss as f64 / MIB))),
            ],
        ),
        (
            "Throughput",
            "messages/s",
            vec![
                ("sent/s", BLUE, Box::new(|r: &Row| Some(r.sent_per_s))),
                ("delivered/s", GREEN, Box::new(|r: &Row| Some(r.delivered_per_s))),
            ],
        ),
        (
            "Chat latency p99 from the intended send time, generator lag p99 (per second) and CPU",
            "ms / % of a core / 10",
            vec![
                ("p99 ms", RED, Box::new(|r: &Row| r.p99_us.map(|v| v as f64 / 1000.0))),
                ("lag p99 ms", GREEN, Box::new(|r: &Row| r.lag_p99_us.map(|v| v as f64 / 1000.0))),
                ("loadgen cpu %/10", CYAN, Box::new(|r: &Row| Some(r.loadgen_cpu_pct / 10.0))),
                ("server cpu %/10", MAGENTA, Box::new(|r: &Row| Some(r.server_cpu_pct / 10.0))),
                ("machine cpu %/10", BLACK, Box::new(|r: &Row| Some(r.machine_cpu_pct / 10.0))),
            ],
        ),
    ];
    for (panel, (title, unit, series)) in panels.iter().zip(specs) {
        let y_max =
            rows.iter().flat_map(|r| series.iter().filter_map(move |(_, _, f)| f(r))).fold(0.0f64, f64::max).max(1.0)
                * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)?;
        chart.configure_mesh().x_desc("seconds").y_desc(unit).draw()?;
        for (name, color, f) in &series {
            let points: Vec<(f64, f64)> = rows.iter().filter_map(|r| f(r).map(|v| (r.t, v))).collect();
            let color = *color;
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_an_svg() {
        let rows: Vec<Row> = (0..5)
            .map(|i| Row {
                t: i as f64,
                phase: "chat",
                connections: 100 * i,
                logged_in: 100 * i,
                sent_per_s: 10.0,
                delivered_per_s: 10.0,
                p99_us: (i > 1).then_some(1500),
                lag_p99_us: (i > 2).then_some(300),
                server_rss: 1 << 20,
                slab: 2 << 20,
                sunreclaim: 1 << 20,
                loadgen_rss: 1 << 20,
                loadgen_cpu_pct: 30.0,
                server_cpu_pct: 20.0,
                machine_cpu_pct: 60.0,
            })
            .collect();
        let path = std::env::temp_dir().join(format!("loadgen-chart-{}.svg", std::process::id()));
        draw(&path, &rows).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert!(text.starts_with("<svg"));
        assert!(text.contains("Throughput"));
    }
}

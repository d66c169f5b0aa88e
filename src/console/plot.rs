//! The console's plots, drawn on the server as SVG with plotters (its SVG
//! backend: text is left to the browser, no font files). Each data point is
//! a `<circle>` and nothing else is, so a page's points can be counted.

use plotters::prelude::*;

use keyward_core::{AuditSummary, KeyUsage};

/// Colours of versions and outcomes, in turn.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 95, 191),
    RGBColor(214, 110, 0),
    RGBColor(18, 122, 60),
    RGBColor(140, 60, 170),
    RGBColor(180, 35, 24),
    RGBColor(0, 140, 150),
    RGBColor(120, 100, 40),
    RGBColor(90, 90, 90),
];

/// What a usage plot shows.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Encryptions,
    DataKeys,
    Decryptions,
}

impl Kind {
    pub(super) const ALL: [Kind; 3] = [Kind::Encryptions, Kind::DataKeys, Kind::Decryptions];

    pub(super) fn title(self) -> &'static str {
        match self {
            Self::Encryptions => "Encryptions",
            Self::DataKeys => "Data keys",
            Self::Decryptions => "Decryptions",
        }
    }

    pub(super) fn id(self) -> &'static str {
        match self {
            Self::Encryptions => "encryptions",
            Self::DataKeys => "data-keys",
            Self::Decryptions => "decryptions",
        }
    }

    fn slot(self) -> usize {
        match self {
            Self::Encryptions => 0,
            Self::DataKeys => 1,
            Self::Decryptions => 2,
        }
    }
}

fn label(ms: i64, daily: bool) -> String {
    let s = super::forms::rfc3339(ms);
    if daily {
        s[5..10].to_string()
    } else {
        format!("{} {}", &s[5..10], &s[11..16])
    }
}

/// A recorded name as plot text: letters, digits and `_` only (the SVG
/// goes into the page as it is).
fn safe(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(40).collect()
}

/// One usage plot: `kind` per bucket, a line and points per version used,
/// and a dashed vertical line at each rotation (a version created) in range.
pub(super) fn usage(u: &KeyUsage, kind: Kind, daily: bool) -> String {
    let mut svg = String::new();
    if let Err(e) = draw_usage(&mut svg, u, kind, daily) {
        tracing::warn!(error = %e, "a usage plot could not be drawn");
        return String::new();
    }
    svg
}

fn draw_usage<'a>(
    svg: &'a mut String,
    u: &KeyUsage,
    kind: Kind,
    daily: bool,
) -> Result<(), Box<dyn std::error::Error + 'a>> {
    let width = u.buckets.get(1).zip(u.buckets.first()).map(|(b, a)| b - a).unwrap_or(3_600_000);
    let x0 = *u.buckets.first().unwrap_or(&0);
    let x1 = u.buckets.last().map(|l| l + width).unwrap_or(x0 + width);
    let slot = kind.slot();
    let ymax = u.series.iter().flat_map(|(_, s)| s.iter().map(|b| b[slot])).max().unwrap_or(0).max(1);
    let root = SVGBackend::with_string(svg, (560, 260)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(kind.title(), ("sans-serif", 15))
        .margin(10)
        .x_label_area_size(26)
        .y_label_area_size(52)
        .build_cartesian_2d(x0..x1, 0u64..ymax + ymax / 10 + 1)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .y_labels(5)
        .x_label_formatter(&|x| label(*x, daily))
        .light_line_style(RGBColor(238, 241, 245))
        .draw()?;
    // Version 1 is the key's creation, not a rotation.
    for v in u.key.meta.versions.iter().filter(|v| v.version > 1 && v.created_ms > x0 && v.created_ms < x1) {
        let style = ShapeStyle { color: RGBColor(180, 35, 24).mix(0.8), filled: false, stroke_width: 1 };
        chart.draw_series(DashedLineSeries::new(
            [(v.created_ms, 0), (v.created_ms, ymax + ymax / 10 + 1)],
            4,
            3,
            style,
        ))?;
    }
    for (i, (version, series)) in u.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points: Vec<(i64, u64)> =
            u.buckets.iter().zip(series).map(|(at, b)| (at + width / 2, b[slot])).collect();
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?
            .label(format!("v{version}"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 12, y + 4)], color.filled()));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 2, color.filled())))?;
    }
    if !u.series.is_empty() {
        chart
            .configure_series_labels()
            .border_style(RGBColor(213, 218, 225))
            .background_style(WHITE.mix(0.9))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// The outcome breakdown: one bar per outcome code.
pub(super) fn outcomes(s: &AuditSummary) -> String {
    let mut svg = String::new();
    if let Err(e) = draw_outcomes(&mut svg, s) {
        tracing::warn!(error = %e, "an outcome plot could not be drawn");
        return String::new();
    }
    svg
}

fn draw_outcomes<'a>(svg: &'a mut String, s: &AuditSummary) -> Result<(), Box<dyn std::error::Error + 'a>> {
    let names: Vec<&String> = s.outcomes.keys().collect();
    // A segmented range 0..n has a segment for each of 0..=n.
    let n = (names.len() as i32 - 1).max(0);
    let ymax = s.outcomes.values().copied().max().unwrap_or(0).max(1);
    let root = SVGBackend::with_string(svg, (560, 240)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Records by outcome", ("sans-serif", 15))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d((0..n).into_segmented(), 0u64..ymax + ymax / 10 + 1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(names.len().max(1))
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => names.get(*i as usize).map(|s| safe(s)).unwrap_or_default(),
            _ => String::new(),
        })
        .light_line_style(RGBColor(238, 241, 245))
        .draw()?;
    for (i, (name, count)) in s.outcomes.iter().enumerate() {
        let color = if name == "OK" { PALETTE[2] } else { PALETTE[(i + 3) % PALETTE.len()] };
        let i = i as i32;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(SegmentValue::Exact(i), 0), (SegmentValue::Exact(i + 1), *count)],
            color.mix(0.85).filled(),
        )))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_of(buckets: usize, versions: &[u32]) -> KeyUsage {
        let meta = keyward_core::KeyMeta {
            id: keyward_core::KeyId::generate(),
            description: String::new(),
            labels: Default::default(),
            state: keyward_core::KeyState::Enabled,
            created_ms: 0,
            primary_version: 1,
            versions: vec![
                keyward_core::VersionMeta::new(1, 0),
                keyward_core::VersionMeta::new(2, 5 * 3_600_000),
            ],
            deletion_ms: None,
            rotation: Default::default(),
        };
        KeyUsage {
            key: keyward_core::KeyView { meta, aliases: vec![] },
            buckets: (0..buckets as i64).map(|i| i * 3_600_000).collect(),
            series: versions.iter().map(|v| (*v, vec![[3, 1, 2]; buckets])).collect(),
        }
    }

    #[test]
    fn a_usage_plot_has_one_circle_per_point_and_marks_rotations() {
        let svg = usage(&usage_of(24, &[1, 2]), Kind::Encryptions, false);
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert_eq!(svg.matches("<circle").count(), 48, "24 points for each of 2 versions");
        let text = svg.replace('\n', "");
        assert!(text.contains(">v1<") && text.contains(">v2<"), "a legend names the versions");
        assert!(svg.contains("<polyline"), "lines join the points");
        let mut unrotated = usage_of(24, &[1, 2]);
        unrotated.key.meta.versions[1].created_ms = 99 * 3_600_000;
        let lines = |svg: &str| svg.matches("<polyline").count() + svg.matches("<line").count();
        assert!(
            lines(&svg) > lines(&usage(&unrotated, Kind::Encryptions, false)),
            "the rotation at hour 5 is drawn"
        );
        let empty = usage(&usage_of(24, &[]), Kind::Decryptions, true);
        assert_eq!(empty.matches("<circle").count(), 0);
    }

    #[test]
    fn an_outcome_plot_has_a_bar_per_outcome_and_escapes_nothing_it_should_not() {
        let mut s = AuditSummary::default();
        s.outcomes.insert("OK".into(), 10);
        s.outcomes.insert("PERMISSION_DENIED".into(), 3);
        let svg = outcomes(&s);
        let text = svg.replace('\n', "");
        assert!(text.contains(">PERMISSION_DENIED<") && text.contains(">OK<"), "{svg}");
        assert!(!svg.contains("<script"));
        let mut one = AuditSummary::default();
        one.outcomes.insert("OK".into(), 1);
        assert!(outcomes(&one).replace('\n', "").contains(">OK<"), "one outcome draws");
        assert!(outcomes(&AuditSummary::default()).starts_with("<svg"), "none draws an empty plot");
        s.outcomes.insert("<script>x</script>".into(), 1);
        assert!(!outcomes(&s).contains("<script"), "recorded names are reduced to safe characters");
    }
}

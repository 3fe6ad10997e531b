//! A stance's history laid out as a timeline: one bar per stance held, along a time
//! axis, in user units. The pages draw it as inline SVG (no script, no image files)
//! and digests as a PNG (`chart`), so a mail shows the picture the page shows.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::words::parse_time;
use crate::detect::Stance;
use crate::projections::TimelinePoint;

pub const TIMELINE_WIDTH: f64 = 640.0;

/// A stance's history as bars along a time axis, in SVG user units.
#[derive(Debug, Serialize)]
pub struct Timeline {
    pub label: String,
    pub width: f64,
    pub height: f64,
    pub segments: Vec<Segment>,
    /// x of each change after the first.
    pub marks: Vec<f64>,
    pub start: String,
    pub end: String,
}

#[derive(Debug, Serialize)]
pub struct Segment {
    pub stance: Stance,
    pub x: f64,
    pub width: f64,
    pub title: String,
}

/// Draws the changes of one pair (oldest first) on an axis from `axis_start` (or its
/// first change) up to `now`; pairs of one topic share an axis, so they line up.
pub fn timeline(
    label: String,
    points: &[&TimelinePoint],
    axis_start: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<Timeline> {
    let times: Vec<DateTime<Utc>> = points
        .iter()
        .map(|p| parse_time(&p.at).unwrap_or(now))
        .collect();
    let first = *times.first()?;
    let start = axis_start.map_or(first, |s| s.min(first));
    let end = now.max(*times.last()?);
    let span = (end - start).num_milliseconds().max(1) as f64;
    let x_of = |t: DateTime<Utc>| {
        ((t - start).num_milliseconds() as f64 / span * TIMELINE_WIDTH).clamp(0.0, TIMELINE_WIDTH)
    };
    let mut segments = Vec::with_capacity(points.len());
    let mut marks = Vec::new();
    for (i, point) in points.iter().enumerate() {
        let from = times[i];
        let to = times.get(i + 1).copied().unwrap_or(end);
        let x = x_of(from);
        if i > 0 {
            marks.push(round(x));
        }
        // A stance that has held only briefly still gets a visible sliver.
        let width = (x_of(to) - x).max(2.0);
        segments.push(Segment {
            stance: point.to,
            x: round(x.min(TIMELINE_WIDTH - width)),
            width: round(width),
            title: format!(
                "{} from {}{}",
                phrase(point.to),
                parse_time(&point.at).map_or_else(
                    || point.at.clone(),
                    |t| t.format("%Y-%m-%d %H:%M UTC").to_string()
                ),
                times
                    .get(i + 1)
                    .map(|t| format!(" to {}", t.format("%Y-%m-%d %H:%M UTC")))
                    .unwrap_or_default()
            ),
        });
    }
    Some(Timeline {
        label,
        width: TIMELINE_WIDTH,
        height: 40.0,
        segments,
        marks,
        start: start.format("%Y-%m-%d").to_string(),
        end: end.format("%Y-%m-%d").to_string(),
    })
}

fn phrase(stance: Stance) -> &'static str {
    match stance {
        Stance::Support => "supports",
        Stance::Oppose => "opposes",
        Stance::Neutral => "neutral",
    }
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(to: Stance, at: &str) -> TimelinePoint {
        TimelinePoint {
            topic: "t".into(),
            issue: "i".into(),
            actor: "a".into(),
            to,
            at: at.into(),
        }
    }

    #[test]
    fn a_timeline_spans_from_the_first_change_to_now() {
        let points = [
            point(Stance::Oppose, "2026-11-01T00:00:00Z"),
            point(Stance::Support, "2026-11-11T00:00:00Z"),
        ];
        let refs: Vec<&TimelinePoint> = points.iter().collect();
        let now = parse_time("2026-11-21T00:00:00Z").unwrap();
        let t = timeline("x".into(), &refs, None, now).unwrap();
        assert_eq!(t.segments.len(), 2);
        assert_eq!(t.segments[0].x, 0.0);
        assert_eq!(t.segments[0].width, TIMELINE_WIDTH / 2.0);
        assert_eq!(t.segments[1].x, TIMELINE_WIDTH / 2.0);
        assert_eq!(t.segments[1].stance, Stance::Support);
        assert_eq!(t.marks, vec![TIMELINE_WIDTH / 2.0]);
        assert!(timeline("x".into(), &[], None, now).is_none());
        // On a topic's shared axis a later pair starts where its first change falls.
        let axis = parse_time("2026-11-01T00:00:00Z");
        let shared = timeline("y".into(), &refs[1..], axis, now).unwrap();
        assert_eq!(shared.segments[0].x, TIMELINE_WIDTH / 2.0);
    }
}

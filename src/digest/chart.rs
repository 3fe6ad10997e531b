//! The stance timeline as a small PNG for mail: mail clients show an inline image
//! (by Content-ID) where they would drop the pages' inline SVG. It is drawn from the
//! same `Timeline` layout as the pages' picture, in their colours, one pixel per
//! user unit; the words it stands for go in its alt text and in the plain part.

use crate::detect::Stance;

use super::timeline::Timeline;

/// Pixel rows: the bars fill the track, and a change is marked by a white line
/// standing a little above and below it, as on the pages.
const HEIGHT: u32 = 24;
const TRACK: std::ops::Range<u32> = 4..20;
const MARK: std::ops::Range<u32> = 2..22;

/// The palette, by index: background, track, then the stances as the pages colour
/// them (style.css `--support`, `--oppose`, `--neutral`), and the marks.
const PALETTE: [[u8; 3]; 6] = [
    [0xff, 0xff, 0xff],
    [0xee, 0xee, 0xee],
    [0x2e, 0x7d, 0x32],
    [0xc6, 0x28, 0x28],
    [0x7b, 0x7b, 0x7b],
    [0xff, 0xff, 0xfe],
];
const BACKGROUND: u8 = 0;
const TRACK_FILL: u8 = 1;
const MARK_LINE: u8 = 5;

fn colour(stance: Stance) -> u8 {
    match stance {
        Stance::Support => 2,
        Stance::Oppose => 3,
        Stance::Neutral => 4,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("drawing the timeline: {0}")]
pub struct ChartError(#[from] png::EncodingError);

/// The timeline as PNG bytes (an indexed image of a few hundred bytes).
pub fn png(timeline: &Timeline) -> Result<Vec<u8>, ChartError> {
    let width = timeline.width.round().max(1.0) as u32;
    let mut pixels = vec![BACKGROUND; (width * HEIGHT) as usize];
    let mut fill = |x0: f64, x1: f64, rows: std::ops::Range<u32>, index: u8| {
        let from = (x0.floor().max(0.0) as u32).min(width);
        let to = (x1.ceil().max(0.0) as u32).min(width);
        for y in rows {
            let row = (y * width) as usize;
            pixels[row + from as usize..row + to as usize].fill(index);
        }
    };
    fill(0.0, f64::from(width), TRACK, TRACK_FILL);
    for segment in &timeline.segments {
        fill(
            segment.x,
            segment.x + segment.width,
            TRACK,
            colour(segment.stance),
        );
    }
    for &x in &timeline.marks {
        fill(x, x + 1.0, MARK, MARK_LINE);
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, HEIGHT);
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_palette(PALETTE.concat());
        encoder.set_compression(png::Compression::Best);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&pixels)?;
        writer.finish()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::timeline::{timeline, TIMELINE_WIDTH};
    use crate::digest::words::parse_time;
    use crate::projections::TimelinePoint;

    #[test]
    fn the_png_shows_each_stance_where_the_timeline_puts_it() {
        let points = [
            TimelinePoint {
                topic: "t".into(),
                issue: "i".into(),
                actor: "a".into(),
                to: Stance::Support,
                at: "2026-11-01T00:00:00Z".into(),
            },
            TimelinePoint {
                topic: "t".into(),
                issue: "i".into(),
                actor: "a".into(),
                to: Stance::Oppose,
                at: "2026-11-11T00:00:00Z".into(),
            },
        ];
        let refs: Vec<&TimelinePoint> = points.iter().collect();
        let now = parse_time("2026-11-21T00:00:00Z").unwrap();
        let layout = timeline("x".into(), &refs, None, now).unwrap();
        let bytes = png(&layout).unwrap();
        assert!(bytes.len() < 2_000, "{} bytes", bytes.len());
        // Decoded, the left half of the track is the support colour and the right
        // half the oppose colour, with the change marked between them.
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (TIMELINE_WIDTH as u32, HEIGHT));
        let at = |x: u32, y: u32| buf[(y * info.width + x) as usize];
        assert_eq!(at(10, 12), 2);
        assert_eq!(at(600, 12), 3);
        assert_eq!(at(320, 12), MARK_LINE);
        assert_eq!(at(10, 0), BACKGROUND);
    }
}

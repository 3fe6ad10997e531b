//! Times and spans as readers say them: "2 Dec 2026, 01:19 UTC" (or in the
//! subscriber's time zone), "12 Nov", "3 weeks", "2 days ago". Digests use them, and
//! so do the pages, so that a date reads the same in a mail and on the web.

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use chrono_tz::Tz;

/// A stored RFC 3339 time, if it is one.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// "2 Dec 2026, 01:19 UTC", or "1 Dec 2026, 19:19 CST" in a time zone.
pub fn full_time(t: DateTime<Utc>, tz: Option<Tz>) -> String {
    match tz {
        Some(tz) => tz
            .from_utc_datetime(&t.naive_utc())
            .format("%-d %b %Y, %H:%M %Z")
            .to_string(),
        None => t.format("%-d %b %Y, %H:%M UTC").to_string(),
    }
}

/// A stored time as `full_time` writes it; a value that is not a time is kept as it is.
pub fn full_time_of(s: &str, tz: Option<Tz>) -> String {
    parse_time(s).map_or_else(|| s.to_string(), |t| full_time(t, tz))
}

/// "12 Nov", with the year when it is not `now`'s ("12 Nov 2025").
pub fn short_date(t: DateTime<Utc>, now: DateTime<Utc>, tz: Option<Tz>) -> String {
    let (local, this_year) = match tz {
        Some(tz) => {
            let local = tz.from_utc_datetime(&t.naive_utc());
            (
                local.format("%-d %b").to_string(),
                (local.year(), tz.from_utc_datetime(&now.naive_utc()).year()),
            )
        }
        None => (t.format("%-d %b").to_string(), (t.year(), now.year())),
    };
    if this_year.0 == this_year.1 {
        local
    } else {
        format!("{local} {}", this_year.0)
    }
}

/// How long a span lasted, in the largest unit that fits: "40 minutes", "5 hours",
/// "3 days", "3 weeks", "4 months", "2 years".
pub fn span(d: Duration) -> String {
    let minutes = d.num_minutes().max(0);
    let (n, unit) = match minutes {
        m if m < 60 => (m.max(1), "minute"),
        m if m < 48 * 60 => (m / 60, "hour"),
        m if m < 14 * 24 * 60 => (m / (24 * 60), "day"),
        m if m < 61 * 24 * 60 => (m / (7 * 24 * 60), "week"),
        m if m < 730 * 24 * 60 => (m / (30 * 24 * 60), "month"),
        m => (m / (365 * 24 * 60), "year"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// "just now", "5 hours ago", "2 days ago"; a time ahead of `now` (a clock skewed
/// feed) reads "just now" rather than a negative age.
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let d = now - t;
    if d < Duration::minutes(1) {
        "just now".to_string()
    } else {
        format!("{} ago", span(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    #[test]
    fn times_read_as_people_write_them() {
        let t = at("2026-12-02T01:19:14.637Z");
        assert_eq!(full_time(t, None), "2 Dec 2026, 01:19 UTC");
        let mexico: Tz = "America/Mexico_City".parse().unwrap();
        assert_eq!(full_time(t, Some(mexico)), "1 Dec 2026, 19:19 CST");
        assert_eq!(full_time_of("not a time", None), "not a time");
        let now = at("2026-12-05T00:00:00Z");
        assert_eq!(short_date(at("2026-11-12T10:00:00Z"), now, None), "12 Nov");
        assert_eq!(
            short_date(at("2025-11-12T10:00:00Z"), now, None),
            "12 Nov 2025"
        );
        // Just after midnight UTC on 1 Jan is still the old year in Mexico City: a
        // day later it is last year's date there, and it says so.
        let new_year = at("2027-01-01T03:00:00Z");
        assert_eq!(short_date(new_year, new_year, Some(mexico)), "31 Dec");
        assert_eq!(
            short_date(new_year, at("2027-01-02T12:00:00Z"), Some(mexico)),
            "31 Dec 2026"
        );
        assert_eq!(
            short_date(new_year, at("2027-01-02T12:00:00Z"), None),
            "1 Jan"
        );
    }

    #[test]
    fn spans_take_the_largest_unit_that_fits() {
        assert_eq!(span(Duration::seconds(10)), "1 minute");
        assert_eq!(span(Duration::minutes(40)), "40 minutes");
        assert_eq!(span(Duration::hours(5)), "5 hours");
        assert_eq!(span(Duration::days(3)), "3 days");
        assert_eq!(span(Duration::days(21)), "3 weeks");
        assert_eq!(span(Duration::days(125)), "4 months");
        assert_eq!(span(Duration::days(800)), "2 years");
        let now = at("2026-12-05T00:00:00Z");
        assert_eq!(ago(at("2026-12-03T00:00:00Z"), now), "2 days ago");
        assert_eq!(ago(at("2026-12-06T00:00:00Z"), now), "just now");
    }
}

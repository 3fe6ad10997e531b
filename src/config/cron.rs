//! Cron schedules as operators write them: standard 5-field cron (minute hour
//! day-of-month month day-of-week, Sunday = 0 or 7), the same with a leading seconds
//! field, or a shorthand such as `@hourly`. Parsing and the search for the next time are
//! the `cron` crate's; this module only translates standard cron into its dialect
//! (which has a mandatory seconds field and counts weekdays from Sunday = 1).

use std::str::FromStr;

use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub struct CronSchedule {
    source: String,
    schedule: cron::Schedule,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl CronSchedule {
    /// Parses a 5- or 6-field expression or a shorthand; the error says what was expected.
    pub fn parse(expression: &str) -> Result<CronSchedule, String> {
        let trimmed = expression.trim();
        let translated = if trimmed.starts_with('@') {
            trimmed.to_string()
        } else {
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            match fields.len() {
                5 => format!("0 {} {} {} {} {}", fields[0], fields[1], fields[2], fields[3], weekdays(fields[4])?),
                6 => format!(
                    "{} {} {} {} {} {}",
                    fields[0],
                    fields[1],
                    fields[2],
                    fields[3],
                    fields[4],
                    weekdays(fields[5])?
                ),
                n => {
                    return Err(format!(
                        "a cron schedule has 5 fields (minute hour day month weekday), or 6 with seconds first; \
                         {expression:?} has {n}"
                    ))
                }
            }
        };
        let schedule = cron::Schedule::from_str(&translated).map_err(|e| {
            // The crate's message quotes our translated expression; keep only its reason.
            let text = e.to_string();
            let reason = text.lines().last().unwrap_or(&text).trim().to_string();
            format!("{expression:?} is not a valid cron schedule: {reason}")
        })?;
        // An expression that can never fire (say, 30 February) is a mistake, not a schedule.
        if schedule.upcoming(Utc).next().is_none() {
            return Err(format!("{expression:?} never fires"));
        }
        Ok(CronSchedule {
            source: trimmed.to_string(),
            schedule,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first time strictly after `after` at which the schedule fires.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&after).next()
    }
}

/// Rewrites a standard weekday field (0-7, Sunday = 0 or 7) with names, which the
/// `cron` crate reads the same way as everyone else.
fn weekdays(field: &str) -> Result<String, String> {
    const NAMES: [&str; 8] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let mut out = String::with_capacity(field.len() + 8);
    let mut number = String::new();
    let mut after_slash = false;
    let flush = |number: &mut String, out: &mut String, after_slash: bool| -> Result<(), String> {
        if number.is_empty() {
            return Ok(());
        }
        if after_slash {
            out.push_str(number);
        } else {
            let n: usize = number
                .parse()
                .map_err(|_| format!("{number:?} is not a weekday"))?;
            let name = NAMES
                .get(n)
                .ok_or_else(|| format!("weekday {n} is out of range (0-7, Sunday = 0 or 7)"))?;
            out.push_str(name);
        }
        number.clear();
        Ok(())
    };
    for c in field.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        flush(&mut number, &mut out, after_slash)?;
        after_slash = c == '/';
        out.push(c);
    }
    flush(&mut number, &mut out, after_slash)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_fields_fire_on_the_minute() {
        let s = CronSchedule::parse("*/15 * * * *").unwrap();
        let next = s.next_after(at("2026-11-27T10:07:30Z")).unwrap();
        assert_eq!((next.minute(), next.second()), (15, 0));
    }

    #[test]
    fn six_fields_take_seconds_first() {
        let s = CronSchedule::parse("*/2 * * * * *").unwrap();
        let next = s.next_after(at("2026-11-27T10:07:31Z")).unwrap();
        assert_eq!(next.second(), 32);
    }

    #[test]
    fn weekdays_count_from_sunday_zero_as_in_standard_cron() {
        let monday = CronSchedule::parse("0 9 * * 1").unwrap();
        let next = monday
            .next_after(Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).unwrap())
            .unwrap();
        assert_eq!(next.weekday(), Weekday::Mon);
        let sunday = CronSchedule::parse("0 9 * * 0").unwrap();
        let seven = CronSchedule::parse("0 9 * * 7").unwrap();
        let from = Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).unwrap();
        assert_eq!(sunday.next_after(from), seven.next_after(from));
        assert_eq!(sunday.next_after(from).unwrap().weekday(), Weekday::Sun);
        let workdays = CronSchedule::parse("0 9 * * 1-5").unwrap();
        let sat = Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap();
        assert_eq!(workdays.next_after(sat).unwrap().weekday(), Weekday::Mon);
    }

    #[test]
    fn refuses_what_is_not_cron() {
        assert!(CronSchedule::parse("every tuesday").is_err());
        assert!(CronSchedule::parse("* * *").is_err());
        assert!(CronSchedule::parse("61 * * * *").is_err());
        assert!(CronSchedule::parse("0 0 * * 9").is_err());
        assert!(CronSchedule::parse("0 0 30 2 *").is_err());
    }

    #[test]
    fn shorthands_pass_through() {
        assert!(CronSchedule::parse("@hourly").is_ok());
    }
}

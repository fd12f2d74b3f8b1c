//! `--as-of WHEN`: an RFC 3339 time, a civil date-time or date in the local time zone (a date
//! means the end of that day), or a friendly span such as "3 weeks ago".

use crate::error::{Error, Result};

/// The instant WHEN stands for, resolved against `now`.
pub fn parse(text: &str, now: &jiff::ZonedDateTime) -> Result<jiff::Timestamp> {
    let t = text.trim();
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(ts);
    }
    let tz = now.time_zone().clone();
    let local = |dt: jiff::civil::DateTime| {
        dt.to_zoned_datetime(tz.clone())
            .map(|z| z.timestamp())
            .map_err(|e| Error::Usage(format!("--as-of {t:?}: {e}")))
    };
    // A bare date (a date-time parser would read it as midnight) includes all of that day.
    if !t.contains(['T', ' ', ':'])
        && let Ok(date) = t.parse::<jiff::civil::Date>()
    {
        return local(date.at(23, 59, 59, 999_999_999));
    }
    // A set's own time, as its name writes it (2026-11-27_164404): local, no colons.
    let named = t.split_once('_').and_then(|(date, time)| {
        let time = (time.len() == 6 && time.bytes().all(|b| b.is_ascii_digit()))
            .then(|| format!("{}:{}:{}", &time[..2], &time[2..4], &time[4..]))?;
        format!("{date}T{time}")
            .parse::<jiff::civil::DateTime>()
            .ok()
    });
    if let Some(dt) = named.or_else(|| t.parse::<jiff::civil::DateTime>().ok()) {
        // A time given to the second includes all of that second: a set made at
        // 16:44:04.6 is "as of 16:44:04", as its name says.
        let dt = if dt.subsec_nanosecond() == 0 {
            dt.with()
                .subsec_nanosecond(999_999_999)
                .build()
                .unwrap_or(dt)
        } else {
            dt
        };
        return local(dt);
    }
    if let Ok(span) = t.parse::<jiff::Span>() {
        let span = if t.ends_with("ago") || span.is_negative() {
            span.abs().negate()
        } else {
            span
        };
        return now
            .checked_add(span)
            .map(|z| z.timestamp())
            .map_err(|e| Error::Usage(format!("--as-of {t:?}: {e}")));
    }
    Err(Error::Usage(format!(
        "--as-of {t:?}: use an RFC 3339 time (2026-05-01T12:00:00+02:00), a local date or time \
         (2026-05-01, 2026-05-01T12:00), or a span (\"3 weeks ago\")"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::ZonedDateTime {
        "2026-11-24T10:00:00+01:00[Europe/Paris]".parse().unwrap()
    }

    #[test]
    fn forms() {
        assert_eq!(
            parse("2026-05-01T12:00:00Z", &now()).unwrap().to_string(),
            "2026-05-01T12:00:00Z"
        );
        // A date is the end of that local day (Paris is UTC+2 in May).
        assert_eq!(
            parse("2026-05-01", &now()).unwrap().to_string(),
            "2026-05-01T21:59:59.999999999Z"
        );
        assert_eq!(
            parse("2026-05-01T12:00", &now()).unwrap().to_string(),
            "2026-05-01T10:00:00.999999999Z"
        );
        // A set's name gives its time to the second: that whole second.
        assert_eq!(
            parse("2026-05-01_120003", &now()).unwrap().to_string(),
            "2026-05-01T10:00:03.999999999Z"
        );
        assert_eq!(
            parse("3 weeks ago", &now()).unwrap().to_string(),
            "2026-11-03T09:00:00Z"
        );
        assert_eq!(
            parse("2 days ago", &now()).unwrap().to_string(),
            "2026-11-22T09:00:00Z"
        );
        assert!(parse("last tuesday-ish", &now()).is_err());
    }
}

//! The time formats mail needs, in one place: RFC 5322 dates (Date:,
//! Received:), syslog stamps (log lines), asctime (mbox "From " lines),
//! compact stamps (Message-IDs).
//!
//! Local time comes from localtime_r(3), so it follows TZ and
//! /etc/localtime like every other mail program on the host.

#![deny(unsafe_code)]

use std::time::{SystemTime, UNIX_EPOCH};

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A broken-down time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tm {
    /// Full year, e.g. 2026.
    pub year: i64,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
    /// 0..=23.
    pub hour: u32,
    /// 0..=59.
    pub minute: u32,
    /// 0..=60.
    pub second: u32,
    /// 0 = Sunday.
    pub weekday: u32,
    /// Offset from UTC in seconds (east positive).
    pub offset: i64,
    /// Zone abbreviation ("UTC", "CET"), possibly empty.
    pub zone: String,
}

fn secs_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Breaks a time down in UTC (pure arithmetic: Howard Hinnant's civil_from_days).
pub fn utc(t: SystemTime) -> Tm {
    let secs = secs_of(t);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    Tm {
        year: yoe + era * 400 + i64::from(month <= 2),
        month: month as u32,
        day: day as u32,
        hour: (rem / 3600) as u32,
        minute: (rem % 3600 / 60) as u32,
        second: (rem % 60) as u32,
        weekday: (days + 4).rem_euclid(7) as u32,
        offset: 0,
        zone: "UTC".into(),
    }
}

/// Breaks a time down in the local time zone (UTC if that fails).
#[allow(unsafe_code)]
pub fn local(t: SystemTime) -> Tm {
    let secs: libc::time_t = secs_of(t);
    // SAFETY: libc::tm is plain data (integers and a nullable pointer), so
    // all-zero is valid; localtime_r writes only into `tm`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::localtime_r(&secs, &mut tm) };
    if r.is_null() {
        return utc(t);
    }
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: localtime_r points tm_zone at a static NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    Tm {
        year: i64::from(tm.tm_year) + 1900,
        month: (tm.tm_mon.clamp(0, 11) + 1) as u32,
        day: tm.tm_mday.clamp(1, 31) as u32,
        hour: tm.tm_hour.clamp(0, 23) as u32,
        minute: tm.tm_min.clamp(0, 59) as u32,
        second: tm.tm_sec.clamp(0, 60) as u32,
        weekday: tm.tm_wday.clamp(0, 6) as u32,
        offset: tm.tm_gmtoff,
        zone,
    }
}

impl Tm {
    fn month_name(&self) -> &'static str {
        MONTHS[(self.month.clamp(1, 12) - 1) as usize]
    }
    fn day_name(&self) -> &'static str {
        DAYS[(self.weekday % 7) as usize]
    }
}

/// RFC 5322 date in local time: "Sun, 22 Nov 2026 03:05:00 +0100 (CET)".
pub fn rfc5322(t: SystemTime) -> String {
    format_rfc5322(&local(t))
}

/// RFC 5322 form of a broken-down time.
pub fn format_rfc5322(tm: &Tm) -> String {
    let off = tm.offset / 60;
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.abs();
    let zone = if tm.zone.is_empty() {
        String::new()
    } else {
        format!(" ({})", tm.zone)
    };
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} {}{:02}{:02}{}",
        tm.day_name(),
        tm.day,
        tm.month_name(),
        tm.year,
        tm.hour,
        tm.minute,
        tm.second,
        sign,
        off / 60,
        off % 60,
        zone
    )
}

/// "YYYYMMDDhhmmss" in local time, for Message-IDs.
pub fn compact(t: SystemTime) -> String {
    let tm = local(t);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        tm.year, tm.month, tm.day, tm.hour, tm.minute, tm.second
    )
}

/// Syslog stamp in local time: "Nov 22 03:05:00" (day padded with a space).
pub fn syslog(t: SystemTime) -> String {
    let tm = local(t);
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        tm.month_name(),
        tm.day,
        tm.hour,
        tm.minute,
        tm.second
    )
}

/// asctime(3) layout in UTC, "Thu Jan  1 00:00:00 1970", for mbox "From " lines.
pub fn asctime_utc(t: SystemTime) -> String {
    let tm = utc(t);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        tm.day_name(),
        tm.month_name(),
        tm.day,
        tm.hour,
        tm.minute,
        tm.second,
        tm.year
    )
}

/// A delay as Postfix's delivery logs write it (`delay=`, `delays=`):
/// "0" under 5 ms, two decimals under 0.1 s, one under 10 s, whole seconds
/// above (what pflogsumm and qshape read).
pub fn log_delay(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s < 0.005 {
        "0".into()
    } else if s < 0.1 {
        format!("{s:.2}")
    } else if s < 10.0 {
        format!("{s:.1}")
    } else {
        format!("{s:.0}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn delays_as_postfix_logs_them() {
        use std::time::Duration;
        assert_eq!(super::log_delay(Duration::from_millis(1)), "0");
        assert_eq!(super::log_delay(Duration::from_millis(50)), "0.05");
        assert_eq!(super::log_delay(Duration::from_millis(1234)), "1.2");
        assert_eq!(super::log_delay(Duration::from_secs(37)), "37");
    }

    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_arithmetic_is_right() {
        assert_eq!(
            format_rfc5322(&utc(UNIX_EPOCH)),
            "Thu, 1 Jan 1970 00:00:00 +0000 (UTC)"
        );
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            format_rfc5322(&utc(t)),
            "Tue, 14 Nov 2023 22:13:20 +0000 (UTC)"
        );
        assert_eq!(
            asctime_utc(UNIX_EPOCH + Duration::from_secs(1_709_210_096)),
            "Thu Feb 29 12:34:56 2024"
        );
        assert_eq!(asctime_utc(UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
    }

    #[test]
    fn local_time_agrees_with_utc_plus_offset() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let l = local(t);
        let shifted = utc(UNIX_EPOCH + Duration::from_secs((1_795_000_000 + l.offset) as u64));
        assert_eq!(
            (l.year, l.month, l.day, l.hour, l.minute),
            (
                shifted.year,
                shifted.month,
                shifted.day,
                shifted.hour,
                shifted.minute
            )
        );
        assert_eq!(compact(t).len(), 14);
        assert_eq!(syslog(t).len(), 15);
    }
}

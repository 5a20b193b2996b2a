//! Decoding a CMOS real-time-clock reading into seconds since 1970 (pure functions;
//! the arch layer reads the registers).
//!
//! The MC146818 registers hold seconds, minutes, hours, day of month, month and a
//! two-digit year, in BCD unless status register B bit 2 (DM) is set, and in 12-hour
//! form (bit 7 of the hour = PM) unless bit 1 (24/12) is set. A century register (ACPI
//! FADT `century`) is optional; without it years 70..=99 are 19xx and 00..=69 are 20xx.

/// Status register B: binary (not BCD) values.
pub const STATUS_B_BINARY: u8 = 1 << 2;
/// Status register B: 24-hour (not 12-hour) hours.
pub const STATUS_B_24H: u8 = 1 << 1;
/// Hour register bit meaning PM in 12-hour mode.
const HOUR_PM: u8 = 0x80;

/// The registers as read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtcRaw {
    /// Register 0x00.
    pub sec: u8,
    /// Register 0x02.
    pub min: u8,
    /// Register 0x04 (bit 7 = PM in 12-hour mode).
    pub hour: u8,
    /// Register 0x07 (day of month).
    pub day: u8,
    /// Register 0x08.
    pub month: u8,
    /// Register 0x09 (two digits).
    pub year: u8,
    /// The century register, when the firmware names one.
    pub century: Option<u8>,
}

/// A calendar date and time (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcTime {
    /// Full year, e.g. 2024.
    pub year: u16,
    /// 1..=12.
    pub month: u8,
    /// 1..=31.
    pub day: u8,
    /// 0..=23.
    pub hour: u8,
    /// 0..=59.
    pub min: u8,
    /// 0..=59.
    pub sec: u8,
}

/// A packed BCD byte (`0x59` = 59) in binary; `None` if a nibble is above 9.
pub fn bcd_to_bin(v: u8) -> Option<u8> {
    let (hi, lo) = (v >> 4, v & 0xf);
    (hi <= 9 && lo <= 9).then_some(hi * 10 + lo)
}

/// Decodes the registers given status register B. `None` for a malformed reading
/// (bad BCD, hour 0 or above 12 in 12-hour mode); ranges are checked by
/// [`unix_seconds`].
pub fn decode_rtc(raw: &RtcRaw, status_b: u8) -> Option<RtcTime> {
    let conv = |v: u8| {
        if status_b & STATUS_B_BINARY != 0 {
            Some(v)
        } else {
            bcd_to_bin(v)
        }
    };
    let mut hour = conv(raw.hour & !HOUR_PM)?;
    if status_b & STATUS_B_24H == 0 {
        if !(1..=12).contains(&hour) {
            return None;
        }
        // 12 AM is 0 h, 12 PM is 12 h.
        hour %= 12;
        if raw.hour & HOUR_PM != 0 {
            hour += 12;
        }
    } else if raw.hour & HOUR_PM != 0 {
        return None;
    }
    let yy = u16::from(conv(raw.year)?);
    let year = match raw.century {
        Some(c) => u16::from(conv(c)?) * 100 + yy,
        None if yy >= 70 => 1900 + yy,
        None => 2000 + yy,
    };
    Some(RtcTime {
        year,
        month: conv(raw.month)?,
        day: conv(raw.day)?,
        hour,
        min: conv(raw.min)?,
        sec: conv(raw.sec)?,
    })
}

/// Whether `year` is a Gregorian leap year.
pub const fn is_leap(year: u16) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

/// Days in `month` (1..=12) of `year`.
fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Leap years in 1..=y.
fn leaps_through(y: u64) -> u64 {
    y / 4 - y / 100 + y / 400
}

/// Seconds since 1970-01-01T00:00:00 UTC. `None` before 1970 or for a field out of
/// range (month 1..=12, day within the month, hour < 24, minute and second < 60).
pub fn unix_seconds(t: &RtcTime) -> Option<u64> {
    if t.year < 1970
        || !(1..=12).contains(&t.month)
        || t.day == 0
        || t.day > days_in_month(t.year, t.month)
        || t.hour > 23
        || t.min > 59
        || t.sec > 59
    {
        return None;
    }
    // Days before 1 January of t.year, counted from 1970.
    let y = u64::from(t.year);
    let mut days = 365 * (y - 1970) + leaps_through(y - 1) - leaps_through(1969);
    // Days before the first of the month.
    const BEFORE: [u64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    days += BEFORE[usize::from(t.month - 1)];
    if t.month > 2 && is_leap(t.year) {
        days += 1;
    }
    days += u64::from(t.day - 1);
    Some(days * 86_400 + u64::from(t.hour) * 3_600 + u64::from(t.min) * 60 + u64::from(t.sec))
}

//! The CMOS real-time clock (MC146818 at ports 0x70/0x71), read-only.

use super::cpu::{inb, outb};
use crate::platform::RtcTime;

const CMOS_INDEX: u16 = 0x70;
const CMOS_DATA: u16 = 0x71;
/// Registers of seconds, minutes, hours, day of month, month, year.
const TIME_REGS: [u8; 6] = [0x00, 0x02, 0x04, 0x07, 0x08, 0x09];
const STATUS_A: u8 = 0x0a;
const STATUS_B: u8 = 0x0b;
/// Status A: an update is in progress (the time registers may be mid-change).
const UPDATE_IN_PROGRESS: u8 = 1 << 7;
/// An update cycle takes under 2 ms; this many polls of status A is far more.
const MAX_UIP_POLLS: u32 = 1_000_000;
/// Reads until two agree; a second disagreement in a row is already unlikely.
const MAX_READS: u32 = 5;

fn read_reg(reg: u8) -> u8 {
    // Bit 7 of the index clear: NMIs stay enabled.
    outb(CMOS_INDEX, reg & 0x7f);
    inb(CMOS_DATA)
}

/// Waits until no update is in progress; false if the clock never settles.
fn wait_update_done() -> bool {
    (0..MAX_UIP_POLLS).any(|_| read_reg(STATUS_A) & UPDATE_IN_PROGRESS == 0)
}

fn read_time_regs() -> Option<[u8; 6]> {
    if !wait_update_done() {
        return None;
    }
    Some(TIME_REGS.map(read_reg))
}

/// The RTC's date and time: the time registers read twice (each after the update flag
/// cleared) until both reads agree, decoded as status register B says. The century is
/// taken to be 20xx.
pub fn read() -> Option<RtcTime> {
    let mut last = read_time_regs()?;
    for _ in 0..MAX_READS {
        let now = read_time_regs()?;
        if now == last {
            return RtcTime::from_cmos(now, read_reg(STATUS_B));
        }
        last = now;
    }
    None
}

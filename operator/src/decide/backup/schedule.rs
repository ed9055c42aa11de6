//! Which scheduled backup slot is due. Pure: the clock is an argument and the controller records
//! the slot it took (`status.backups[].lastSlot`), so a slot runs at most once even across
//! operator restarts.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;

/// A parsed cron schedule in a time zone: the one wrapper of croner, for backups, restore
/// tests and maintenance restarts (`crate::decide::heal::Schedule` reads its entry into one). croner's
/// backward search finds the newest slot at or before `now` directly, whatever the number of
/// slots missed during an outage.
#[derive(Clone, Debug)]
pub struct SlotSchedule {
    cron: croner::Cron,
    tz: Tz,
}

impl SlotSchedule {
    /// Parses `schedule` and `timeZone` (UTC when `None`); the error says what is wrong, for
    /// InvalidSpec.
    pub fn parse(cron: &str, time_zone: Option<&str>) -> Result<Self, String> {
        let parsed: croner::Cron = cron
            .parse()
            .map_err(|e| format!("schedule {cron:?} is not a valid cron expression: {e}"))?;
        let tz = match time_zone {
            None => chrono_tz::UTC,
            Some(z) => z.parse().map_err(|_| {
                format!("time zone {z:?} is not an IANA time zone name (e.g. Europe/Zurich)")
            })?,
        };
        Ok(Self { cron: parsed, tz })
    }

    /// The first slot strictly after `t`; `None` when the expression has no further slot
    /// (croner gives up past its year limit).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|s| s.with_timezone(&Utc))
    }

    /// The newest slot at or before `t`. croner searches backwards field by field, skipping
    /// whole non-matching months, days and hours, so the cost does not grow with the number of
    /// slots since the last one taken (a per-minute schedule a year behind is one search).
    pub fn newest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|s| s.with_timezone(&Utc))
    }

    /// The time zone, for retention's days, weeks and months.
    pub fn tz(&self) -> Tz {
        self.tz
    }
}

/// What the schedule says at `now`.
#[derive(Debug, Clone, PartialEq)]
pub enum Due {
    /// Run the slot `slot` now.
    Run { slot: DateTime<Utc> },
    /// The newest due slot is later than the deadline past its time: skip it (record it as
    /// taken so it is not run later) and report it. `next` is the next slot.
    Missed {
        slot: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    },
    /// Nothing due; `next` is the next slot.
    Wait { next: Option<DateTime<Utc>> },
}

/// What to do about the schedule at `now`.
///
/// `last_slot` is the last slot already taken (run or skipped), `None` for a target that never
/// ran; then `created`, when the target was first seen, bounds the slots instead, so a new
/// target does not run a slot from before it existed. Of the slots after that bound and at or
/// before `now`, only the newest counts: several missed slots make one backup, never a burst.
/// It runs if it is at most `deadline` late, and is skipped otherwise, since a backup hours
/// late would land at a time the user chose to avoid (business hours, say).
pub fn due(
    schedule: &SlotSchedule,
    last_slot: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    now: DateTime<Utc>,
    deadline: Duration,
) -> Due {
    let lower = last_slot.unwrap_or(created);
    match schedule.newest_at_or_before(now).filter(|s| *s > lower) {
        Some(slot) if now - slot <= deadline => Due::Run { slot },
        Some(slot) => Due::Missed {
            slot,
            next: schedule.next_after(now),
        },
        // A bound after `now` (the clock went back since that slot was taken) also covers the
        // slots up to it: they were taken, so the next one to run comes after the bound.
        None => Due::Wait {
            next: schedule.next_after(now.max(lower)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn hour() -> Duration {
        Duration::hours(1)
    }

    /// Every slot in `[from, to]`, by stepping forward one at a time: the obvious reference.
    fn forward_slots(
        s: &SlotSchedule,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from - Duration::seconds(1);
        while let Some(n) = s.next_after(t).filter(|n| *n <= to) {
            out.push(n);
            t = n;
        }
        out
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let e = SlotSchedule::parse("0 2 * *", None).unwrap_err();
        assert!(
            e.starts_with("schedule \"0 2 * *\" is not a valid cron expression: "),
            "{e}"
        );
        let e = SlotSchedule::parse("every night", Some("UTC")).unwrap_err();
        assert!(
            e.starts_with("schedule \"every night\" is not a valid cron expression: "),
            "{e}"
        );
        assert_eq!(
            SlotSchedule::parse("0 2 * * *", Some("Mars/Base")).unwrap_err(),
            "time zone \"Mars/Base\" is not an IANA time zone name (e.g. Europe/Zurich)"
        );
        // The cron expression is checked first: one message at a time.
        assert!(SlotSchedule::parse("nope", Some("Mars/Base"))
            .unwrap_err()
            .contains("cron expression"));
    }

    #[test]
    fn parse_accepts_five_or_six_fields_and_defaults_to_utc() {
        let s = SlotSchedule::parse("0 2 * * *", None).unwrap();
        assert_eq!(s.tz(), chrono_tz::UTC);
        assert_eq!(
            s.next_after(utc(2026, 1, 1, 0, 0, 0)),
            Some(utc(2026, 1, 1, 2, 0, 0))
        );
        let z = SlotSchedule::parse("30 0 2 * * *", Some("Europe/Zurich")).unwrap();
        assert_eq!(z.tz(), chrono_tz::Europe::Zurich);
        // 02:00:30 in Zurich is 01:00:30 UTC in winter.
        assert_eq!(
            z.next_after(utc(2026, 1, 1, 0, 0, 0)),
            Some(utc(2026, 1, 1, 1, 0, 30))
        );
    }

    #[test]
    fn next_after_is_strictly_after() {
        let s = SlotSchedule::parse("0 2 * * *", None).unwrap();
        assert_eq!(
            s.next_after(utc(2026, 1, 1, 2, 0, 0)),
            Some(utc(2026, 1, 2, 2, 0, 0))
        );
        assert_eq!(
            s.next_after(utc(2026, 1, 1, 1, 59, 59)),
            Some(utc(2026, 1, 1, 2, 0, 0))
        );
    }

    #[test]
    fn a_slot_exactly_at_now_runs() {
        let s = SlotSchedule::parse("0 2 * * *", None).unwrap();
        let slot = utc(2026, 1, 2, 2, 0, 0);
        let last = utc(2026, 1, 1, 2, 0, 0);
        assert_eq!(due(&s, Some(last), last, slot, hour()), Due::Run { slot });
    }

    #[test]
    fn a_slot_a_second_after_now_waits() {
        let s = SlotSchedule::parse("0 2 * * *", None).unwrap();
        let slot = utc(2026, 1, 2, 2, 0, 0);
        let last = utc(2026, 1, 1, 2, 0, 0);
        let now = slot - Duration::seconds(1);
        assert_eq!(
            due(&s, Some(last), last, now, hour()),
            Due::Wait { next: Some(slot) }
        );
    }

    #[test]
    fn the_same_slot_never_runs_twice() {
        let s = SlotSchedule::parse("0 2 * * *", None).unwrap();
        let slot = utc(2026, 1, 2, 2, 0, 0);
        let created = utc(2025, 6, 1, 0, 0, 0);
        let next = Some(utc(2026, 1, 3, 2, 0, 0));
        for now in [
            slot,
            slot + Duration::minutes(5),
            slot + Duration::hours(23),
        ] {
            assert_eq!(
                due(&s, Some(slot), created, now, hour()),
                Due::Wait { next },
                "{now}"
            );
        }
        // Skipped slots are recorded the same way, and are not run later either.
        let later = slot + Duration::hours(5);
        assert_eq!(
            due(&s, Some(slot), created, later, Duration::hours(24)),
            Due::Wait { next }
        );
    }

    #[test]
    fn a_missed_slot_within_the_deadline_runs_once() {
        let s = SlotSchedule::parse("0 2 * * *", None).unwrap();
        let last = utc(2026, 1, 1, 2, 0, 0);
        let slot = utc(2026, 1, 2, 2, 0, 0);
        let now = slot + Duration::minutes(59);
        assert_eq!(due(&s, Some(last), last, now, hour()), Due::Run { slot });
        // Exactly at the deadline still runs.
        assert_eq!(
            due(&s, Some(last), last, slot + hour(), hour()),
            Due::Run { slot }
        );
        // Once taken, it does not run again.
        assert_eq!(
            due(&s, Some(slot), last, now, hour()),
            Due::Wait {
                next: Some(utc(2026, 1, 3, 2, 0, 0))
            }
        );
    }

    #[test]
    fn a_slot_past_the_deadline_is_missed() {
        let s = SlotSchedule::parse("0 2 * * *", None).unwrap();
        let last = utc(2026, 1, 1, 2, 0, 0);
        let slot = utc(2026, 1, 2, 2, 0, 0);
        let now = slot + hour() + Duration::seconds(1);
        assert_eq!(
            due(&s, Some(last), last, now, hour()),
            Due::Missed {
                slot,
                next: Some(utc(2026, 1, 3, 2, 0, 0))
            }
        );
        // A zero deadline runs only a slot taken on its very second.
        assert_eq!(
            due(&s, Some(last), last, slot, Duration::zero()),
            Due::Run { slot }
        );
        assert_eq!(
            due(
                &s,
                Some(last),
                last,
                slot + Duration::seconds(1),
                Duration::zero()
            ),
            Due::Missed {
                slot,
                next: Some(utc(2026, 1, 3, 2, 0, 0))
            }
        );
    }

    #[test]
    fn three_missed_slots_make_one_run_of_the_newest() {
        let s = SlotSchedule::parse("0 2 * * *", None).unwrap();
        let last = utc(2026, 1, 1, 2, 0, 0);
        let newest = utc(2026, 1, 4, 2, 0, 0);
        let now = newest + Duration::minutes(10);
        assert_eq!(
            due(&s, Some(last), last, now, hour()),
            Due::Run { slot: newest }
        );
        // After it is recorded, the older missed slots stay skipped.
        assert_eq!(
            due(&s, Some(newest), last, now, hour()),
            Due::Wait {
                next: Some(utc(2026, 1, 5, 2, 0, 0))
            }
        );
        // Even if the newest of them is past the deadline, only it is reported.
        let late = newest + Duration::hours(3);
        assert_eq!(
            due(&s, Some(last), last, late, hour()),
            Due::Missed {
                slot: newest,
                next: Some(utc(2026, 1, 5, 2, 0, 0))
            }
        );
    }

    #[test]
    fn a_new_target_does_not_run_a_slot_from_before_it_existed() {
        let s = SlotSchedule::parse("0 2 * * *", None).unwrap();
        let created = utc(2026, 1, 10, 1, 0, 0);
        let now = utc(2026, 1, 10, 1, 30, 0);
        assert_eq!(
            due(&s, None, created, now, Duration::hours(48)),
            Due::Wait {
                next: Some(utc(2026, 1, 10, 2, 0, 0))
            }
        );
        // Its first slot runs.
        let slot = utc(2026, 1, 10, 2, 0, 0);
        assert_eq!(due(&s, None, created, slot, hour()), Due::Run { slot });
        // A slot at the very instant it was created is before it existed, too.
        assert_eq!(
            due(&s, None, slot, slot, hour()),
            Due::Wait {
                next: Some(utc(2026, 1, 11, 2, 0, 0))
            }
        );
    }

    #[test]
    fn a_last_slot_in_the_future_waits_for_the_slot_after_it() {
        // The clock went back after slot 02:00 was taken: 01:00 is not run, and the next slot
        // to run is the one after the recorded one.
        let s = SlotSchedule::parse("0 * * * *", None).unwrap();
        let taken = utc(2026, 1, 10, 2, 0, 0);
        let now = utc(2026, 1, 10, 1, 30, 0);
        assert_eq!(
            due(&s, Some(taken), taken, now, hour()),
            Due::Wait {
                next: Some(utc(2026, 1, 10, 3, 0, 0))
            }
        );
    }

    #[test]
    fn a_year_of_per_minute_slots_is_one_step() {
        let s = SlotSchedule::parse("* * * * *", None).unwrap();
        let now = utc(2026, 3, 1, 12, 34, 56);
        let last = now - Duration::days(365);
        let slot = utc(2026, 3, 1, 12, 34, 0);
        assert_eq!(
            due(&s, Some(last), last, now, Duration::seconds(60)),
            Due::Run { slot }
        );
        assert_eq!(
            due(&s, Some(last), last, now, Duration::seconds(30)),
            Due::Missed {
                slot,
                next: Some(utc(2026, 3, 1, 12, 35, 0))
            }
        );
    }

    #[test]
    fn a_sparse_schedule_finds_its_slot_years_back() {
        // 29 February only: the newest slot is 2024's, seen from 2026.
        let s = SlotSchedule::parse("0 0 29 2 *", None).unwrap();
        let now = utc(2026, 6, 1, 0, 0, 0);
        let last = utc(2020, 2, 29, 0, 0, 0);
        assert_eq!(
            due(&s, Some(last), last, now, hour()),
            Due::Missed {
                slot: utc(2024, 2, 29, 0, 0, 0),
                next: Some(utc(2028, 2, 29, 0, 0, 0))
            }
        );
        assert_eq!(
            due(&s, Some(utc(2024, 2, 29, 0, 0, 0)), last, now, hour()),
            Due::Wait {
                next: Some(utc(2028, 2, 29, 0, 0, 0))
            }
        );
    }

    #[test]
    fn spring_forward_runs_the_missing_slot_once_just_after_the_gap() {
        // Zurich, 2025-03-30: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist; the slot
        // is the first instant after the gap, 03:00 CEST = 01:00 UTC.
        let s = SlotSchedule::parse("30 2 * * *", Some("Europe/Zurich")).unwrap();
        let before = utc(2025, 3, 29, 1, 30, 0); // 02:30 CET
        let gap = utc(2025, 3, 30, 1, 0, 0);
        let after = utc(2025, 3, 31, 0, 30, 0); // 02:30 CEST
        assert_eq!(forward_slots(&s, before, after), vec![before, gap, after]);
        assert_eq!(
            due(&s, Some(before), before, gap, hour()),
            Due::Run { slot: gap }
        );
        assert_eq!(
            due(
                &s,
                Some(before),
                before,
                gap + Duration::minutes(30),
                hour()
            ),
            Due::Run { slot: gap }
        );
        assert_eq!(
            due(&s, Some(gap), before, gap + Duration::hours(12), hour()),
            Due::Wait { next: Some(after) }
        );
        assert_eq!(
            due(&s, Some(before), before, gap - Duration::seconds(1), hour()),
            Due::Wait { next: Some(gap) }
        );
    }

    #[test]
    fn fall_back_runs_the_repeated_slot_once() {
        // Zurich, 2025-10-26: 03:00 CEST goes back to 02:00 CET, so 02:30 happens twice, at
        // 00:30 and 01:30 UTC. A daily backup runs at the first only.
        let s = SlotSchedule::parse("30 2 * * *", Some("Europe/Zurich")).unwrap();
        let before = utc(2025, 10, 25, 0, 30, 0); // 02:30 CEST
        let first = utc(2025, 10, 26, 0, 30, 0);
        let second = utc(2025, 10, 26, 1, 30, 0);
        let after = utc(2025, 10, 27, 1, 30, 0); // 02:30 CET
        assert_eq!(forward_slots(&s, before, after), vec![before, first, after]);
        assert_eq!(
            due(&s, Some(before), before, first, hour()),
            Due::Run { slot: first }
        );
        for now in [
            second,
            second + Duration::minutes(1),
            first + Duration::hours(20),
        ] {
            assert_eq!(
                due(&s, Some(first), before, now, hour()),
                Due::Wait { next: Some(after) },
                "{now}"
            );
        }
        // Down over both: the one slot is run late, not a second time.
        assert_eq!(
            due(
                &s,
                Some(before),
                before,
                second + Duration::minutes(10),
                Duration::hours(2)
            ),
            Due::Run { slot: first }
        );
    }

    #[test]
    fn an_interval_schedule_runs_both_halves_of_a_repeated_hour() {
        // An every-30-minutes backup is about elapsed time, so the repeated hour gets its slots.
        let s = SlotSchedule::parse("*/30 * * * *", Some("Europe/Zurich")).unwrap();
        let from = utc(2025, 10, 25, 23, 30, 0);
        let to = utc(2025, 10, 26, 2, 0, 0);
        let expected: Vec<_> = (0..6).map(|i| from + Duration::minutes(30 * i)).collect();
        assert_eq!(forward_slots(&s, from, to), expected);
        // And `due` takes each of them in turn.
        for w in expected.windows(2) {
            assert_eq!(
                due(&s, Some(w[0]), from, w[1] + Duration::minutes(1), hour()),
                Due::Run { slot: w[1] }
            );
        }
    }

    /// Checks `due` against a forward walk at every `step` in `[start, end)`, with the bound at
    /// `start` and a deadline that never expires.
    fn assert_due_matches_forward_walk(
        s: &SlotSchedule,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        step: Duration,
    ) -> usize {
        let slots = forward_slots(s, start + Duration::seconds(1), end);
        let mut now = start;
        while now < end {
            let expected = slots.iter().rev().find(|t| **t <= now).copied();
            let got = match due(s, Some(start), start, now, Duration::days(400)) {
                Due::Run { slot } => Some(slot),
                Due::Wait { next } => {
                    assert_eq!(next, s.next_after(now), "{now}");
                    None
                }
                Due::Missed { .. } => unreachable!(),
            };
            assert_eq!(got, expected, "{now}");
            now += step;
        }
        slots.len()
    }

    #[test]
    fn due_agrees_with_stepping_forward_across_dst_changes() {
        // The backward search must find exactly the slots the forward one lists (next_run in
        // status comes from the forward one).
        let daily = SlotSchedule::parse("30 2 * * *", Some("Europe/Zurich")).unwrap();
        let n = assert_due_matches_forward_walk(
            &daily,
            utc(2025, 1, 1, 0, 0, 0),
            utc(2026, 1, 1, 0, 0, 0),
            hour(),
        );
        assert_eq!(n, 365);
        let half_hourly = SlotSchedule::parse("*/30 * * * *", Some("Europe/Zurich")).unwrap();
        // Zurich's offsets are whole hours, so every UTC half hour is a slot: 96 in two days,
        // whether a local hour is skipped or repeated in them.
        for start in [utc(2025, 3, 29, 22, 0, 0), utc(2025, 10, 25, 22, 0, 0)] {
            let n = assert_due_matches_forward_walk(
                &half_hourly,
                start,
                start + Duration::hours(48),
                Duration::minutes(7),
            );
            assert_eq!(n, 96, "{start}");
        }
    }
}

//! Which backups to keep: grandfather-father-son, as restic's `--keep-daily`, `--keep-weekly`
//! and `--keep-monthly`. Pure: the caller lists the backups and deletes what it is told.

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;

use crate::api::Retention;

/// A backup as retention sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: String,
    pub time: DateTime<Utc>,
    /// A restore test passed on it.
    pub verified: bool,
}

/// Which backups to keep and which to delete, each newest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub keep: Vec<String>,
    pub delete: Vec<String>,
}

/// A calendar bucket a rule keeps one backup of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Period {
    Day,
    IsoWeek,
    Month,
}

impl Period {
    /// The bucket of `t` in `tz`, as (year, index within the year). ISO weeks use the ISO year,
    /// so 2025-12-31 lands in week 1 of 2026 together with the days that follow it.
    fn bucket(self, t: DateTime<Utc>, tz: Tz) -> (i32, u32) {
        let local = t.with_timezone(&tz);
        match self {
            Period::Day => (local.year(), local.ordinal()),
            Period::IsoWeek => {
                let w = local.iso_week();
                (w.year(), w.week())
            }
            Period::Month => (local.year(), local.month()),
        }
    }
}

/// Decides which of `backups` to keep under `policy`, with days, ISO weeks and months taken
/// in `tz`.
///
/// Each rule walks the backups from newest to oldest and keeps the first (so the newest) of
/// each distinct day, week or month, until it has kept as many as it allows. As in restic, a
/// period without a backup does not count: `daily: 7` keeps the newest backup of each of the
/// last seven days *that have one*, however far back they reach, so an outage never lets
/// retention delete the last good backups. A backup kept by any rule is kept.
///
/// The newest backup is always kept, so even an all-zero policy never deletes everything, and
/// so is the newest verified one, so a restore known to work stays available whatever the
/// policy. Backups taken at the same instant are ordered by id, descending, so the answer does
/// not depend on the order of `backups`.
pub fn apply(backups: &[Candidate], policy: &Retention, tz: Tz) -> Decision {
    let mut sorted: Vec<&Candidate> = backups.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));

    let mut keep = vec![false; sorted.len()];
    if let Some(k) = keep.first_mut() {
        *k = true;
    }
    if let Some(i) = sorted.iter().position(|c| c.verified) {
        keep[i] = true;
    }
    for (period, count) in [
        (Period::Day, policy.daily),
        (Period::IsoWeek, policy.weekly),
        (Period::Month, policy.monthly),
    ] {
        let mut left = count;
        let mut last = None;
        for (i, c) in sorted.iter().enumerate() {
            if left == 0 {
                break;
            }
            let bucket = period.bucket(c.time, tz);
            // Sorted by time, a bucket's backups are adjacent: a change means a new period.
            if last != Some(bucket) {
                keep[i] = true;
                last = Some(bucket);
                left -= 1;
            }
        }
    }

    let mut decision = Decision::default();
    for (c, k) in sorted.iter().zip(keep) {
        if k {
            decision.keep.push(c.id.clone());
        } else {
            decision.delete.push(c.id.clone());
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use chrono::{Duration, NaiveDate, TimeZone};
    use chrono_tz::{America::New_York, Europe::Zurich, UTC};

    fn policy(daily: u32, weekly: u32, monthly: u32) -> Retention {
        Retention {
            daily,
            weekly,
            monthly,
        }
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    /// A backup named after its local date and time in `tz`.
    fn at(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Candidate {
        let local = tz.with_ymd_and_hms(y, mo, d, h, mi, 0).earliest().unwrap();
        Candidate {
            id: local.format("%Y-%m-%dT%H:%M").to_string(),
            time: local.with_timezone(&Utc),
            verified: false,
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Checks what every decision must be: a partition of the input, each side newest first.
    fn assert_partition(backups: &[Candidate], d: &Decision) {
        let all: BTreeSet<_> = backups.iter().map(|c| c.id.clone()).collect();
        let keep: BTreeSet<_> = d.keep.iter().cloned().collect();
        let delete: BTreeSet<_> = d.delete.iter().cloned().collect();
        assert!(keep.is_disjoint(&delete));
        assert_eq!(&keep | &delete, all);
        assert_eq!(d.keep.len() + d.delete.len(), backups.len());
        let time = |id: &String| backups.iter().find(|c| &c.id == id).unwrap().time;
        for side in [&d.keep, &d.delete] {
            for w in side.windows(2) {
                assert!(
                    (time(&w[0]), &w[0]) > (time(&w[1]), &w[1]),
                    "{w:?} not newest first"
                );
            }
        }
    }

    #[test]
    fn a_year_of_daily_backups_keeps_30_days_12_weeks_and_12_months() {
        // Every day of 2025 at 02:00 in Zurich. 02:00 does not exist on 2025-03-30 (the clock
        // jumps to 03:00), so that day's backup is at 03:00.
        let mut backups = Vec::new();
        let mut day = date(2025, 1, 1);
        while day.year() == 2025 {
            let (y, m, d) = (day.year(), day.month(), day.day());
            let hour = if day == date(2025, 3, 30) { 3 } else { 2 };
            backups.push(at(Zurich, y, m, d, hour, 0));
            day = day.succ_opt().unwrap();
        }
        assert_eq!(backups.len(), 365);

        let d = apply(&backups, &policy(30, 12, 12), Zurich);
        assert_partition(&backups, &d);

        let kept: BTreeSet<NaiveDate> = d
            .keep
            .iter()
            .map(|id| NaiveDate::parse_from_str(&id[..10], "%Y-%m-%d").unwrap())
            .collect();
        let mut expected = BTreeSet::new();
        // Daily: December 2 to 31.
        expected.extend((2..=31).map(|d| date(2025, 12, d)));
        // Weekly: 2025-12-31 is a Wednesday of ISO week 2026-W01, the partial week; then the
        // Sundays ending the eleven weeks before it.
        expected.extend([
            date(2025, 12, 31),
            date(2025, 12, 28),
            date(2025, 12, 21),
            date(2025, 12, 14),
            date(2025, 12, 7),
            date(2025, 11, 30),
            date(2025, 11, 23),
            date(2025, 11, 16),
            date(2025, 11, 9),
            date(2025, 11, 2),
            date(2025, 10, 26),
            date(2025, 10, 19),
        ]);
        // Monthly: the last day of each month.
        expected.extend([
            date(2025, 1, 31),
            date(2025, 2, 28),
            date(2025, 3, 31),
            date(2025, 4, 30),
            date(2025, 5, 31),
            date(2025, 6, 30),
            date(2025, 7, 31),
            date(2025, 8, 31),
            date(2025, 9, 30),
            date(2025, 10, 31),
            date(2025, 11, 30),
            date(2025, 12, 31),
        ]);
        assert_eq!(kept, expected);
        // 30 days, 7 weeks before December 2, 10 month ends before November 30.
        assert_eq!(d.keep.len(), 47);
        assert_eq!(d.delete.len(), 365 - 47);
        assert_eq!(d.keep.first().unwrap(), "2025-12-31T02:00");
        assert_eq!(d.keep.last().unwrap(), "2025-01-31T02:00");
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day() {
        // Ten nightly backups, and two manual ones on the last day.
        let mut backups: Vec<_> = (1..=10).map(|d| at(UTC, 2026, 1, d, 2, 0)).collect();
        backups.push(at(UTC, 2026, 1, 10, 9, 15));
        backups.push(at(UTC, 2026, 1, 10, 17, 40));
        let d = apply(&backups, &policy(7, 0, 0), UTC);
        assert_partition(&backups, &d);
        assert_eq!(
            d,
            Decision {
                keep: ids(&[
                    "2026-01-10T17:40",
                    "2026-01-09T02:00",
                    "2026-01-08T02:00",
                    "2026-01-07T02:00",
                    "2026-01-06T02:00",
                    "2026-01-05T02:00",
                    "2026-01-04T02:00",
                ]),
                delete: ids(&[
                    "2026-01-10T09:15",
                    "2026-01-10T02:00",
                    "2026-01-03T02:00",
                    "2026-01-02T02:00",
                    "2026-01-01T02:00",
                ]),
            }
        );
    }

    #[test]
    fn the_input_order_does_not_matter() {
        let backups: Vec<_> = (1..=10).map(|d| at(UTC, 2026, 1, d, 2, 0)).collect();
        let mut shuffled = backups.clone();
        shuffled.reverse();
        shuffled.swap(2, 7);
        let d = apply(&shuffled, &policy(3, 0, 0), UTC);
        assert_eq!(
            d.keep,
            ids(&["2026-01-10T02:00", "2026-01-09T02:00", "2026-01-08T02:00"])
        );
        assert_eq!(d, apply(&backups, &policy(3, 0, 0), UTC));
    }

    #[test]
    fn an_all_zero_policy_keeps_exactly_the_newest() {
        let backups: Vec<_> = (1..=5).map(|d| at(UTC, 2026, 2, d, 2, 0)).collect();
        let d = apply(&backups, &policy(0, 0, 0), UTC);
        assert_eq!(
            d,
            Decision {
                keep: ids(&["2026-02-05T02:00"]),
                delete: ids(&[
                    "2026-02-04T02:00",
                    "2026-02-03T02:00",
                    "2026-02-02T02:00",
                    "2026-02-01T02:00",
                ]),
            }
        );
        let one = [at(UTC, 2026, 2, 1, 2, 0)];
        assert_eq!(
            apply(&one, &policy(0, 0, 0), UTC),
            Decision {
                keep: ids(&["2026-02-01T02:00"]),
                delete: vec![],
            }
        );
    }

    #[test]
    fn the_newest_verified_backup_is_kept_beyond_every_rule() {
        let mut backups: Vec<_> = (1..=10).map(|d| at(UTC, 2026, 3, d, 2, 0)).collect();
        // Two verified, both older than what `daily: 3` covers: only the newer one is kept.
        backups[2].verified = true;
        backups[4].verified = true;
        let d = apply(&backups, &policy(3, 0, 0), UTC);
        assert_partition(&backups, &d);
        assert_eq!(
            d,
            Decision {
                keep: ids(&[
                    "2026-03-10T02:00",
                    "2026-03-09T02:00",
                    "2026-03-08T02:00",
                    "2026-03-05T02:00",
                ]),
                delete: ids(&[
                    "2026-03-07T02:00",
                    "2026-03-06T02:00",
                    "2026-03-04T02:00",
                    "2026-03-03T02:00",
                    "2026-03-02T02:00",
                    "2026-03-01T02:00",
                ]),
            }
        );
        // With an all-zero policy it stays too, next to the newest.
        let d = apply(&backups, &policy(0, 0, 0), UTC);
        assert_eq!(d.keep, ids(&["2026-03-10T02:00", "2026-03-05T02:00"]));
    }

    #[test]
    fn days_without_backups_do_not_count() {
        let backups = [
            at(UTC, 2026, 4, 1, 2, 0),
            at(UTC, 2026, 4, 5, 2, 0),
            at(UTC, 2026, 4, 9, 2, 0),
        ];
        let d = apply(&backups, &policy(2, 0, 0), UTC);
        assert_eq!(
            d,
            Decision {
                keep: ids(&["2026-04-09T02:00", "2026-04-05T02:00"]),
                delete: ids(&["2026-04-01T02:00"]),
            }
        );
    }

    #[test]
    fn weeks_and_months_without_backups_do_not_count() {
        // Mondays of ISO weeks 2, 5 and 9 of 2026, and the 1st of January, April and June.
        let weekly = [
            at(UTC, 2026, 1, 5, 2, 0),
            at(UTC, 2026, 1, 26, 2, 0),
            at(UTC, 2026, 2, 23, 2, 0),
        ];
        assert_eq!(
            apply(&weekly, &policy(0, 2, 0), UTC).keep,
            ids(&["2026-02-23T02:00", "2026-01-26T02:00"])
        );
        let monthly = [
            at(UTC, 2026, 1, 1, 2, 0),
            at(UTC, 2026, 4, 1, 2, 0),
            at(UTC, 2026, 6, 1, 2, 0),
        ];
        assert_eq!(
            apply(&monthly, &policy(0, 0, 2), UTC).keep,
            ids(&["2026-06-01T02:00", "2026-04-01T02:00"])
        );
    }

    #[test]
    fn an_iso_week_spans_the_new_year() {
        // 2025-12-29 (Monday) to 2026-01-04 (Sunday) are all ISO week 1 of 2026.
        let mut backups = vec![at(UTC, 2025, 12, 28, 2, 0)];
        backups.extend((29..=31).map(|d| at(UTC, 2025, 12, d, 2, 0)));
        backups.extend((1..=4).map(|d| at(UTC, 2026, 1, d, 2, 0)));
        assert_eq!(
            apply(&backups, &policy(0, 2, 0), UTC).keep,
            ids(&["2026-01-04T02:00", "2025-12-28T02:00"])
        );
    }

    #[test]
    fn the_rules_together_keep_their_union() {
        // Two backups a day for three weeks of March 2026 (Sunday 1st to Saturday 21st).
        let mut backups = Vec::new();
        for d in 1..=21 {
            backups.push(at(UTC, 2026, 3, d, 2, 0));
            backups.push(at(UTC, 2026, 3, d, 14, 0));
        }
        let d = apply(&backups, &policy(2, 3, 1), UTC);
        assert_partition(&backups, &d);
        // Daily: 21st and 20th, the 14:00 ones. Weekly: week 12 (16th-21st, newest the 21st),
        // week 11 (9th-15th, the 15th), week 10 (2nd-8th, the 8th). Monthly: the 21st.
        assert_eq!(
            d.keep,
            ids(&[
                "2026-03-21T14:00",
                "2026-03-20T14:00",
                "2026-03-15T14:00",
                "2026-03-08T14:00",
            ])
        );
    }

    #[test]
    fn days_are_taken_in_the_time_zone() {
        // 2025-06-10 03:30 and 04:30 UTC are the same day in UTC, but 23:30 on the 9th and
        // 00:30 on the 10th in New York (UTC-4 in summer).
        let c = |id: &str, h: u32, mi: u32, d: u32| Candidate {
            id: id.to_owned(),
            time: Utc.with_ymd_and_hms(2025, 6, d, h, mi, 0).unwrap(),
            verified: false,
        };
        let backups = [c("a", 12, 0, 9), c("b", 3, 30, 10), c("c", 4, 30, 10)];
        assert_eq!(
            apply(&backups, &policy(2, 0, 0), UTC),
            Decision {
                keep: ids(&["c", "a"]),
                delete: ids(&["b"]),
            }
        );
        assert_eq!(
            apply(&backups, &policy(2, 0, 0), New_York),
            Decision {
                keep: ids(&["c", "b"]),
                delete: ids(&["a"]),
            }
        );
    }

    #[test]
    fn weeks_and_months_are_taken_in_the_time_zone() {
        // Zurich is UTC+1 in winter: 2026-02-28 23:30 UTC is March 1st 00:30 there.
        let c = |id: &str, time: DateTime<Utc>| Candidate {
            id: id.to_owned(),
            time,
            verified: false,
        };
        let backups = [
            c(
                "feb-mid",
                Utc.with_ymd_and_hms(2026, 2, 15, 12, 0, 0).unwrap(),
            ),
            c(
                "edge",
                Utc.with_ymd_and_hms(2026, 2, 28, 23, 30, 0).unwrap(),
            ),
            c("mar", Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap()),
        ];
        // In UTC "edge" is February's newest; in Zurich it is in March, behind "mar".
        assert_eq!(
            apply(&backups, &policy(0, 0, 2), UTC).keep,
            ids(&["mar", "edge"])
        );
        assert_eq!(
            apply(&backups, &policy(0, 0, 2), Zurich).keep,
            ids(&["mar", "feb-mid"])
        );
        // Sunday 2026-03-01 23:30 UTC ends ISO week 9 in UTC, but is Monday 00:30 of week 10
        // in Zurich.
        let backups = [
            c("w9", Utc.with_ymd_and_hms(2026, 2, 25, 12, 0, 0).unwrap()),
            c("sun", Utc.with_ymd_and_hms(2026, 3, 1, 23, 30, 0).unwrap()),
            c("w10", Utc.with_ymd_and_hms(2026, 3, 3, 12, 0, 0).unwrap()),
        ];
        assert_eq!(
            apply(&backups, &policy(0, 2, 0), UTC).keep,
            ids(&["w10", "sun"])
        );
        assert_eq!(
            apply(&backups, &policy(0, 2, 0), Zurich).keep,
            ids(&["w10", "w9"])
        );
    }

    #[test]
    fn ties_are_ordered_by_id_descending() {
        let t = Utc.with_ymd_and_hms(2026, 5, 1, 2, 0, 0).unwrap();
        let c = |id: &str, time: DateTime<Utc>| Candidate {
            id: id.to_owned(),
            time,
            verified: false,
        };
        let backups = [
            c("a", t),
            c("c", t),
            c("b", t),
            c("z", t - Duration::days(1)),
        ];
        assert_eq!(
            apply(&backups, &policy(2, 0, 0), UTC),
            Decision {
                keep: ids(&["c", "z"]),
                delete: ids(&["b", "a"]),
            }
        );
    }

    #[test]
    fn empty_input_gives_an_empty_decision() {
        assert_eq!(apply(&[], &policy(30, 12, 12), Zurich), Decision::default());
    }
}

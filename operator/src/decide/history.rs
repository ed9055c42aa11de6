//! What the revision history needs after something happened to a revision: which outcomes
//! change and which revisions are forgotten. Pure: the caller lists the stored revisions,
//! calls [`changes`], and writes what it returns.
//!
//! - A revision is recorded: the older ones still `Progressing` were never Ready, and never
//!   will be now: `Superseded`.
//! - The stack is Ready on a revision: it is `Complete` (a rollback may go back to it), and the
//!   older ones still `Progressing` are `Superseded`.
//! - Either way, beyond the history limit the oldest are forgotten, never one of `keep` (the
//!   revision running, the last good one).

use chrono::{DateTime, Utc};

use crate::api::revision::{Outcome, Phase, Recorded};

/// What happened to a revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// It was recorded, before anything of it was applied.
    Recorded(u64),
    /// The stack is Ready on it.
    Ready(u64),
}

/// What to write.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub outcomes: Vec<(u64, Outcome)>,
    pub forget: Vec<u64>,
}

pub fn changes(
    stored: &[Recorded],
    event: Event,
    limit: usize,
    keep: &[u64],
    now: DateTime<Utc>,
) -> Changes {
    let at = |phase| Outcome {
        phase,
        since: Some(now),
    };
    let (number, phase) = match event {
        Event::Recorded(n) => (n, Phase::Progressing),
        Event::Ready(n) => (n, Phase::Complete),
    };
    let mut outcomes = Vec::new();
    for r in stored {
        let n = r.revision.number;
        if n == number && r.outcome.phase != phase {
            outcomes.push((n, at(phase)));
        } else if n < number && r.outcome.phase == Phase::Progressing {
            outcomes.push((n, at(Phase::Superseded)));
        }
    }
    Changes {
        outcomes,
        forget: forget(stored, limit, keep),
    }
}

/// The oldest revisions beyond `limit`, sparing those in `keep`.
fn forget(stored: &[Recorded], limit: usize, keep: &[u64]) -> Vec<u64> {
    let mut numbers: Vec<u64> = stored.iter().map(|r| r.revision.number).collect();
    numbers.sort_unstable();
    let excess = numbers.len().saturating_sub(limit);
    numbers
        .into_iter()
        .filter(|n| !keep.contains(n))
        .take(excess)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::revision::{Cause, Revision};

    fn now() -> DateTime<Utc> {
        "2026-12-05T01:00:00Z".parse().unwrap()
    }

    fn stored(numbers_and_phases: &[(u64, Phase)]) -> Vec<Recorded> {
        numbers_and_phases
            .iter()
            .map(|&(number, phase)| Recorded {
                revision: Revision {
                    number,
                    spec_hash: format!("hash{number}"),
                    created: now(),
                    cause: Cause::SpecChange { generation: None },
                    compose: String::new(),
                    services: Default::default(),
                    backups: Default::default(),
                },
                outcome: Outcome { phase, since: None },
            })
            .collect()
    }

    fn phase_changes(c: &Changes) -> Vec<(u64, Phase)> {
        c.outcomes.iter().map(|(n, o)| (*n, o.phase)).collect()
    }

    #[test]
    fn a_recorded_revision_supersedes_older_ones_that_never_got_ready() {
        let s = stored(&[
            (1, Phase::Complete),
            (2, Phase::Progressing),
            (3, Phase::Progressing),
        ]);
        let c = changes(&s, Event::Recorded(3), 10, &[3], now());
        assert_eq!(phase_changes(&c), [(2, Phase::Superseded)]);
        assert!(c.forget.is_empty());
    }

    #[test]
    fn ready_completes_the_revision_once_and_stamps_the_time() {
        let s = stored(&[(1, Phase::Complete), (2, Phase::Progressing)]);
        let c = changes(&s, Event::Ready(2), 10, &[2], now());
        assert_eq!(
            c.outcomes,
            [(
                2,
                Outcome {
                    phase: Phase::Complete,
                    since: Some(now())
                }
            )]
        );
        let done = stored(&[(1, Phase::Complete), (2, Phase::Complete)]);
        assert_eq!(
            changes(&done, Event::Ready(2), 10, &[2], now()),
            Changes::default()
        );
    }

    #[test]
    fn newer_revisions_are_left_alone() {
        // A rollback (issue 11) makes an older revision the running one again.
        let s = stored(&[(1, Phase::Progressing), (2, Phase::Progressing)]);
        let c = changes(&s, Event::Ready(1), 10, &[1], now());
        assert_eq!(phase_changes(&c), [(1, Phase::Complete)]);
    }

    #[test]
    fn beyond_the_limit_the_oldest_are_forgotten_but_never_the_kept_ones() {
        let s = stored(&[
            (1, Phase::Complete),
            (2, Phase::Superseded),
            (3, Phase::Superseded),
            (4, Phase::Progressing),
        ]);
        assert_eq!(
            changes(&s, Event::Recorded(4), 2, &[4], now()).forget,
            [1, 2]
        );
        // The last good revision stays, however old: the next oldest goes instead.
        assert_eq!(
            changes(&s, Event::Recorded(4), 2, &[4, 1], now()).forget,
            [2, 3]
        );
        assert!(changes(&s, Event::Recorded(4), 4, &[4], now())
            .forget
            .is_empty());
    }

    #[test]
    fn the_history_never_shrinks_below_what_must_be_kept() {
        let s = stored(&[(1, Phase::Complete), (2, Phase::Progressing)]);
        assert!(changes(&s, Event::Recorded(2), 1, &[1, 2], now())
            .forget
            .is_empty());
    }
}

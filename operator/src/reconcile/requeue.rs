//! When to look at a stack again. Pure: what the pass found and `now` in, a delay out.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How soon to look again while containers are coming up.
pub const PROGRESS_REQUEUE: Duration = Duration::from_millis(500);
/// How often status shows the progress of a running backup.
pub const BACKUP_PROGRESS_REQUEUE: Duration = Duration::from_secs(2);
/// How soon to look again when all is well (drift detection).
pub const STEADY_REQUEUE: Duration = Duration::from_secs(30);
/// The soonest a due time brings the next pass: a due time already past is not a busy loop.
const SOONEST: Duration = Duration::from_millis(100);

/// 1 s, 2 s, 4 s ... doubling up to 256 s (the 5-minute cap is never reached).
pub fn backoff_delay(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(8)).min(Duration::from_secs(300))
}

/// What a pass found that bears on when to look again.
#[derive(Debug, Default, Clone, Copy)]
pub struct Due {
    /// Steady, progressing or backoff: the delay before anything below shortens it.
    pub base: Option<Duration>,
    /// Containers are still coming up.
    pub progressing: bool,
    /// A backup job runs: its progress is worth showing.
    pub job_running: bool,
    /// A held deploy's backups are done: deploy now.
    pub deploy_now: bool,
    /// The earliest restart, schedule, slot or hold end.
    pub at: Option<DateTime<Utc>>,
}

/// The delay before the next pass.
pub fn next_pass(due: Due, now: DateTime<Utc>) -> Duration {
    let mut next = due.base.unwrap_or(if due.progressing {
        PROGRESS_REQUEUE
    } else {
        STEADY_REQUEUE
    });
    if due.job_running {
        next = next.min(BACKUP_PROGRESS_REQUEUE);
    }
    if due.deploy_now {
        next = next.min(PROGRESS_REQUEUE);
    }
    if let Some(at) = due.at {
        let until = (at - now).to_std().unwrap_or(Duration::ZERO);
        next = next.min(until.max(SOONEST));
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-12-04T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_quiet_stack_is_looked_at_every_thirty_seconds() {
        assert_eq!(next_pass(Due::default(), now()), STEADY_REQUEUE);
    }

    #[test]
    fn a_stack_coming_up_is_looked_at_twice_a_second() {
        let due = Due {
            progressing: true,
            ..Due::default()
        };
        assert_eq!(next_pass(due, now()), PROGRESS_REQUEUE);
    }

    #[test]
    fn a_backoff_wins_over_progress_but_not_over_a_due_restart() {
        let due = Due {
            base: Some(Duration::from_secs(60)),
            progressing: true,
            at: Some(now() + chrono::Duration::seconds(7)),
            ..Due::default()
        };
        assert_eq!(next_pass(due, now()), Duration::from_secs(7));
    }

    #[test]
    fn a_due_time_already_past_is_not_a_busy_loop() {
        let due = Due {
            at: Some(now() - chrono::Duration::seconds(3)),
            ..Due::default()
        };
        assert_eq!(next_pass(due, now()), SOONEST);
    }

    #[test]
    fn a_running_job_and_a_released_deploy_shorten_the_wait() {
        let job = Due {
            job_running: true,
            ..Due::default()
        };
        assert_eq!(next_pass(job, now()), BACKUP_PROGRESS_REQUEUE);
        let deploy = Due {
            deploy_now: true,
            base: Some(Duration::from_secs(8)),
            ..Due::default()
        };
        assert_eq!(next_pass(deploy, now()), PROGRESS_REQUEUE);
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=10).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 256]);
        assert_eq!(backoff_delay(0).as_secs(), 1);
    }
}

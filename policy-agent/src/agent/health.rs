//! Liveness and readiness, shared between the sync loop (which sets them) and the
//! HTTP server (which reports them).
//!
//! - live (`/healthz`): the loop ticked within the threshold; a wedged loop gets
//!   the container restarted (enforcement stays: the pins outlive the process);
//! - ready (`/readyz`): the initial lists are done, the source is not stale, the
//!   maps hold the current state and every local pod with an address has its
//!   programs. Not ready says why, one reason per line.
//! - details: what the agent enforces differently from what was asked, or reports,
//!   without making the node unready (`Health::details`): policies the node's
//!   tables could not hold (`refused: ...`), objects that could not be converted or
//!   were over a cap (`not converted: ...`), an HTTP listener that could not be
//!   bound (`http: ...`), identity conflicts it does not follow (`identity: ...`)
//!   and programs running ahead of podwall's on a pod interface (`ahead: ...`).
//!   Each is one line, at most `DETAIL_LINES` per kind.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// Lines of one kind of detail `/readyz` shows before "... and N more".
pub const DETAIL_LINES: usize = 20;

/// What the loop last reported.
#[derive(Debug)]
struct State {
    last_tick: Instant,
    synced: bool,
    stale: Option<String>,
    programmed: bool,
    pods_without_programs: usize,
    refused: Vec<String>,
    not_converted: Vec<String>,
    http: Option<String>,
    identity_conflicts: Vec<String>,
    programs_ahead: Vec<String>,
    exits_attached: bool,
}

/// The agent's health, set by the loop and read by `/healthz` and `/readyz`.
#[derive(Debug)]
pub struct Health {
    liveness_threshold: Duration,
    state: Mutex<State>,
}

impl Health {
    /// A health that is live for `liveness_threshold` after each tick (and after
    /// creation) and not ready until the loop says so.
    pub fn new(liveness_threshold: Duration) -> Self {
        Self {
            liveness_threshold,
            state: Mutex::new(State {
                last_tick: Instant::now(),
                synced: false,
                stale: None,
                programmed: false,
                exits_attached: false,
                pods_without_programs: 0,
                refused: Vec::new(),
                not_converted: Vec::new(),
                http: None,
                identity_conflicts: Vec::new(),
                programs_ahead: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every write is a single field: a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The loop is alive (call once per iteration, and at least every threshold
    /// while idle).
    pub fn tick(&self) {
        self.lock().last_tick = Instant::now();
    }

    /// Every initial list of the source is done.
    pub fn set_synced(&self, synced: bool) {
        self.lock().synced = synced;
    }

    /// Some watch is failing (with the last error), or none (`None`).
    pub fn set_stale(&self, stale: Option<String>) {
        self.lock().stale = stale;
    }

    /// The maps hold the state last computed (false after a failed apply).
    pub fn set_programmed(&self, programmed: bool) {
        self.lock().programmed = programmed;
    }

    /// How many local pods with an address have no attached interface yet.
    pub fn set_pods_without_programs(&self, pods: usize) {
        self.lock().pods_without_programs = pods;
    }

    /// The policies this node's tables left out (`Refusal`'s text, one each).
    pub fn set_refused(&self, refused: Vec<String>) {
        self.lock().refused = refused;
    }

    /// The objects of the source that could not be converted or were over a cap
    /// (`SourceSnapshot::conversion_errors`).
    pub fn set_not_converted(&self, errors: Vec<String>) {
        self.lock().not_converted = errors;
    }

    /// The HTTP listener could not be bound (why), or is listening (`None`).
    pub fn set_http(&self, problem: Option<String>) {
        self.lock().http = problem;
    }

    /// The identity conflicts of the last plan (`plan::Conflict`'s text, one each).
    pub fn set_identity_conflicts(&self, conflicts: Vec<String>) {
        self.lock().identity_conflicts = conflicts;
    }

    /// Whether the last pass left `node_sockets` and every exit's classifiers
    /// attached (not part of readiness: a failed exit attach is retried and
    /// logged; `agent::versions` waits for it before removing another version's).
    pub fn set_exits_attached(&self, attached: bool) {
        self.lock().exits_attached = attached;
    }

    /// What the last pass said of the exits (`set_exits_attached`).
    pub fn exits_attached(&self) -> bool {
        self.lock().exits_attached
    }

    /// The programs running ahead of podwall's, one line each.
    pub fn set_programs_ahead(&self, ahead: Vec<String>) {
        self.lock().programs_ahead = ahead;
    }

    /// What is enforced differently from what was asked, or reported, one line
    /// each, prefixed by its kind (`refused: `, `not converted: `, `identity: `,
    /// `ahead: `, `http: `); none of it makes the node unready. At most
    /// `DETAIL_LINES` lines per kind, then `kind: ... and N more`.
    pub fn details(&self) -> Vec<String> {
        let state = self.lock();
        let mut out = Vec::new();
        for (kind, lines) in [
            ("refused", &state.refused),
            ("not converted", &state.not_converted),
            ("identity", &state.identity_conflicts),
            ("ahead", &state.programs_ahead),
        ] {
            out.extend(
                lines
                    .iter()
                    .take(DETAIL_LINES)
                    .map(|line| format!("{kind}: {line}")),
            );
            if lines.len() > DETAIL_LINES {
                out.push(format!(
                    "{kind}: ... and {} more",
                    lines.len() - DETAIL_LINES
                ));
            }
        }
        if let Some(problem) = &state.http {
            out.push(format!("http: {problem}"));
        }
        out
    }

    /// Whether the loop ticked within the threshold.
    pub fn live(&self) -> bool {
        self.lock().last_tick.elapsed() <= self.liveness_threshold
    }

    /// How long ago the loop last ticked.
    pub fn since_tick(&self) -> Duration {
        self.lock().last_tick.elapsed()
    }

    /// Ready, or every reason not to be.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let state = self.lock();
        let mut reasons = Vec::new();
        if !state.synced {
            reasons.push("initial lists not done".to_string());
        }
        if let Some(error) = &state.stale {
            reasons.push(format!("stale: {error}"));
        }
        if !state.programmed {
            reasons.push("maps not programmed".to_string());
        }
        if state.pods_without_programs > 0 {
            reasons.push(format!(
                "{} pods without programs",
                state.pods_without_programs
            ));
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Health;

    #[test]
    fn a_new_agent_is_live_but_not_ready_and_says_why() {
        let health = Health::new(Duration::from_secs(30));
        assert!(health.live());
        assert_eq!(
            health.readiness(),
            Err(vec![
                "initial lists not done".to_string(),
                "maps not programmed".to_string()
            ])
        );
    }

    #[test]
    fn ready_needs_sync_programming_no_staleness_and_every_pod_attached() {
        let health = Health::new(Duration::from_secs(30));
        health.set_synced(true);
        health.set_programmed(true);
        assert_eq!(health.readiness(), Ok(()));
        health.set_pods_without_programs(2);
        assert_eq!(
            health.readiness(),
            Err(vec!["2 pods without programs".to_string()])
        );
        health.set_pods_without_programs(0);
        health.set_stale(Some("pods: connection refused".to_string()));
        assert_eq!(
            health.readiness(),
            Err(vec!["stale: pods: connection refused".to_string()])
        );
        health.set_stale(None);
        health.set_programmed(false);
        assert_eq!(
            health.readiness(),
            Err(vec!["maps not programmed".to_string()])
        );
    }

    #[test]
    fn conflicts_and_programs_ahead_are_details_that_leave_the_node_ready() {
        let health = Health::new(Duration::from_secs(30));
        health.set_synced(true);
        health.set_programmed(true);
        health.set_identity_conflicts(
            (0..super::DETAIL_LINES + 1)
                .map(|i| format!("pod x/p{i}: conflict"))
                .collect(),
        );
        health.set_programs_ahead(vec!["pw0 ingress: other (id 7)".to_string()]);
        assert_eq!(health.readiness(), Ok(()));
        let details = health.details();
        assert_eq!(details[0], "identity: pod x/p0: conflict");
        assert_eq!(details[super::DETAIL_LINES], "identity: ... and 1 more");
        assert_eq!(
            details.last().map(String::as_str),
            Some("ahead: pw0 ingress: other (id 7)")
        );
        assert_eq!(details.len(), super::DETAIL_LINES + 2);
    }

    #[test]
    fn refusals_and_conversion_errors_are_details_that_leave_the_node_ready() {
        let health = Health::new(Duration::from_secs(30));
        health.set_synced(true);
        health.set_programmed(true);
        health.set_refused(vec!["policy a/b: too big".to_string()]);
        health.set_not_converted(
            (0..super::DETAIL_LINES + 2)
                .map(|i| format!("NetworkPolicy x/p{i}: bad"))
                .collect(),
        );
        assert_eq!(health.readiness(), Ok(()));
        let details = health.details();
        assert_eq!(details[0], "refused: policy a/b: too big");
        assert_eq!(details[1], "not converted: NetworkPolicy x/p0: bad");
        assert_eq!(details.len(), 1 + super::DETAIL_LINES + 1);
        assert_eq!(
            details.last().map(String::as_str),
            Some("not converted: ... and 2 more")
        );
        health.set_http(Some("cannot listen on 0.0.0.0:9977: in use".to_string()));
        assert_eq!(
            health.details().last().map(String::as_str),
            Some("http: cannot listen on 0.0.0.0:9977: in use")
        );
    }

    #[test]
    fn liveness_lapses_when_the_loop_stops_ticking() {
        let health = Health::new(Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!health.live());
        health.tick();
        assert!(health.live());
    }
}

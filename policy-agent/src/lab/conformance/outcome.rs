//! What a case came to, as one line for people and as JSON for machines.
//!
//! Lines: `PASS 01-default-deny-ingress (1 step, 72 probes, 1.3s)`,
//! `FAIL 14-ingress-ports: step 1 81/TCP x/a -> x/b expected allowed, got dropped (+3 more)`,
//! `SKIP 46-sctp-default-deny-ingress: probes SCTP and ...`; then the summary
//! `N passed, N failed, N skipped`.

use std::{fmt, path::PathBuf, time::Duration};

use serde::Serialize;

use crate::model::Protocol;

/// Pass, fail or skip, with the reason for the last two.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "reason", rename_all = "lowercase")]
pub enum CaseResult {
    /// Every probe of every step agreed with its matrix.
    Pass,
    /// Some probe disagreed (see the mismatches), or the case could not run.
    Fail(String),
    /// The case cannot run here (e.g. it probes SCTP on a kernel without SCTP).
    Skip(String),
}

/// A probe whose result differs from the expected matrix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The step, counted from 1.
    pub step: usize,
    /// Destination port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// Source pod, `ns/pod`.
    pub from: String,
    /// Destination pod, `ns/pod`.
    pub to: String,
    /// What the matrix says.
    pub expected: bool,
    /// What the probe saw.
    pub allowed: bool,
}

fn verdict_word(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "dropped"
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {} {}/{} {} -> {} expected {}, got {}",
            self.step,
            self.port,
            self.protocol,
            self.from,
            self.to,
            verdict_word(self.expected),
            verdict_word(self.allowed)
        )
    }
}

impl CaseResult {
    /// A run's verdict: failed with `error` (already saying where), else failed
    /// naming the first mismatch (and how many more), else passed.
    pub fn of_run(error: Option<String>, mismatches: &[Mismatch]) -> Self {
        match (error, mismatches) {
            (Some(error), _) => CaseResult::Fail(error),
            (None, [first, rest @ ..]) => CaseResult::Fail(if rest.is_empty() {
                first.to_string()
            } else {
                format!("{first} (+{} more)", rest.len())
            }),
            (None, []) => CaseResult::Pass,
        }
    }
}

/// The result of one case file.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// The file name without `.yaml`.
    pub case: String,
    /// The case file.
    pub file: PathBuf,
    /// Pass, fail or skip.
    #[serde(flatten)]
    pub verdict: CaseResult,
    /// Steps run.
    pub steps: usize,
    /// Probes sent.
    pub probes: usize,
    /// Wall-clock time of the case.
    #[serde(rename = "seconds", serialize_with = "seconds")]
    pub elapsed: Duration,
    /// Every probe that disagreed with its matrix.
    pub mismatches: Vec<Mismatch>,
    /// Probes not sent because this kernel or lab cannot (SCTP); never passed.
    #[serde(skip_serializing_if = "is_zero")]
    pub skipped_probes: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn seconds<S: serde::Serializer>(elapsed: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64((elapsed.as_secs_f64() * 1000.0).round() / 1000.0)
}

impl Outcome {
    /// A case whose file could not be read or checked: failed, naming the file
    /// and every cause.
    pub fn unreadable(file: PathBuf, error: &super::CaseError) -> Self {
        let name = file
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        let reason = format!("{}: {}", file.display(), crate::causes::causes(error));
        Outcome::not_run(name, file, CaseResult::Fail(reason))
    }

    /// A case that did not get to run, for `verdict`'s reason.
    pub fn not_run(case: String, file: PathBuf, verdict: CaseResult) -> Self {
        Self {
            case,
            file,
            verdict,
            steps: 0,
            probes: 0,
            elapsed: Duration::ZERO,
            mismatches: Vec::new(),
            skipped_probes: 0,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.verdict {
            CaseResult::Pass => {
                write!(
                    f,
                    "PASS {} ({} step{}, {} probes, {:.1}s",
                    self.case,
                    self.steps,
                    if self.steps == 1 { "" } else { "s" },
                    self.probes,
                    self.elapsed.as_secs_f64()
                )?;
                if self.skipped_probes > 0 {
                    write!(f, "; {} SCTP probes skipped", self.skipped_probes)?;
                }
                f.write_str(")")
            }
            CaseResult::Fail(reason) => write!(f, "FAIL {}: {reason}", self.case),
            CaseResult::Skip(reason) => write!(f, "SKIP {}: {reason}", self.case),
        }
    }
}

/// How many cases passed, failed and were skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed (including files that do not parse).
    pub failed: usize,
    /// Cases that cannot run here.
    pub skipped: usize,
}

impl Summary {
    /// Counts `outcomes`.
    pub fn of(outcomes: &[Outcome]) -> Self {
        let mut summary = Self::default();
        for outcome in outcomes {
            match outcome.verdict {
                CaseResult::Pass => summary.passed += 1,
                CaseResult::Fail(_) => summary.failed += 1,
                CaseResult::Skip(_) => summary.skipped += 1,
            }
        }
        summary
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// `{"cases":[...],"passed":N,"failed":N,"skipped":N}`, one line.
pub fn to_json(outcomes: &[Outcome]) -> String {
    #[derive(Serialize)]
    struct Report<'a> {
        cases: &'a [Outcome],
        #[serde(flatten)]
        summary: Summary,
    }
    let report = Report {
        cases: outcomes,
        summary: Summary::of(outcomes),
    };
    serde_json::to_string(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

//! An iteration of the loop as one printed line: values against thresholds, the decision, and
//! Flagger's messages with the reasons behind them.

use super::canary::{Decision, Iteration};
use super::units::num;
use super::webhook::HookType;

impl Iteration {
    /// One line: every metric's value against its threshold, and the decision.
    pub fn line(&self) -> String {
        let mut s = format!("#{:<3} weight {:>3}%  ", self.number, self.weight);
        for c in &self.checks {
            let bound = match (c.min, c.max) {
                (Some(a), Some(b)) => format!(" [{}..{}]", num(a), num(b)),
                (Some(a), None) => format!(" [>= {}{}]", num(a), c.unit),
                (None, Some(b)) => format!(" [<= {}{}]", num(b), c.unit),
                (None, None) => String::new(),
            };
            match (c.value, &c.skipped) {
                (_, Some(why)) => s.push_str(&format!("{}=skipped ({why})  ", c.metric)),
                (Some(v), _) => s.push_str(&format!(
                    "{}={v:.2}{}{bound}{}  ",
                    c.metric,
                    c.unit,
                    if c.failure.is_some() { " FAIL" } else { " ok" }
                )),
                (None, _) => s.push_str(&format!("{}=no data{bound}  ", c.metric)),
            }
        }
        let d = match &self.decision {
            Decision::Start { weight } => format!("start: canary weight {weight}%"),
            Decision::Advance { from, to } => format!("advance {from}% -> {to}%"),
            Decision::Halt { failed, threshold } => {
                format!("halt ({failed}/{threshold} failed checks)")
            }
            Decision::Wait { hook } => format!("wait: webhook {hook} holds the gate"),
            Decision::ScaleUp => "scale up: confirm-rollout passed, analysis starts next".into(),
            Decision::Rollback => "ROLLBACK".into(),
            Decision::Promote => "PROMOTE".into(),
        };
        s.push_str("=> ");
        s.push_str(&d);
        // The decision says what a plain start or advance did; anything else shows its events.
        let plain = matches!(
            self.decision,
            Decision::Start { .. } | Decision::Advance { .. }
        ) && self.hooks.is_empty();
        for m in self.messages.iter().filter(|_| !plain) {
            s.push_str("\n      ");
            s.push_str(m);
        }
        for h in &self.hooks {
            s.push_str(&format!(
                "\n      webhook {} ({}) {}: {}",
                h.name,
                h.kind.as_str(),
                match (h.kind, h.passed) {
                    (HookType::Rollback, true) => "signals a rollback",
                    (HookType::Rollback, false) => "signals nothing",
                    (_, true) => "passed",
                    (_, false) => "FAILED",
                },
                h.plain
            ));
        }
        for c in &self.checks {
            if let Some(r) = &c.reason {
                s.push_str(&format!("\n      {} has no data because: {r}", c.metric));
            } else if let (Some(f), None) = (&c.failure, c.value) {
                if !self.messages.contains(f) {
                    s.push_str(&format!("\n      {f}"));
                }
            }
        }
        s
    }
}

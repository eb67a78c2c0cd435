//! An iteration of the loop as one printed line: values against thresholds, the decision, and
//! Flagger's messages with the reasons behind them.

use super::canary::{Decision, Iteration};
use super::units::num;

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
            Decision::Rollback => "ROLLBACK".into(),
            Decision::Promote => "PROMOTE".into(),
        };
        s.push_str("=> ");
        s.push_str(&d);
        for m in &self.messages {
            if matches!(self.decision, Decision::Halt { .. }) {
                s.push_str("\n      ");
                s.push_str(m);
            }
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

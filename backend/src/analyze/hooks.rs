//! Where the loop calls each webhook type and what each outcome does, as Flagger's
//! `scheduler_hooks.go` has it: the confirm gates block without counting, pre-rollout and rollout
//! failures count as failed checks, a rollback hook's 2xx rolls back at once, post-rollout and
//! event hooks only report. `--skip-webhooks` and `--webhook-override` are applied here.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::canary::{Analysis, Iteration, Options};
use super::manifest::Canary;
use super::webhook::{call, HookType, Payload, Webhook};

/// One webhook call and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookReport {
    pub name: String,
    pub kind: HookType,
    pub passed: bool,
    /// What happened, in plain words (what Flagger's event leaves out included).
    pub plain: String,
}

/// The Canary's webhooks, after `--skip-webhooks` and `--webhook-override`.
pub struct Hooks {
    list: Vec<(HookType, Webhook)>,
    notes: Vec<String>,
    name: String,
    namespace: String,
    checksum: String,
}

/// Flagger's events recorded as `Warning` (the rest are `Normal`), by how they begin.
const WARNINGS: [&str; 7] = [
    "Halt ",
    "Rolling back ",
    "Canary failed!",
    "Rollback check ",
    "Post-rollout hook ",
    "Prometheus query failed",
    "Metric query failed",
];

impl Hooks {
    pub fn new(c: &Canary, opts: &Options) -> Result<Self, String> {
        let mut list = Vec::new();
        for w in &c.spec.analysis.webhooks {
            let kind =
                HookType::parse(&w.kind).map_err(|e| format!("webhook {:?}: {e}", w.name))?;
            list.push((kind, w.clone()));
        }
        let mut notes = Vec::new();
        if !list.iter().any(|(k, _)| *k == HookType::Event) {
            if let Some(url) = &opts.event_webhook {
                // Flagger's global -event-webhook: named "events", 10 s, no retries.
                list.push((
                    HookType::Event,
                    Webhook {
                        name: "events".into(),
                        kind: "event".into(),
                        url: url.clone(),
                        timeout: None,
                        metadata: None,
                        retries: None,
                        mute_alert: false,
                        disable_tls: false,
                    },
                ));
            }
        }
        for (name, url) in &opts.webhook_overrides {
            let mut found = false;
            for (_, w) in list.iter_mut().filter(|(_, w)| &w.name == name) {
                notes.push(format!(
                    "--webhook-override {name}: calling {url} instead of {}",
                    w.url
                ));
                w.url = url.clone();
                found = true;
            }
            if !found {
                let names: Vec<&str> = list.iter().map(|(_, w)| w.name.as_str()).collect();
                return Err(format!(
                    "--webhook-override {name}: the Canary has no webhook named {name:?} (it has: {})",
                    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
                ));
            }
        }
        if opts.skip_webhooks && !list.is_empty() {
            let named: Vec<String> = list
                .iter()
                .map(|(k, w)| format!("{} ({})", w.name, k.as_str()))
                .collect();
            notes.push(format!(
                "--skip-webhooks: not calling {}; the loop runs as if the Canary had no webhooks",
                named.join(", ")
            ));
            list.clear();
        }
        Ok(Self {
            list,
            notes,
            name: c.metadata.name.clone(),
            namespace: c.namespace().to_owned(),
            checksum: c.checksum.clone(),
        })
    }

    pub fn has(&self, kind: HookType) -> bool {
        self.list.iter().any(|(k, _)| *k == kind)
    }

    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The webhooks, by type, as the Canary lists them (after overrides).
    pub fn list(&self) -> &[(HookType, Webhook)] {
        &self.list
    }

    fn payload(&self, phase: &str, metadata: Option<BTreeMap<String, String>>) -> Payload {
        Payload {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            phase: phase.to_owned(),
            checksum: self.checksum.clone(),
            metadata,
        }
    }
}

impl Analysis {
    /// Calls every hook of `kind` in order, recording each; the first failure's name and
    /// Flagger's error text.
    fn call_all(&self, it: &mut Iteration, kind: HookType) -> Result<(), (String, String)> {
        // Flagger sends the phase it is in for these two, and "Progressing" for the rest.
        let phase = match kind {
            HookType::ConfirmRollout | HookType::Rollback | HookType::PostRollout => {
                self.phase.as_str()
            }
            _ => "Progressing",
        };
        let hooks: Vec<Webhook> = self
            .hooks
            .list()
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, w)| w.clone())
            .collect();
        for w in hooks {
            let called = call(&w, &self.hooks.payload(phase, w.metadata.clone()));
            it.hooks.push(HookReport {
                name: w.name.clone(),
                kind,
                passed: called.error.is_none(),
                plain: called.plain,
            });
            match called.error {
                Some(e) => return Err((w.name, e)),
                None => {
                    if let Some(m) = kind.passed_event(&w.name) {
                        self.event(it, m);
                    }
                }
            }
        }
        Ok(())
    }

    /// A confirm-* gate: the name of the first hook that holds it closed.
    pub(super) fn gate(&self, it: &mut Iteration, kind: HookType) -> Result<(), String> {
        self.call_all(it, kind).map_err(|(name, _)| name)
    }

    /// Rollback hooks in order: the first that answers 200-202 rolls the canary back.
    pub(super) fn rollback_signalled(&self, it: &mut Iteration) -> bool {
        let hooks: Vec<Webhook> = self
            .hooks
            .list()
            .iter()
            .filter(|(k, _)| *k == HookType::Rollback)
            .map(|(_, w)| w.clone())
            .collect();
        for w in hooks {
            let called = call(
                &w,
                &self.hooks.payload(self.phase.as_str(), w.metadata.clone()),
            );
            let signals = called.error.is_none();
            it.hooks.push(HookReport {
                name: w.name.clone(),
                kind: HookType::Rollback,
                passed: signals,
                plain: called.plain,
            });
            if signals {
                self.event(it, format!("Rollback check {} passed", w.name));
                return true;
            }
            self.event(
                it,
                format!("Rollback hook {} not signaling a rollback", w.name),
            );
        }
        false
    }

    /// Pre-rollout hooks: a failure is a failed check, retried next interval.
    pub(super) fn pre_rollout(&self, it: &mut Iteration) -> bool {
        match self.call_all(it, HookType::PreRollout) {
            Ok(()) => true,
            Err((name, e)) => {
                let canary = &self.canary;
                self.event(
                    it,
                    format!("Halt {canary} advancement pre-rollout check {name} failed {e}"),
                );
                false
            }
        }
    }

    /// Rollout hooks, before the metrics: a failure is a failed check and skips them.
    pub(super) fn rollout(&self, it: &mut Iteration) -> bool {
        match self.call_all(it, HookType::Rollout) {
            Ok(()) => true,
            Err((name, e)) => {
                let canary = &self.canary;
                self.event(
                    it,
                    format!("Halt {canary} advancement external check {name} failed {e}"),
                );
                false
            }
        }
    }

    /// Post-rollout hooks, with the phase the canary ended in; a failure is only reported.
    pub(super) fn post_rollout(&self, it: &mut Iteration) {
        if let Err((name, e)) = self.call_all(it, HookType::PostRollout) {
            self.event(it, format!("Post-rollout hook {name} failed {e}"));
        }
    }

    /// Records one of Flagger's events and sends it to the event webhooks, as
    /// `recordEvent*f` does.
    pub(super) fn event(&self, it: &mut Iteration, text: String) {
        let warning = WARNINGS.iter().any(|w| text.starts_with(w));
        for (_, w) in self
            .hooks
            .list()
            .iter()
            .filter(|(k, _)| *k == HookType::Event)
        {
            let millis = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let mut meta = BTreeMap::from([
                ("eventMessage".to_owned(), text.clone()),
                (
                    "eventType".to_owned(),
                    if warning { "Warning" } else { "Normal" }.to_owned(),
                ),
                ("timestamp".to_owned(), millis.to_string()),
            ]);
            for (k, v) in w.metadata.iter().flatten() {
                meta.entry(k.clone()).or_insert_with(|| v.clone());
            }
            let called = call(w, &self.hooks.payload(self.phase.as_str(), Some(meta)));
            if let Some(e) = called.error {
                it.hooks.push(HookReport {
                    name: w.name.clone(),
                    kind: HookType::Event,
                    passed: false,
                    plain: format!(
                        "Flagger only logs \"error sending event to webhook: {e}\"; {}",
                        called.plain
                    ),
                });
            }
        }
        it.messages.push(text);
    }
}

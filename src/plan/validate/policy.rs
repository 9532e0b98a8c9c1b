//! `[policy]`: how the update runs.

use super::{Validator, code};
use crate::plan::diagnostic::Diagnostic;
use crate::plan::model::*;
use crate::plan::raw;
use std::path::PathBuf;
use toml::Spanned;

impl Validator<'_> {
    pub(super) fn policy(&mut self, raw: Option<&Spanned<raw::RawPolicy>>) -> Policy {
        let mut policy = Policy {
            isolate: None,
            max_downtime: None,
            max_downtime_span: None,
            preflush_timeout: DEFAULT_PREFLUSH_TIMEOUT,
            parallelism: DEFAULT_PARALLELISM,
            save_channels: None,
            on_failure: OnFailure::Rollback,
            journal: PathBuf::from(DEFAULT_JOURNAL),
            kexec: KexecMethod::Auto,
            metrics: None,
        };
        let Some(raw) = raw.map(Spanned::get_ref) else {
            return policy;
        };
        if let Some(target) = &raw.isolate {
            if target.get_ref().ends_with(".target")
                && !target.get_ref().contains(char::is_whitespace)
            {
                policy.isolate = Some(target.get_ref().clone());
            } else {
                self.push(
                    Diagnostic::error(
                        code::ISOLATE_TARGET,
                        format!("\"{}\" is not a systemd target", target.get_ref()),
                    )
                    .at(target.span(), "`systemctl isolate` takes a .target unit")
                    .help("for example \"rescue.target\" or \"multi-user.target\""),
                );
            }
        }
        if let Some(max) = &raw.max_downtime {
            policy.max_downtime = self.duration(max, "policy.max_downtime");
            policy.max_downtime_span = Some(max.span());
        }
        if let Some(timeout) = &raw.preflush_timeout
            && let Some(d) = self.duration(timeout, "policy.preflush_timeout")
        {
            policy.preflush_timeout = d;
        }
        if let Some(parallelism) = &raw.parallelism {
            match u32::try_from(*parallelism.get_ref()) {
                Ok(0) | Err(_) => self.push(
                    Diagnostic::error(code::PARALLELISM, "`policy.parallelism` must be at least 1")
                        .at(parallelism.span(), "no step could ever run")
                        .help("use 1 to run steps one after another, or more to run independent steps at once"),
                ),
                Ok(n) => policy.parallelism = n,
            }
        }
        // Out of 1..=255 the structural pass has already reported it (`out-of-range`, from the schema's bounds).
        if let Some(channels) = &raw.save_channels {
            policy.save_channels = u32::try_from(*channels.get_ref())
                .ok()
                .filter(|n| (1..=255).contains(n));
        }
        if let Some(on_failure) = &raw.on_failure {
            policy.on_failure = *on_failure.get_ref();
            if policy.on_failure == OnFailure::Stop {
                self.push(
                    Diagnostic::warning(
                        code::ON_FAILURE_STOP,
                        "on a failure, paused VMs stay paused until an operator acts",
                    )
                    .at(on_failure.span(), "no automatic rollback")
                    .help("\"rollback\" resumes VMs and restarts apps automatically; keep \"stop\" only if someone is on call"),
                );
            }
        }
        if let Some(method) = &raw.kexec {
            policy.kexec = *method.get_ref();
            if policy.kexec == KexecMethod::Direct {
                self.push(
                    Diagnostic::warning(
                        code::DIRECT_KEXEC,
                        "a direct kexec leaves file systems mounted: they replay their journals on the new kernel",
                    )
                    .at(method.span(), "no clean shutdown")
                    .help("\"auto\" uses `systemctl kexec` where systemd runs the host; keep \"direct\" for hosts without it or when every millisecond counts"),
                );
            }
        }
        if let Some(journal) = &raw.journal
            && let Some(path) = self.durable(journal, "policy.journal")
        {
            policy.journal = path;
        }
        // Only absolute: a metrics file under /run is fine, resume on the new kernel writes it again.
        if let Some(metrics) = &raw.metrics {
            policy.metrics = self.absolute(metrics, "policy.metrics");
        }
        policy
    }
}

//! Step durations measured by earlier applies, as plain data: where a step of the same plan has run before, the
//! estimate uses the median of its last runs instead of the cost model's figure (`kup plan graph --history`,
//! `kup plan validate --history`). Reading the journals that hold them is `exec`'s job; the graph only takes the
//! numbers, so it stays pure.

use super::StepId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How many of a step's most recent runs its measured figure is the median of.
pub const LAST_RUNS: usize = 5;

/// A step's measured figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    /// The median of the last runs (of two middle values, their mean).
    pub median: Duration,
    /// How many runs that median is of (at most [`LAST_RUNS`]).
    pub runs: usize,
}

/// What the earlier applies of one plan measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PlanHistory {
    /// Each step's durations, oldest first.
    steps: BTreeMap<StepId, Vec<Duration>>,
    applies: usize,
    hosts: BTreeSet<String>,
}

/// Measured step durations of earlier applies, by plan name. A plan is known by its `name` (the journal records
/// it): the kernel version and the file change between updates, the plan's steps do not. A plan without a name
/// has no history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    plans: BTreeMap<String, PlanHistory>,
}

/// One earlier apply, as `exec` read it from its journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastApply {
    /// The plan's name as the apply recorded it.
    pub plan: String,
    /// The host it ran on.
    pub host: String,
    /// The steps it finished and how long each took, in any order.
    pub steps: Vec<(StepId, Duration)>,
}

impl History {
    /// Adds an apply; applies must be added oldest first, since a step's figure is taken from its latest runs.
    pub fn add(&mut self, apply: PastApply) {
        if apply.plan.is_empty() {
            return;
        }
        let plan = self.plans.entry(apply.plan).or_default();
        plan.applies += 1;
        plan.hosts.insert(apply.host);
        for (step, duration) in apply.steps {
            plan.steps.entry(step).or_default().push(duration);
        }
    }

    /// The measured figure of `step` of the plan named `plan`: the median of its last [`LAST_RUNS`] runs.
    pub fn measured(&self, plan: &str, step: &StepId) -> Option<Measured> {
        let runs = self.plans.get(plan)?.steps.get(step)?;
        let mut last: Vec<Duration> = runs[runs.len().saturating_sub(LAST_RUNS)..].to_vec();
        last.sort();
        let n = last.len();
        let median = match n {
            0 => return None,
            n if n % 2 == 1 => last[n / 2],
            n => (last[n / 2 - 1] + last[n / 2]) / 2,
        };
        Some(Measured { median, runs: n })
    }

    /// How many applies of `plan` there are, and on which hosts (sorted).
    pub fn applies(&self, plan: &str) -> (usize, Vec<&str>) {
        self.plans.get(plan).map_or((0, Vec::new()), |p| {
            (p.applies, p.hosts.iter().map(String::as_str).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn apply(plan: &str, host: &str, save_ms: u64) -> PastApply {
        PastApply {
            plan: plan.into(),
            host: host.into(),
            steps: vec![(StepId::VmSave { vm: "db".into() }, ms(save_ms))],
        }
    }

    #[test]
    fn the_figure_is_the_median_of_the_last_five_runs() {
        let save = StepId::VmSave { vm: "db".into() };
        let mut h = History::default();
        h.add(apply("p", "a", 900));
        assert_eq!(
            h.measured("p", &save),
            Some(Measured {
                median: ms(900),
                runs: 1
            })
        );
        h.add(apply("p", "a", 100));
        assert_eq!(
            h.measured("p", &save).unwrap().median,
            ms(500),
            "two: their mean"
        );
        for save_ms in [300, 200, 400, 250] {
            h.add(apply("p", "b", save_ms));
        }
        // The last five: 100 300 200 400 250; the first run (900) has dropped out.
        assert_eq!(
            h.measured("p", &save),
            Some(Measured {
                median: ms(250),
                runs: 5
            })
        );
        assert_eq!(h.applies("p"), (6, vec!["a", "b"]));
    }

    #[test]
    fn other_plans_steps_and_unnamed_plans_have_no_figure() {
        let mut h = History::default();
        h.add(apply("p", "a", 100));
        h.add(apply("", "a", 100));
        assert_eq!(h.measured("q", &StepId::VmSave { vm: "db".into() }), None);
        assert_eq!(h.measured("p", &StepId::VmSave { vm: "web".into() }), None);
        assert_eq!(h.measured("", &StepId::VmSave { vm: "db".into() }), None);
        assert_eq!(h.applies(""), (0, vec![]));
    }

    /// A named plan with one libvirt guest: its graph, with `history` applied when given, and its text listing.
    fn listing(name: Option<&str>, history: Option<&History>) -> (super::super::StepGraph, String) {
        let name = name
            .map(|n| format!("name = \"{n}\"\n"))
            .unwrap_or_default();
        let text = format!(
            "kup = 1\n{name}[kernel]\nimage = \"/boot/vmlinuz\"\n\
             sha256 = \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"\n\
             [[vm]]\nname = \"db\"\nlibvirt = \"db\"\nstate = \"/var/lib/kup/state/db\"\nmemory_size = \"1GiB\"\n"
        );
        let checked = crate::check::check_with_history("t.toml", text.as_bytes(), history);
        let (plan, graph) = checked
            .valid()
            .unwrap_or_else(|r| panic!("{}", r.render(false, 100)));
        let text = super::super::render::text(&plan, &graph, &graph.schedule());
        (graph, text)
    }

    #[test]
    fn measured_steps_replace_the_model_in_the_schedule_and_say_so() {
        let mut h = History::default();
        for save_ms in [3_000, 5_000] {
            h.add(PastApply {
                plan: "hv".into(),
                host: "hv-7".into(),
                steps: vec![(StepId::VmSave { vm: "db".into() }, ms(save_ms))],
            });
        }
        let (model, plain) = listing(Some("hv"), None);
        let (graph, text) = listing(Some("hv"), Some(&h));
        let save = StepId::VmSave { vm: "db".into() };
        assert_eq!(graph.step(&save).unwrap().estimate, ms(4_000));
        // The guest is down 2.5 s longer: the model says 1.5 s for the save, the history 4 s.
        let down = |g: &super::super::StepGraph| g.schedule().downtime();
        assert_eq!(down(&graph) - down(&model), ms(2_500));
        assert!(
            !plain.contains("history:") && !plain.contains("estimated)"),
            "{plain}"
        );
        assert!(
            text.contains("history: 2 earlier applies of this plan on hv-7; 1 steps measured"),
            "{text}"
        );
        let line = |id: &str| {
            text.lines()
                .find(|l| l.contains(&format!(" {id} ")))
                .unwrap()
                .to_owned()
        };
        assert!(
            line("vm:db:save").contains("takes       4 s (measured, median of 2)"),
            "{text}"
        );
        assert!(line("vm:db:restore").contains("(estimated)"), "{text}");
        let json = serde_json::to_value(super::super::render::json(&graph.schedule())).unwrap();
        let steps = json["steps"].as_array().unwrap();
        let measured: Vec<&str> = steps
            .iter()
            .filter(|s| s.get("measured_runs").is_some())
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(measured, ["vm:db:save"]);
    }

    #[test]
    fn a_plan_without_a_name_or_without_applies_is_estimated_and_says_why() {
        let mut h = History::default();
        h.add(apply("other", "a", 100));
        let (_, unnamed) = listing(None, Some(&h));
        assert!(
            unnamed.contains("history: the plan has no name"),
            "{unnamed}"
        );
        let (_, unknown) = listing(Some("hv"), Some(&h));
        assert!(
            unknown.contains("history: no earlier apply of this plan"),
            "{unknown}"
        );
        assert!(!unknown.contains("(measured"), "{unknown}");
    }

    #[test]
    fn the_budget_diagnostic_marks_its_measured_contributors() {
        let mut h = History::default();
        for save_ms in [3_000, 5_000] {
            h.add(apply("hv", "hv-7", save_ms));
        }
        let text = "kup = 1\nname = \"hv\"\n[kernel]\nimage = \"/boot/vmlinuz\"\n\
             sha256 = \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"\n\
             [[vm]]\nname = \"db\"\nlibvirt = \"db\"\nstate = \"/var/lib/kup/state/db\"\nmemory_size = \"1GiB\"\n\
             [policy]\nmax_downtime = \"1s\"\n";
        let help = |history: Option<&History>| {
            let checked = crate::check::check_with_history("t.toml", text.as_bytes(), history);
            let d = checked
                .report
                .diagnostics
                .iter()
                .find(|d| d.code == super::super::code::DOWNTIME_BUDGET);
            d.and_then(|d| d.help.clone()).expect("over the budget")
        };
        assert!(
            help(Some(&h)).contains("vm:db:save 4 s (measured, median of 2)"),
            "{}",
            help(Some(&h))
        );
        assert!(!help(None).contains("measured"), "{}", help(None));
    }
}

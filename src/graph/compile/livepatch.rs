//! A live patch plan's steps: `preflight` (the kernel can be patched, the module is fit for it), the load
//! (`finit_module`) and its undo, the wait for the transition, the removal (`action = "remove"`) and `verify`.

use super::{Compiled, ms};
use crate::action::Action;
use crate::plan::{Livepatch, LivepatchAction, Plan};
use std::time::Duration;

/// `delete_module` of a disabled patch is retried this long while the kernel frees it.
pub const UNLOAD_TIMEOUT: Duration = Duration::from_secs(10);

fn timeout_ms(l: &Livepatch) -> u64 {
    ms(l.timeout)
}

/// The undo of a load: disable, wait for the transition back, remove the module. Each does nothing when there is
/// nothing to undo, so it is also safe after a load that failed.
fn undo(l: &Livepatch) -> Vec<Action> {
    vec![
        Action::DisableLivepatch {
            name: l.name.clone(),
            timeout_ms: timeout_ms(l),
        },
        Action::UnloadModule {
            name: l.name.clone(),
            timeout_ms: ms(UNLOAD_TIMEOUT),
        },
    ]
}

/// `preflight` of a live patch plan.
pub(super) fn preflight(plan: &Plan, l: &Livepatch) -> Vec<Action> {
    let mut actions = super::checks::hostname(plan);
    actions.push(Action::CheckLivepatchSupport);
    match (l.action, &l.module) {
        (LivepatchAction::Apply, Some(module)) => {
            actions.push(Action::CheckFile {
                path: module.clone(),
                sha256: l.sha256.clone(),
            });
            actions.push(Action::CheckLivepatchModule {
                path: module.clone(),
                name: l.name.clone(),
            });
        }
        (LivepatchAction::Remove, module) => {
            if let (Some(module), Some(_)) = (module, &l.sha256) {
                actions.push(Action::CheckFile {
                    path: module.clone(),
                    sha256: l.sha256.clone(),
                });
            }
            actions.push(Action::CheckLivepatch {
                name: l.name.clone(),
                loaded: true,
            });
        }
        (LivepatchAction::Apply, None) => {}
    }
    actions
}

/// `livepatch:NAME:load`, undone by disabling and removing the patch.
pub(super) fn load(l: &Livepatch) -> Compiled {
    let actions = l
        .module
        .iter()
        .map(|path| Action::LoadModule { path: path.clone() })
        .collect();
    (actions, undo(l))
}

/// `livepatch:NAME:transition`: undone by the load's undo, which runs after it.
pub(super) fn transition(l: &Livepatch) -> Compiled {
    (
        vec![Action::WaitLivepatchTransition {
            name: l.name.clone(),
            timeout_ms: timeout_ms(l),
        }],
        Vec::new(),
    )
}

/// `livepatch:NAME:remove`: a disabled patch cannot be enabled again, so nothing undoes it.
pub(super) fn remove(l: &Livepatch) -> Compiled {
    (undo(l), Vec::new())
}

/// `verify` of a live patch plan: the patch enabled and settled, or gone.
pub(super) fn verify(l: &Livepatch) -> Vec<Action> {
    vec![Action::CheckLivepatch {
        name: l.name.clone(),
        loaded: l.action == LivepatchAction::Apply,
    }]
}

#[cfg(test)]
mod tests {
    use crate::action::Action;
    use crate::graph::{Phase, StepId, compile};

    const PLAN: &str = r#"kup = 1
[livepatch]
module = "/lib/kup/kup_lab_livepatch.ko"
name = "kup_lab_livepatch"
timeout = "5s"
"#;

    fn program(text: &str) -> crate::graph::Program {
        let (plan, graph) = crate::check::check("t.toml", text.as_bytes())
            .valid()
            .unwrap_or_else(|report| panic!("{}", report.render(false, 100)));
        compile(&plan, &graph, "")
    }

    #[test]
    fn a_live_patch_loads_waits_and_is_undone_by_disable_and_unload() {
        let p = program(PLAN);
        let ids: Vec<&StepId> = p.steps.iter().map(|s| &s.id).collect();
        let name = || "kup_lab_livepatch".to_owned();
        assert_eq!(
            ids,
            [
                &StepId::Preflight,
                &StepId::LivepatchLoad { name: name() },
                &StepId::LivepatchTransition { name: name() },
                &StepId::Verify
            ]
        );
        assert!(p.steps.iter().all(|s| s.phase == Phase::Before));
        let load = &p.steps[1];
        assert_eq!(
            load.actions,
            [Action::LoadModule {
                path: "/lib/kup/kup_lab_livepatch.ko".into()
            }]
        );
        assert_eq!(
            load.rollback,
            [
                Action::DisableLivepatch {
                    name: "kup_lab_livepatch".into(),
                    timeout_ms: 5000
                },
                Action::UnloadModule {
                    name: "kup_lab_livepatch".into(),
                    timeout_ms: 10_000
                }
            ]
        );
        assert!(p.steps[0].actions.contains(&Action::CheckLivepatchModule {
            path: "/lib/kup/kup_lab_livepatch.ko".into(),
            name: "kup_lab_livepatch".into()
        }));
        assert_eq!(
            p.steps[3].actions,
            [Action::CheckLivepatch {
                name: "kup_lab_livepatch".into(),
                loaded: true
            }]
        );
        assert!(!load.idempotent && p.steps[2].idempotent);
    }

    #[test]
    fn a_removal_is_one_step_that_nothing_undoes() {
        let p =
            program("kup = 1\n[livepatch]\nname = \"kup_lab_livepatch\"\naction = \"remove\"\n");
        let ids: Vec<&StepId> = p.steps.iter().map(|s| &s.id).collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(
            *ids[1],
            StepId::LivepatchRemove {
                name: "kup_lab_livepatch".into()
            }
        );
        assert!(p.steps[1].rollback.is_empty());
        assert!(matches!(
            p.steps[2].actions[0],
            Action::CheckLivepatch { loaded: false, .. }
        ));
    }

    #[test]
    fn guests_are_left_alone_and_custom_steps_run_between_preflight_and_verify() {
        let p = program(&format!(
            "{PLAN}[[vm]]\nname = \"db\"\nlibvirt = \"db\"\nstate = \"/var/lib/kup/state/db\"\n\
             [[step]]\nname = \"note\"\nrun = [\"/bin/true\"]\n"
        ));
        assert!(p.steps.iter().all(|s| s.id.vm().is_none()));
        let note = p.steps.iter().find(|s| s.id == "step:note").unwrap();
        assert_eq!(note.phase, Phase::Before);
        assert_eq!(note.after, [StepId::Preflight]);
        let verify = p.steps.iter().find(|s| s.id == StepId::Verify).unwrap();
        assert!(verify.after.contains(&note.id));
    }
}

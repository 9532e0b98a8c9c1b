//! `[[app]]` and `[[step]]`: the host's apps (systemd, CRIU, hooks) and the plan's own steps.

use super::{Seen, Validator, code};
use crate::plan::diagnostic::Diagnostic;
use crate::plan::model::*;
use crate::plan::raw;
use toml::Spanned;

impl Validator<'_> {
    pub(super) fn apps(&mut self, raw: &[Spanned<raw::RawApp>]) -> Vec<App> {
        let mut names = Seen::new();
        let mut apps = Vec::new();
        for table in raw {
            let app = table.get_ref();
            let name_ok = self.name(&app.name, "app", &mut names);
            let name = app.name.get_ref().clone();
            let hooks = app.save.is_some() || app.restore.is_some();
            let kinds = [app.systemd.is_some(), app.criu.is_some(), hooks];
            let kind = match kinds.iter().filter(|k| **k).count() {
                0 => {
                    self.push(
                        Diagnostic::error(code::APP_KIND, format!("app \"{name}\" says nothing about how to save it"))
                            .at(app.name.span(), "no `systemd`, `criu`, `save` or `restore`")
                            .help("add `systemd = \"unit.service\"`, `criu = { pidfile = …, images = … }` or save/restore hooks"),
                    );
                    None
                }
                1 => self.app_kind(app),
                _ => {
                    self.push(
                        Diagnostic::error(
                            code::APP_KIND,
                            format!("app \"{name}\" mixes `systemd`, `criu` and save/restore hooks"),
                        )
                        .at(app.name.span(), "more than one way to save this app")
                        .help("an app is saved one way: keep one of `systemd`, `criu`, or `save`/`restore`"),
                    );
                    None
                }
            };
            if let (true, Some(kind)) = (name_ok, kind) {
                apps.push(App { name, kind });
            }
        }
        apps
    }

    pub(super) fn app_kind(&mut self, app: &raw::RawApp) -> Option<AppKind> {
        if let Some(unit) = &app.systemd {
            return self
                .systemd_unit(unit)
                .map(|unit| AppKind::Systemd { unit });
        }
        if let Some(criu) = &app.criu {
            let criu = criu.get_ref();
            let pidfile = self.absolute(&criu.pidfile, "app.criu.pidfile");
            let images = self.durable(&criu.images, "app.criu.images");
            return pidfile
                .zip(images)
                .map(|(pidfile, images)| AppKind::Criu { pidfile, images });
        }
        let save = app.save.as_ref().map(|a| self.argv(a, "app.save"));
        let restore = app.restore.as_ref().map(|a| self.argv(a, "app.restore"));
        if matches!(save, Some(None)) || matches!(restore, Some(None)) {
            return None;
        }
        Some(AppKind::Hooks {
            save: save.flatten(),
            restore: restore.flatten(),
        })
    }

    pub(super) fn steps(&mut self, raw: &[Spanned<raw::RawStep>]) -> Vec<CustomStep> {
        let mut names = Seen::new();
        let mut steps = Vec::new();
        for table in raw {
            let step = table.get_ref();
            let name_ok = self.name(&step.name, "step", &mut names);
            let run = self.argv(&step.run, "step.run");
            let timeout = match &step.timeout {
                Some(t) => self.duration(t, "step.timeout"),
                None => Some(DEFAULT_STEP_TIMEOUT),
            };
            let refs = |list: &[Spanned<String>]| {
                list.iter()
                    .map(|r| StepRef {
                        id: r.get_ref().clone(),
                        span: r.span(),
                    })
                    .collect::<Vec<_>>()
            };
            let undo = step.undo.as_ref().map(|u| self.argv(u, "step.undo"));
            if let (true, Some(run), Some(timeout), false) =
                (name_ok, run, timeout, matches!(undo, Some(None)))
            {
                steps.push(CustomStep {
                    name: step.name.get_ref().clone(),
                    run,
                    before: refs(&step.before),
                    after: refs(&step.after),
                    timeout,
                    undo: undo.flatten(),
                    idempotent: step.idempotent.as_ref().is_some_and(|i| *i.get_ref()),
                });
            }
        }
        steps
    }
}

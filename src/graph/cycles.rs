//! What is wrong with a graph the plan describes: step ids that name no step (with a did-you-mean) and cycles among
//! the custom steps' `before` / `after`, each pointing at the entries that close it.

use super::{EdgeOrigin, StepGraph, StepId, StepKind, code};
use crate::plan::structure::did_you_mean;
use crate::plan::{Diagnostic, Plan};
use petgraph::Direction;
use petgraph::graph::NodeIndex;
use std::collections::{BTreeMap, VecDeque};

impl StepGraph {
    pub(super) fn unknown(&self, plan: &Plan, r: &crate::plan::StepRef) -> Diagnostic {
        let d = Diagnostic::error(code::UNKNOWN_STEP, format!("no step has the id `{}`", r.id))
            .at(r.span.clone(), "unknown step id");
        let custom = StepId::Custom { name: r.id.clone() }.to_string();
        if self.ids.contains_key(&custom) {
            return d.help(format!(
                "custom steps are named with a `step:` prefix: did you mean `{custom}`?"
            ));
        }
        if r.id == "isolate" && plan.policy.isolate.is_none() {
            return d.help("`isolate` exists only when `policy.isolate` names a target");
        }
        let ids = self.sorted_ids();
        match did_you_mean(&r.id, ids.iter().copied()) {
            Some(guess) => d.help(format!("did you mean `{guess}`?")),
            None => d.help(format!("step ids in this plan: {}", ids.join(", "))),
        }
    }

    /// Every step id's text, sorted.
    fn sorted_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.ids.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    /// One diagnostic per strongly connected component: the shortest cycle through it, pointing at the
    /// `before` / `after` entries that close it. Built-in edges alone never form a cycle, so each has one.
    pub(super) fn cycles(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        // Most graphs have none: one depth-first search (a self-loop is a back edge too) says so before the
        // components are computed.
        if !petgraph::algo::is_cyclic_directed(&self.graph) {
            return out;
        }
        let mut components = petgraph::algo::tarjan_scc(&self.graph);
        // Report in plan order, not in the algorithm's.
        for c in &mut components {
            c.sort();
        }
        components.sort();
        for component in components {
            let looped =
                component.len() > 1 || self.graph.find_edge(component[0], component[0]).is_some();
            if !looped {
                continue;
            }
            // Start from a custom step so the cycle is told from the user's side.
            let start = component
                .iter()
                .copied()
                .find(|&n| matches!(self.graph[n].kind, StepKind::Custom { .. }))
                .unwrap_or(component[0]);
            let path = self.shortest_cycle(start, &component);
            out.push(self.cycle_diagnostic(&path));
        }
        out
    }

    /// Nodes of a shortest cycle through `start` inside `component`, `start` first (not repeated at the end).
    pub(super) fn shortest_cycle(
        &self,
        start: NodeIndex,
        component: &[NodeIndex],
    ) -> Vec<NodeIndex> {
        let mut previous: BTreeMap<NodeIndex, NodeIndex> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(n) = queue.pop_front() {
            for next in self.graph.neighbors_directed(n, Direction::Outgoing) {
                if next == start {
                    let mut path = vec![n];
                    let mut at = n;
                    while at != start {
                        match previous.get(&at) {
                            Some(&p) => at = p,
                            None => break,
                        }
                        path.push(at);
                    }
                    path.reverse();
                    return path;
                }
                if component.contains(&next) && !previous.contains_key(&next) {
                    previous.insert(next, n);
                    queue.push_back(next);
                }
            }
        }
        vec![start]
    }

    pub(super) fn cycle_diagnostic(&self, path: &[NodeIndex]) -> Diagnostic {
        let ids: Vec<String> = path.iter().map(|&n| self.graph[n].id.to_string()).collect();
        let mut chain = ids.join(" → ");
        chain.push_str(" → ");
        chain.push_str(&ids[0]);
        let mut declared = Vec::new();
        for (i, &from) in path.iter().enumerate() {
            let to = path[(i + 1) % path.len()];
            if let Some(e) = self.graph.find_edge(from, to)
                && let EdgeOrigin::Declared { span, label } = &self.graph[e]
            {
                declared.push((span.clone(), label.clone()));
            }
        }
        let mut d = Diagnostic::error(
            code::STEP_CYCLE,
            format!("steps wait for each other in a cycle: {chain}"),
        );
        let mut entries = declared.into_iter();
        if let Some((span, label)) = entries.next() {
            d = d.at(span, label);
        }
        for (span, label) in entries {
            d = d.related(span, label);
        }
        let through_kexec = path.iter().any(|&n| self.graph[n].kind == StepKind::Kexec);
        if through_kexec {
            d.help(
                "a custom step runs either before `kexec` (the point of no return) or after it, never both: \
                 drop the `before` or the `after` entry that puts it on the other side",
            )
        } else {
            d.help("each arrow is one step that must wait for the next; remove one of the marked entries")
        }
    }
}

//! The scheduler of one run: the plan's race rules and their strategies,
//! every point's hits, the hosts' tasks and threads (which are ready), and
//! the switches deferred from destructors. The run installs it as a part
//! of its context; the functions of [`super`] consult it at each point.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::coverage;
use crate::faults::{FaultPlan, Race, glob_match};
use crate::seed::SimRng;

use super::ready::ThreadWaker;
use super::strategy::{Action, Hit, Strategy, TaskKey};
use super::{bounded, pct, random, targeted};

/// What the run knows of one point.
pub(super) struct PointState {
    name: String,
    /// The rules whose glob matches the point, in plan order.
    pub(super) rules: Vec<usize>,
    hits: u64,
    yields: u64,
    starved: u64,
    pub(super) rng: SimRng,
}

/// A decision taken at a point: the rule that took it, for whom, what.
pub(super) struct Decision {
    pub(super) rule: usize,
    /// The point, by its index in [`Scheduler::points`].
    pub(super) point: usize,
    pub(super) task: TaskKey,
    pub(super) action: Action,
}

/// Where a point's name is in memory: a call site's two strings.
type NameAt = (usize, usize, usize, usize);

/// Slots of [`Scheduler::point_cache`].
const POINT_CACHE_SLOTS: usize = 256;
const _: () = assert!(POINT_CACHE_SLOTS.is_power_of_two());

/// The scheduler of one run: the plan's rules, the points seen, the tasks.
pub(crate) struct Scheduler {
    seed: u64,
    pub(super) rules: Vec<Race>,
    pub(super) strategies: Vec<Box<dyn Strategy>>,
    rule_hits: Vec<u64>,
    rule_steps: Vec<u64>,
    pub(super) points: Vec<PointState>,
    /// Points by the addresses of their name's parts: the hot path
    /// compares no strings.
    point_at: BTreeMap<NameAt, usize>,
    /// A direct-mapped cache in front of `point_at`, by address: most hits
    /// are of a few call sites. (It only ever answers what `point_at`
    /// would, so addresses, which differ between processes, never decide
    /// anything.)
    point_cache: [Option<(NameAt, usize)>; POINT_CACHE_SLOTS],
    /// Points by name (call sites that spell one name share its point).
    point_named: BTreeMap<String, usize>,
    hosts: Vec<Arc<str>>,
    tasks: BTreeMap<(usize, tokio::task::Id), u64>,
    /// The last task looked up in `tasks`: a task hits its points in runs.
    last_task: Option<((usize, tokio::task::Id), u64)>,
    next_task: u64,
    /// Tasks in a spin-wait: the re-check after a spin is not activity.
    spinning: BTreeSet<TaskKey>,
    /// Tasks in `yield_now`, until their next point: they step aside, so
    /// they do not count as ready for another thread's priority (as CHESS
    /// and PCT treat a yield: a busy thread that yields lets the threads
    /// it waits for run).
    pub(super) yielding: BTreeSet<TaskKey>,
    /// Per spinning task: the simulated instant and its spins there.
    spins: BTreeMap<TaskKey, (Duration, u64)>,
    /// Bumped by every preemption point and syscall: a round of yields in
    /// which it did not move had no other task doing anything.
    pub(super) activity: u64,
    /// The hosts' threads (tasks spawned with [`spawn`]) and whether each
    /// is ready to run.
    threads: BTreeMap<TaskKey, Arc<ThreadWaker>>,
    /// A switch decided where the task could not await (a lock's release,
    /// in a destructor): taken at the task's next point.
    pub(super) deferred: BTreeMap<TaskKey, Decision>,
    /// Reused by [`Scheduler::others_ready`].
    ready_buf: Vec<TaskKey>,
}

impl Scheduler {
    pub(crate) fn new(seed: u64, plan: &FaultPlan) -> Scheduler {
        let strategies = plan
            .race
            .iter()
            .enumerate()
            .map(|(index, rule)| -> Box<dyn Strategy> {
                match rule {
                    Race::Random {
                        probability,
                        max_yields,
                        max_sleep_us,
                        ..
                    } => Box::new(random::Random::new(
                        *probability,
                        *max_yields,
                        *max_sleep_us,
                    )),
                    Race::Pct { depth, steps, .. } => Box::new(pct::Pct::new(
                        crate::seed::stream(seed, &format!("race/pct/{index}")),
                        crate::seed::stream(seed, &format!("race/pct/{index}/changes")),
                        *depth,
                        *steps,
                    )),
                    Race::Targeted {
                        nth,
                        yields,
                        sleep_us,
                        ..
                    } => Box::new(targeted::Targeted::new(*nth, *yields, *sleep_us)),
                    Race::Schedule { steps, .. } => Box::new(bounded::Bounded::new(steps)),
                }
            })
            .collect();
        Scheduler {
            seed,
            rule_hits: vec![0; plan.race.len()],
            rule_steps: vec![0; plan.race.len()],
            rules: plan.race.clone(),
            strategies,
            points: Vec::new(),
            point_at: BTreeMap::new(),
            point_cache: [None; POINT_CACHE_SLOTS],
            point_named: BTreeMap::new(),
            hosts: Vec::new(),
            tasks: BTreeMap::new(),
            last_task: None,
            next_task: 0,
            spinning: BTreeSet::new(),
            yielding: BTreeSet::new(),
            spins: BTreeMap::new(),
            activity: 0,
            threads: BTreeMap::new(),
            deferred: BTreeMap::new(),
            ready_buf: Vec::new(),
        }
    }

    pub(crate) fn note_activity(&mut self) {
        self.activity += 1;
    }

    /// A spin of the current task at simulated time `now`: answers its
    /// spins at that instant so far.
    pub(crate) fn spin(&mut self, host: Option<Arc<str>>, now: Duration) -> u64 {
        let task = self.task_key(host);
        self.spinning.insert(task);
        let count = self.spins.entry(task).or_insert((now, 0));
        if count.0 != now {
            *count = (now, 0);
        }
        count.1 += 1;
        count.1
    }

    fn host_index(&mut self, host: Option<Arc<str>>) -> usize {
        match host {
            None => usize::MAX,
            Some(name) => match self
                .hosts
                .iter()
                .position(|h| Arc::ptr_eq(h, &name))
                .or_else(|| self.hosts.iter().position(|h| *h == name))
            {
                Some(i) => i,
                None => {
                    self.hosts.push(name);
                    self.hosts.len() - 1
                }
            },
        }
    }

    fn key_of(&mut self, host: usize, id: tokio::task::Id) -> TaskKey {
        if let Some((at, index)) = self.last_task
            && at == (host, id)
        {
            return TaskKey { host, index };
        }
        let next = &mut self.next_task;
        let index = *self.tasks.entry((host, id)).or_insert_with(|| {
            *next += 1;
            *next
        });
        self.last_task = Some(((host, id), index));
        TaskKey { host, index }
    }

    pub(super) fn task_key(&mut self, host: Option<Arc<str>>) -> TaskKey {
        let host = self.host_index(host);
        match tokio::task::try_id() {
            Some(id) => self.key_of(host, id),
            None => TaskKey { host, index: 0 },
        }
    }

    /// The task `id`, just spawned on `host`, is a thread woken through
    /// `waker`.
    pub(super) fn thread_spawned(
        &mut self,
        host: Option<Arc<str>>,
        id: tokio::task::Id,
        waker: Arc<ThreadWaker>,
    ) -> TaskKey {
        let host = self.host_index(host);
        let task = self.key_of(host, id);
        self.threads.insert(task, waker);
        task
    }

    /// A thread ended (or was dropped with its host).
    pub(super) fn thread_ended(&mut self, task: TaskKey) {
        self.threads.remove(&task);
        self.spinning.remove(&task);
        self.yielding.remove(&task);
        self.spins.remove(&task);
        self.deferred.remove(&task);
        for strategy in &mut self.strategies {
            strategy.ended(task);
        }
    }

    /// The other threads of `task`'s host that are ready to run now (a
    /// thread in a spin-wait or a yield is not: it waits for one of them).
    /// (Written into the scheduler's buffer, taken out: no allocation per
    /// hit.)
    fn others_ready(&mut self, task: TaskKey) -> Vec<TaskKey> {
        let mut ready = std::mem::take(&mut self.ready_buf);
        ready.clear();
        let first = TaskKey {
            host: task.host,
            index: 0,
        };
        let threads = self
            .threads
            .range(first..)
            .take_while(|(t, _)| t.host == task.host)
            .filter(|(t, w)| **t != task && w.is_ready());
        if self.spinning.is_empty() && self.yielding.is_empty() {
            // The common case: no lookups per thread.
            ready.extend(threads.map(|(t, _)| *t));
        } else {
            ready.extend(
                threads
                    .filter(|(t, _)| !self.spinning.contains(t) && !self.yielding.contains(t))
                    .map(|(t, _)| *t),
            );
        }
        ready
    }

    /// A hit of `primitive.op` by the current task: counts it and decides.
    pub(super) fn hit(
        &mut self,
        primitive: &'static str,
        op: &'static str,
        host: Option<Arc<str>>,
    ) -> Option<Decision> {
        if self.rules.is_empty() {
            // No rule can act: only the activity counts.
            self.activity += 1;
            return None;
        }
        let task = self.task_key(host);
        self.yielding.remove(&task);
        if !self.spinning.remove(&task) {
            // (A spin-wait's re-check is the same wait going on.)
            self.activity += 1;
        }
        let index = self.point_index(primitive, op);
        let point = &mut self.points[index];
        point.hits += 1;
        if point.rules.is_empty() {
            return None;
        }
        let ready = self.others_ready(task);
        let point = &mut self.points[index];
        let rule = point.rules[0];
        for &r in &point.rules {
            // Every matching rule counts the hit and the step; the first
            // one decides.
            self.rule_hits[r] += 1;
            if !ready.is_empty() {
                self.rule_steps[r] += 1;
            }
        }
        let action = self.strategies[rule].decide(Hit {
            point: &point.name,
            point_hits: point.hits,
            step: (!ready.is_empty()).then_some(self.rule_steps[rule]),
            task,
            ready: &ready,
            rng: &mut point.rng,
        });
        self.ready_buf = ready;
        if action == Action::Continue {
            return None;
        }
        if action != Action::Priority {
            point.yields += 1;
            tracing::debug!(target: "faultline::fault", point = point.name.as_str(), action = ?action, "preempted");
        }
        Some(Decision {
            rule,
            point: index,
            task,
            action,
        })
    }

    /// The index of point `primitive.op`, made at its first hit.
    pub(super) fn point_index(&mut self, primitive: &'static str, op: &'static str) -> usize {
        let at = (
            primitive.as_ptr() as usize,
            primitive.len(),
            op.as_ptr() as usize,
            op.len(),
        );
        // (Fibonacci hashing of both addresses: strings lie close together.)
        let mixed = (at.0 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (at.2 as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        let slot = (mixed >> (64 - POINT_CACHE_SLOTS.trailing_zeros())) as usize;
        if let Some((cached, index)) = self.point_cache[slot]
            && cached == at
        {
            return index;
        }
        if let Some(&index) = self.point_at.get(&at) {
            self.point_cache[slot] = Some((at, index));
            return index;
        }
        let name = format!("{primitive}.{op}");
        let index = match self.point_named.get(&name) {
            Some(&index) => index,
            None => {
                let rules = (0..self.rules.len())
                    .filter(|&r| glob_match(self.rules[r].point(), &name))
                    .collect();
                self.points.push(PointState {
                    rules,
                    rng: crate::seed::stream(self.seed, &format!("race/{name}")),
                    name: name.clone(),
                    hits: 0,
                    yields: 0,
                    starved: 0,
                });
                self.point_named.insert(name, self.points.len() - 1);
                self.points.len() - 1
            }
        };
        self.point_at.insert(at, index);
        self.point_cache[slot] = Some((at, index));
        index
    }

    pub(super) fn may_continue(&mut self, rule: usize, task: TaskKey) -> bool {
        let ready = self.others_ready(task);
        let go = self.strategies[rule].may_continue(task, &ready);
        self.ready_buf = ready;
        go
    }

    pub(super) fn gave_way(&mut self, point: usize, starved: bool) {
        if let Some(state) = self.points.get_mut(point) {
            if starved {
                state.starved += 1;
            } else {
                state.yields += 1;
                tracing::debug!(target: "faultline::fault", point = state.name.as_str(), "waited for priority");
            }
        }
    }

    /// Per point: `race:NAME` hits, `race-yield:NAME` times a task gave
    /// way there, `race-starved:NAME` waits for priority cut short; per
    /// rule that matched a point, `applied:race:GLOB` hits and
    /// `race-steps:GLOB` steps.
    pub(crate) fn coverage(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for ((rule, hits), steps) in self.rules.iter().zip(&self.rule_hits).zip(&self.rule_steps) {
            if *hits > 0 {
                out.push((coverage::race_applied(rule.point()), *hits));
                out.push((coverage::race_steps(rule.point()), *steps));
            }
        }
        for point in &self.points {
            out.push((coverage::race_hits(&point.name), point.hits));
            if point.yields > 0 {
                out.push((coverage::race_yields(&point.name), point.yields));
            }
            if point.starved > 0 {
                out.push((coverage::race_starved(&point.name), point.starved));
            }
        }
        out
    }
}

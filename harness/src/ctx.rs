//! The run context: everything one simulation run shares.
//!
//! turmoil runs every host of a simulation on the calling thread, so the
//! context is a thread-local, set by the runner for the length of one run
//! (as turmoil's own `World` is). Code of the system under test reaches it
//! through the free functions of this crate (`switch`, `probe`, `event`,
//! the oracles) and the primitives of `sync`; outside a simulation they cost one
//! thread-local read and do nothing.

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use rand::Rng;

use crate::coverage;
use crate::faults::{FaultPlan, glob_match};
use crate::seed::{self, SimRng};

/// Splits the bytes of a connection into frames, so that faults can act on
/// messages. The system under test supplies one per run (its protocol's
/// framing); the harness never interprets a frame beyond its label.
pub trait Framer {
    /// How many bytes of a frame's start [`Framer::parse`] needs.
    fn header_len(&self) -> usize;
    /// Given the first `header_len()` bytes of a frame: its total length in
    /// bytes and a label such as `res:ADD_STREAM`. `None` when these bytes
    /// are not a frame of this protocol: the connection is left unframed.
    fn parse(&self, header: &[u8]) -> Option<FrameInfo>;
}

/// What [`Framer::parse`] learns from a frame's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// The frame's whole length in bytes, header included (at least
    /// [`Framer::header_len`]).
    pub total_len: usize,
    /// The frame's label, e.g. `res:ADD_STREAM`: what frame-delay rules match
    /// and traces name.
    pub label: String,
}

/// Named events that frame holds wait for.
#[derive(Default)]
pub(crate) struct EventMarks {
    happened: BTreeMap<String, u64>,
    waiters: Vec<std::task::Waker>,
}

impl EventMarks {
    pub(crate) fn mark(&mut self, name: &str) {
        *self.happened.entry(name.to_string()).or_insert(0) += 1;
        for waker in self.waiters.drain(..) {
            waker.wake();
        }
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.happened.contains_key(name)
    }

    pub(crate) fn wait(&mut self, waker: &std::task::Waker) {
        if !self.waiters.iter().any(|w| w.will_wake(waker)) {
            self.waiters.push(waker.clone());
        }
    }
}

/// State of the plan's switches: how often each was asked.
#[derive(Default)]
struct Switches {
    asked: BTreeMap<(usize, String), u32>,
}

/// One run's shared state. Its fields are private: a later layer asks for
/// what it needs through one method per thing, and keeps its own state (the
/// network's connections, the oracles', the scheduler's, the trace's) as a
/// [`RunCtx::part`], which the world holds without knowing its type, so the
/// world imports nothing from the layers above it.
pub(crate) struct RunCtx {
    seed: u64,
    plan: FaultPlan,
    streams: RefCell<BTreeMap<String, SimRng>>,
    coverage: RefCell<BTreeMap<String, u64>>,
    events: RefCell<EventMarks>,
    framer: RefCell<Option<Rc<dyn Framer>>>,
    switches: RefCell<Switches>,
    /// Hosts whose software a process crash holds down.
    processes_down: RefCell<BTreeSet<String>>,
    /// Simulated time at the last step boundary (runner-maintained); used
    /// when no host is running.
    step_elapsed: Cell<Duration>,
    /// The host turmoil is running now (tracked from its `node` span).
    current_host: RefCell<Option<std::sync::Arc<str>>>,
    /// Monotonic id source for connections and other objects.
    next_id: Cell<u64>,
    /// The later layers' state, one `RefCell<T>` per type, installed by the
    /// runner before the run starts (a handful: a scan beats a map).
    parts: Vec<(TypeId, Box<dyn Any>)>,
}

thread_local! {
    static CTX: RefCell<Option<Rc<RunCtx>>> = const { RefCell::new(None) };
}

impl RunCtx {
    pub(crate) fn new(seed: u64, plan: FaultPlan) -> RunCtx {
        RunCtx {
            seed,
            plan,
            streams: RefCell::new(BTreeMap::new()),
            coverage: RefCell::new(BTreeMap::new()),
            events: RefCell::new(EventMarks::default()),
            framer: RefCell::new(None),
            switches: RefCell::new(Switches::default()),
            processes_down: RefCell::new(BTreeSet::new()),
            step_elapsed: Cell::new(Duration::ZERO),
            current_host: RefCell::new(None),
            next_id: Cell::new(1),
            parts: Vec::new(),
        }
    }

    /// Adds a later layer's state. Each type once.
    pub(crate) fn with_part<T: 'static>(mut self, part: T) -> RunCtx {
        let id = TypeId::of::<T>();
        assert!(
            self.parts.iter().all(|(t, _)| *t != id),
            "a run context part of type {} is installed twice",
            std::any::type_name::<T>()
        );
        self.parts.push((id, Box::new(RefCell::new(part))));
        self
    }

    /// A later layer's state, installed with [`RunCtx::with_part`].
    pub(crate) fn part<T: 'static>(&self) -> &RefCell<T> {
        let id = TypeId::of::<T>();
        let (_, part) = self
            .parts
            .iter()
            .find(|(t, _)| *t == id)
            .unwrap_or_else(|| {
                panic!("no run context part of type {}", std::any::type_name::<T>())
            });
        part.downcast_ref::<RefCell<T>>()
            .expect("stored under its own TypeId")
    }

    /// Takes a part back when the run is over (the trace, for its hash).
    pub(crate) fn into_part<T: 'static>(self) -> T {
        let id = TypeId::of::<T>();
        let (_, part) = self
            .parts
            .into_iter()
            .find(|(t, _)| *t == id)
            .unwrap_or_else(|| {
                panic!("no run context part of type {}", std::any::type_name::<T>())
            });
        part.downcast::<RefCell<T>>()
            .expect("stored under its own TypeId")
            .into_inner()
    }

    /// The run's fault plan.
    pub(crate) fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// The framer the system under test installed, if any.
    pub(crate) fn framer(&self) -> Option<Rc<dyn Framer>> {
        self.framer.borrow().clone()
    }

    /// The named events that have happened, and tasks waiting for one.
    pub(crate) fn events(&self) -> std::cell::RefMut<'_, EventMarks> {
        self.events.borrow_mut()
    }

    /// The coverage counted so far (probes, events, applied faults).
    pub(crate) fn coverage(&self) -> BTreeMap<String, u64> {
        self.coverage.borrow().clone()
    }

    /// Sets the host turmoil runs now (`None` between hosts).
    pub(crate) fn set_host(&self, host: Option<std::sync::Arc<str>>) {
        *self.current_host.borrow_mut() = host;
    }

    /// Sets the simulated time of the step boundary (the runner's clock
    /// when no host is running).
    pub(crate) fn set_step_elapsed(&self, now: Duration) {
        self.step_elapsed.set(now);
    }

    /// The simulated time of the last step boundary.
    pub(crate) fn step_elapsed(&self) -> Duration {
        self.step_elapsed.get()
    }

    /// Marks `host`'s software as held down by a process crash (or not).
    pub(crate) fn set_process_down(&self, host: &str, down: bool) {
        let mut set = self.processes_down.borrow_mut();
        if down {
            set.insert(host.to_string());
        } else {
            set.remove(host);
        }
    }

    pub(crate) fn next_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    pub(crate) fn with_rng<R>(&self, name: &str, f: impl FnOnce(&mut SimRng) -> R) -> R {
        let mut streams = self.streams.borrow_mut();
        if !streams.contains_key(name) {
            streams.insert(name.to_string(), seed::stream(self.seed, name));
        }
        f(streams.get_mut(name).expect("inserted above"))
    }

    pub(crate) fn cover(&self, point: &str) {
        let mut coverage = self.coverage.borrow_mut();
        match coverage.get_mut(point) {
            Some(n) => *n += 1,
            None => {
                coverage.insert(point.to_string(), 1);
            }
        }
    }

    pub(crate) fn host(&self) -> Option<std::sync::Arc<str>> {
        self.current_host.borrow().clone()
    }

    pub(crate) fn now(&self) -> Duration {
        turmoil::sim_elapsed().unwrap_or_else(|| self.step_elapsed.get())
    }
}

/// Installs `ctx` as this thread's run context until the guard drops.
pub(crate) struct CtxGuard;

pub(crate) fn enter(ctx: Rc<RunCtx>) -> CtxGuard {
    CTX.with(|c| {
        let mut slot = c.borrow_mut();
        assert!(
            slot.is_none(),
            "a simulation run is already active on this thread"
        );
        *slot = Some(ctx);
    });
    CtxGuard
}

impl Drop for CtxGuard {
    fn drop(&mut self) {
        CTX.with(|c| c.borrow_mut().take());
    }
}

/// Whether a process crash holds `host`'s software down now.
pub(crate) fn process_down(host: &str) -> bool {
    with(|ctx| ctx.processes_down.borrow().contains(host)).unwrap_or(false)
}

/// Runs `f` with the current run context; `None` outside a simulation.
pub(crate) fn with<R>(f: impl FnOnce(&RunCtx) -> R) -> Option<R> {
    CTX.with(|c| c.borrow().as_ref().map(|ctx| f(ctx)))
}

pub(crate) fn current() -> Option<Rc<RunCtx>> {
    CTX.with(|c| c.borrow().clone())
}

// ---------------------------------------------------------------------------
// The public surface for code under test.
// ---------------------------------------------------------------------------

/// Whether the caller runs inside a faultline simulation.
pub fn in_sim() -> bool {
    CTX.with(|c| c.borrow().is_some())
}

/// The simulated time since the start of the run (zero outside a simulation).
pub fn now() -> Duration {
    with(|ctx| ctx.now()).unwrap_or(Duration::ZERO)
}

/// The name of the host running now, if any.
pub fn current_host() -> Option<String> {
    with(|ctx| ctx.host().map(|h| h.to_string())).flatten()
}

/// Draws from the named random stream of this run. Outside a simulation the
/// stream is seeded with 0 (the code still runs; it is just not replayable).
pub fn with_rng<R>(name: &str, f: impl FnOnce(&mut SimRng) -> R) -> R {
    match current() {
        Some(ctx) => ctx.with_rng(name, f),
        None => f(&mut seed::stream(0, name)),
    }
}

/// Counts a "sometimes" probe: a place worth reaching. A sweep reports how
/// many runs reached each probe, so a scenario that never reaches its
/// trigger is visible.
pub fn probe(name: &str) {
    with(|ctx| ctx.cover(&coverage::probe(name)));
}

/// Marks a named event (frame holds can wait for it).
pub fn event(name: &str) {
    with(|ctx| {
        ctx.cover(&coverage::event(name));
        ctx.events().mark(name)
    });
}

/// Asks whether the plan switches the named misbehaviour on for this host,
/// now. Each ask draws from the run's seed. Always `false` outside a
/// simulation and when the plan has no such switch.
pub fn switch(name: &str) -> bool {
    with(|ctx| {
        let host = ctx.host();
        let host = host.as_deref().unwrap_or("");
        let mut on = false;
        for (index, s) in ctx.plan().switch.iter().enumerate() {
            if s.name != name {
                continue;
            }
            ctx.cover(&coverage::switch_applied(name));
            if !glob_match(&s.host, host) {
                continue;
            }
            let asked = {
                let mut switches = ctx.switches.borrow_mut();
                let n = switches.asked.entry((index, host.to_string())).or_insert(0);
                *n += 1;
                *n
            };
            let hit = match s.nth {
                Some(nth) => asked == nth,
                None => {
                    s.rate >= 1.0
                        || ctx.with_rng(&format!("switch/{name}"), |rng| rng.random_bool(s.rate))
                }
            };
            if hit {
                on = true;
            }
        }
        if on {
            ctx.cover(&coverage::switch_asked(name));
            tracing::debug!(target: "faultline::fault", switch = name, host, "switch on");
        }
        on
    })
    .unwrap_or(false)
}

/// Installs the framer that frame faults use to find messages in byte
/// streams. Call it while building the simulation.
pub fn set_framer(framer: Rc<dyn Framer>) {
    with(|ctx| *ctx.framer.borrow_mut() = Some(framer));
}

//! The pollers: one task per proxy *thread*, each with its own epoll fd
//! (HAProxy's `run_poll_loop` over `ev_epoll.c`): accepted connections,
//! timers, checks, tasklets, closes, polling updates, then wait, and run
//! the handlers of what was reported.
//!
//! The top of the proxy: it calls every handler, and nothing calls it but
//! [`run_proxy`] and whoever runs a [`Proxy`].

use std::rc::Rc;
use std::time::Duration;

use faultline_harness::sys::EpollOp;
use faultline_harness::sys::Syscalls;
use faultline_harness::{sys::Events, sys::Fd};
use tokio::time::Instant;

use super::config::ProxyConfig;
use super::conn::ConnId;
use super::fd::{self, Owner, Report, bit};
use super::process::Proxy;
use super::role::{Kind, Role};
use super::{check, client, idle, listener, server, timeout};

/// Most events one `epoll_wait` returns.
pub const MAX_EVENTS: usize = 64;

/// Handler runs one pass of a thread's loop may do before polling again.
const MAX_WAKES_PER_PASS: usize = 1024;

/// What a thread's close callback answers (see [`fd::Close`]).
type CloseFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

impl<S: Syscalls + 'static> Proxy<S> {
    /// Runs the threads until they fail (they do not end otherwise). Call
    /// inside a `LocalSet` (a simulated host is one).
    pub async fn run(self: &Rc<Self>) -> std::io::Result<()> {
        let mut handles = Vec::new();
        for tid in 0..self.config.threads {
            let px = self.clone();
            handles.push(faultline_harness::spawn(async move {
                px.thread_loop(tid).await;
            }));
        }
        for h in handles {
            h.await.map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    /// One thread's loop: accepted connections, timers, handlers, closes,
    /// updates, poll.
    async fn thread_loop(self: Rc<Self>, tid: usize) {
        let me = tokio::task::try_id().expect("a proxy thread is a task");
        assert!(
            self.threads[tid].task.set(me).is_ok(),
            "thread {tid} starts once"
        );
        let epfd = self.threads[tid].epfd;
        let close = |fd: Fd| -> CloseFuture<'_> { Box::pin(self.close_fd(fd)) };
        loop {
            listener::run_accept_queue(&self, tid).await;
            timeout::run_timers(&self, tid).await;
            if tid == 0 && self.config.check.enabled {
                check::start_due_checks(&self, tid).await;
            }
            self.run_wakes(tid).await;
            self.run_closes(tid).await;
            self.apply_updates(tid).await;
            let timeout = {
                let st = self.state();
                if !st.wake.is_empty() || !st.closing.is_empty() {
                    Some(Duration::ZERO)
                } else {
                    let mut next = st.timers.first().map(|(at, _)| *at);
                    if tid == 0 && self.config.check.enabled {
                        let check = st.next_check.iter().min().copied();
                        next = match (next, check) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                    }
                    next.map(|at| at.saturating_duration_since(Instant::now()))
                }
            };
            let polled = tokio::select! {
                biased;
                polled = self.sys.epoll_wait(epfd, MAX_EVENTS, timeout) => polled,
                () = self.threads[tid].notify.notified() => Ok(Vec::new()),
            };
            let events = match polled {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(target: "faultline::proxy", thread = tid, error = %e, "epoll_wait failed");
                    return;
                }
            };
            let busy = !events.is_empty();
            for event in events {
                let report = self
                    .fdtab
                    .update_events(event.fd, tid, event.events, event.data, &close)
                    .await;
                if report != Report::Handle {
                    continue;
                }
                match self.fdtab.entry(event.fd).owner() {
                    Some(Owner::Listener) => listener::accept(&self, tid, event.fd).await,
                    Some(Owner::Conn(id)) => self.io_handler(tid, id, event.events).await,
                    None => {}
                }
                self.fdtab.done_events(event.fd, tid, &close).await;
                self.run_wakes(tid).await;
                self.run_closes(tid).await;
            }
            if busy {
                // Threads run in parallel: after a pass with work, the
                // others get their turn (tasks of one host run in turn).
                faultline_harness::yield_now().await;
            }
        }
    }

    /// Closes an fd that left the table.
    async fn close_fd(&self, fd: Fd) {
        if let Err(e) = self.sys.close(fd).await {
            tracing::warn!(target: "faultline::proxy", fd, error = %e, "close failed");
        }
    }

    /// A poller reported `events` for connection `id`.
    async fn io_handler(&self, tid: usize, id: ConnId, events: Events) {
        let key = format!("proxy conn {id}");
        faultline_harness::oracle::busy_wakeup(&key);
        let progress = self.process(tid, id, Some(events)).await;
        if progress {
            faultline_harness::oracle::busy_progress(&key);
        }
    }

    /// Runs a connection's handler. Answers whether it made progress.
    pub async fn process(&self, tid: usize, id: ConnId, events: Option<Events>) -> bool {
        if !idle::reclaim(self, tid, id, None).await {
            return false;
        }
        let kind = {
            let st = self.state();
            match st.conns.get(&id) {
                Some(c) if !c.closing => {
                    assert_eq!(c.c.thread, tid, "conn {id}: in thread {tid}'s state");
                    c.role.kind()
                }
                _ => return false,
            }
        };
        match kind {
            Kind::Client => client::process_client(self, tid, id).await,
            Kind::Server => server::process_server(self, tid, id, events).await,
            Kind::Check => check::process_check(self, tid, id, events).await,
        }
    }

    async fn run_wakes(&self, tid: usize) {
        for _ in 0..MAX_WAKES_PER_PASS {
            let next = self.state().wake.pop_first();
            let Some(id) = next else {
                return;
            };
            self.process(tid, id, None).await;
        }
    }

    /// Closes the connections scheduled for closing: transport first, then
    /// the control layer (the fd leaves the table and is closed).
    async fn run_closes(&self, tid: usize) {
        let close = |fd: Fd| -> CloseFuture<'_> { Box::pin(self.close_fd(fd)) };
        loop {
            let next = self.state().closing.pop();
            let Some(id) = next else {
                return;
            };
            let fd = {
                let mut st = self.state();
                st.set_timer(id, None);
                st.wake.remove(&id);
                let Some(conn) = st.conns.get_mut(&id) else {
                    continue;
                };
                conn.c.xprt_close();
                conn.c.must_close_ctrl().then_some(conn.c.fd)
            };
            if let Some(fd) = fd {
                self.fdtab.delete(fd, tid, &close).await;
            }
            let removed = self.state().conns.remove(&id);
            if let Some(mut conn) = removed {
                if conn.c.ctrl_ready() {
                    conn.c.ctrl_closed();
                }
                if let Role::Client(cl) = &mut conn.role {
                    if let Some(pipe) = cl.pipe.take() {
                        pipe.put(&self.sys).await;
                    }
                }
                tracing::debug!(target: "faultline::proxy", thread = tid, conn = id, fd = ?fd, errno = ?conn.c.errno, "closed");
            }
        }
    }

    /// Applies this thread's pending polling updates to its poller: its own
    /// list, then the shared one (HAProxy's `_do_poll` before it waits).
    async fn apply_updates(&self, tid: usize) {
        let epfd = self.threads[tid].epfd;
        for fd in self.fdtab.take_updates(tid) {
            let e = self.fdtab.entry(fd);
            if !self.fdtab.grab_tgid(&e).await {
                // Closed meanwhile: nothing to poll (its bit stays until
                // the fd is deleted again).
                tracing::trace!(target: "faultline::proxy", thread = tid, fd, "update of a closed fd dropped");
                continue;
            }
            e.update_mask.fetch_and(!bit(tid)).await;
            if e.owner().is_some() {
                self.update_fd(tid, epfd, fd, &e).await;
            }
            self.fdtab.drop_tgid(&e).await;
        }
        for fd in self.fdtab.shared_updates().await {
            let e = self.fdtab.entry(fd);
            if !self.fdtab.grab_tgid(&e).await {
                continue;
            }
            if e.update_mask.load().await & bit(tid) == 0 {
                self.fdtab.drop_tgid(&e).await;
                continue;
            }
            self.fdtab.done_update_polling(&e, fd, tid).await;
            if e.owner().is_some() {
                self.update_fd(tid, epfd, fd, &e).await;
            }
            self.fdtab.drop_tgid(&e).await;
        }
    }

    /// Brings thread `tid`'s poller in line with what `fd` wants now.
    async fn update_fd(&self, tid: usize, epfd: Fd, fd: Fd, e: &fd::FdEntry) {
        let interest = self.fdtab.interest(e, tid).await;
        let registered = e.registered(tid).await;
        let op = match (interest, registered) {
            (None, Some(_)) => Some((EpollOp::Del, Events::NONE)),
            (None, None) => None,
            (Some(i), Some(r)) if i == r => None,
            // No direction wanted: out of the poller, as `_update_fd`
            // does with EPOLL_CTL_DEL (a registration with an empty mask
            // would still report ERR and HUP).
            (Some(i), Some(_)) if i.is_empty() => Some((EpollOp::Del, Events::NONE)),
            (Some(i), Some(_)) => Some((EpollOp::Mod, i)),
            (Some(i), None) if i.is_empty() => None,
            (Some(i), None) => Some((EpollOp::Add, i)),
        };
        let Some((op, events)) = op else {
            return;
        };
        tracing::trace!(target: "faultline::proxy", thread = tid, fd, ?op, ?events, "poll update");
        // The polled mask first, then the syscall, as `_update_fd` does.
        e.set_registered(tid, (op != EpollOp::Del).then_some(events))
            .await;
        match self
            .sys
            .epoll_ctl(epfd, op, fd, events, e.generation(), false)
            .await
        {
            Ok(()) => {}
            Err(err) => {
                tracing::warn!(target: "faultline::proxy", thread = tid, fd, ?op, error = %err, "epoll_ctl failed");
            }
        }
    }
}

/// Starts a proxy: listens, then runs its threads (never returns unless a
/// thread fails). Call inside a `LocalSet`.
pub async fn run_proxy<S: Syscalls + 'static>(sys: S, config: ProxyConfig) -> std::io::Result<()> {
    let proxy = Proxy::new(sys, config)
        .await
        .map_err(std::io::Error::other)?;
    proxy
        .listen()
        .await
        .map_err(|e| std::io::Error::other(format!("listen: {e}")))?;
    proxy.run().await
}

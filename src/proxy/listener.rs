//! The listener: accepting client connections and handing each to a
//! thread (HAProxy's `listener.c`), and a thread starting the ones it was
//! handed.

use std::time::Duration;

use faultline_harness::{sys::Errno, sys::Fd, sys::Syscalls};
use tokio::time::Instant;

use super::conn::Connection;
use super::fd::{Owner, ThreadMask, bit};
use super::process::Proxy;
use super::role::{ClientSide, Conn, Role};

fn all_threads(threads: usize) -> ThreadMask {
    (0..threads).fold(0, |m, t| m | bit(t))
}

impl<S: Syscalls + 'static> Proxy<S> {
    /// Listens on the configured port; every thread polls the listener.
    pub async fn listen(&self) -> Result<(), Errno> {
        let lfd = self.sys.listen(self.config.listen_port).await?;
        self.fdtab
            .insert(lfd, Owner::Listener, all_threads(self.config.threads))
            .await;
        self.fdtab.want_recv(lfd, 0).await;
        assert!(self.listener.set(lfd).is_ok(), "listen is called once");
        tracing::debug!(target: "faultline::proxy", fd = lfd, port = self.config.listen_port, "listening");
        Ok(())
    }
}

/// The listener is readable on thread `tid`: accept what is pending.
/// Each new connection goes to the next thread in turn, through that
/// thread's accept queue (HAProxy's `listener_accept` defers even its
/// own thread's), and that thread is woken.
pub(super) async fn accept<S: Syscalls + 'static>(px: &Proxy<S>, tid: usize, lfd: Fd) {
    for _ in 0..px.config.max_accept {
        match px.sys.accept(lfd).await {
            Ok((fd, peer)) => {
                let threads = px.config.threads;
                let owner = px.next_accept_thread.update(|t| (t + 1) % threads).await;
                let th = &px.threads[owner];
                th.accept_queue.lock().await.push_back((fd, peer));
                th.accept_woken.store(true).await;
                if owner != tid {
                    th.notify.notify_one().await;
                }
                tracing::trace!(target: "faultline::proxy", thread = tid, owner, fd, "queued for its thread");
            }
            Err(Errno::EAGAIN) => return,
            Err(e) => {
                tracing::warn!(target: "faultline::proxy", thread = tid, error = %e, "accept failed");
                return;
            }
        }
    }
}

/// Takes the connections accepted for this thread from its queue and
/// starts them (HAProxy's `accept_queue_process`, run when its
/// tasklet was woken).
pub(super) async fn run_accept_queue<S: Syscalls + 'static>(px: &Proxy<S>, tid: usize) {
    let th = &px.threads[tid];
    if !th.accept_woken.load().await {
        return;
    }
    th.accept_woken.store(false).await;
    for _ in 0..px.config.max_accept {
        let next = th.accept_queue.lock().await.pop_front();
        let Some((fd, peer)) = next else {
            return;
        };
        let id = px.state().new_conn_id();
        let mut c = Connection::new(id, tid);
        c.ctrl_init(&px.fdtab, fd, bit(tid)).await;
        c.xprt_init();
        let mut st = px.state();
        st.conns.insert(
            id,
            Conn {
                c,
                role: Role::Client(ClientSide::new(px.config.buffer_bytes)),
                expire: None,
                closing: false,
            },
        );
        let expire = Instant::now() + Duration::from_millis(px.config.client_timeout_ms);
        st.set_timer(id, Some(expire));
        st.wake(id);
        tracing::debug!(target: "faultline::proxy", thread = tid, conn = id, fd, %peer, "accepted");
    }
    // Out of budget: again on the next pass.
    th.accept_woken.store(true).await;
}

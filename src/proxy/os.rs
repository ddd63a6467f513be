//! The real kernel behind the [`Syscalls`] API (Linux), for `faultline
//! proxy`: non-blocking IPv4 TCP sockets, pipes, splice and epoll through
//! libc. An epoll fd is itself pollable, so `epoll_wait` waits for it
//! through tokio's reactor (`AsyncFd`) and then asks it without blocking:
//! the proxy's threads stay tasks of one current-thread runtime, as in a
//! simulation.
//!
//! Never used inside a simulation.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use faultline_harness::sys::{EpollEvent, EpollOp, Shutdown, Syscalls};
use faultline_harness::{sys::Errno, sys::Events, sys::Fd};
use tokio::io::unix::AsyncFd;

/// An fd tokio may watch; closing stays ours.
struct Watched(RawFd);

impl AsRawFd for Watched {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The real kernel (see the module docs). Cheap to clone.
#[derive(Clone, Default)]
pub struct OsSys {
    pollers: Rc<RefCell<BTreeMap<Fd, Rc<AsyncFd<Watched>>>>>,
    /// (epfd, fd) -> the caller's data: the kernel's report carries the fd
    /// (it is what the registration stores), the caller's data comes from here.
    data: Rc<RefCell<BTreeMap<(Fd, Fd), u64>>>,
}

impl OsSys {
    pub fn new() -> OsSys {
        OsSys::default()
    }

    /// The port a socket is bound to (`getsockname`), e.g. after listening
    /// on port 0.
    pub fn local_port(&self, fd: Fd) -> Result<u16, Errno> {
        // SAFETY: zeroed sockaddr_in is valid; the kernel writes at most `len` bytes.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        check(unsafe {
            libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_in).cast(), &mut len)
        })?;
        Ok(u16::from_be(sa.sin_port))
    }
}

fn errno() -> Errno {
    Errno::from_io(&io::Error::last_os_error()).normalised()
}

trait Normalise {
    fn normalised(self) -> Errno;
}

impl Normalise for Errno {
    /// `from_io` knows only the common kinds: name the others too.
    fn normalised(self) -> Errno {
        match self {
            Errno::Other(n) if n == libc::EINPROGRESS => Errno::EINPROGRESS,
            Errno::Other(n) if n == libc::EALREADY => Errno::EALREADY,
            Errno::Other(n) if n == libc::EISCONN => Errno::EISCONN,
            Errno::Other(n) if n == libc::EBADF => Errno::EBADF,
            Errno::Other(n) if n == libc::ENOTSOCK => Errno::ENOTSOCK,
            Errno::Other(n) if n == libc::EMFILE => Errno::EMFILE,
            Errno::Other(n) if n == libc::ENOTCONN => Errno::ENOTCONN,
            other => other,
        }
    }
}

fn errno_of(code: i32) -> Errno {
    Errno::from_io(&io::Error::from_raw_os_error(code)).normalised()
}

fn check(ret: libc::c_int) -> Result<libc::c_int, Errno> {
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

fn sockaddr_v4(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn set_int_option(fd: Fd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: `value` outlives the call and its size is passed.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn new_socket() -> Result<Fd, Errno> {
    // SAFETY: plain syscall, no pointers.
    check(unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })
}

fn to_epoll(events: Events, edge: bool) -> u32 {
    // The harness's event bits are Linux's.
    let mut bits = events.0;
    if edge {
        bits |= libc::EPOLLET as u32;
    }
    bits
}

impl Syscalls for OsSys {
    async fn socket(&self) -> Result<Fd, Errno> {
        new_socket()
    }

    async fn connect(&self, fd: Fd, addr: SocketAddr) -> Result<(), Errno> {
        let SocketAddr::V4(v4) = addr else {
            return Err(Errno::EINVAL);
        };
        set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        let sa = sockaddr_v4(v4);
        // SAFETY: `sa` is a valid sockaddr_in and its size is passed.
        check(unsafe {
            libc::connect(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        })
        .map(|_| ())
    }

    async fn listen(&self, port: u16) -> Result<Fd, Errno> {
        let fd = new_socket()?;
        set_int_option(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
        let sa = sockaddr_v4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
        // SAFETY: `sa` is a valid sockaddr_in and its size is passed.
        let bound = check(unsafe {
            libc::bind(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        })
        // SAFETY: plain syscall.
        .and_then(|_| check(unsafe { libc::listen(fd, 1024) }));
        if let Err(e) = bound {
            // SAFETY: `fd` is ours.
            unsafe { libc::close(fd) };
            return Err(e);
        }
        Ok(fd)
    }

    async fn accept(&self, fd: Fd) -> Result<(Fd, SocketAddr), Errno> {
        // SAFETY: zeroed sockaddr_in is valid; accept4 writes at most `len` bytes.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let new = check(unsafe {
            libc::accept4(
                fd,
                (&mut sa as *mut libc::sockaddr_in).cast(),
                &mut len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        })?;
        set_int_option(new, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        let ip = Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
        let peer = SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sa.sin_port)));
        Ok((new, peer))
    }

    async fn recv(&self, fd: Fd, buf: &mut [u8]) -> Result<usize, Errno> {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 { Err(errno()) } else { Ok(n as usize) }
    }

    async fn sendv(&self, fd: Fd, bufs: &[IoSlice<'_>]) -> Result<usize, Errno> {
        // SAFETY: a zeroed msghdr is valid; IoSlice is ABI-compatible with iovec.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len() as _;
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
        if n < 0 { Err(errno()) } else { Ok(n as usize) }
    }

    fn take_error(&self, fd: Fd) -> Result<Option<Errno>, Errno> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` outlive the call.
        check(unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        })?;
        Ok((value != 0).then(|| errno_of(value)))
    }

    fn shutdown(&self, fd: Fd, how: Shutdown) -> Result<(), Errno> {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        // SAFETY: plain syscall.
        check(unsafe { libc::shutdown(fd, how) }).map(|_| ())
    }

    async fn close(&self, fd: Fd) -> Result<(), Errno> {
        // Stop tokio watching an epoll fd before it is closed; a closed fd
        // leaves every epoll set.
        self.pollers.borrow_mut().remove(&fd);
        self.data
            .borrow_mut()
            .retain(|(ep, f), _| *ep != fd && *f != fd);
        // SAFETY: plain syscall.
        check(unsafe { libc::close(fd) }).map(|_| ())
    }

    async fn pipe(&self) -> Result<(Fd, Fd), Errno> {
        let mut fds: [libc::c_int; 2] = [-1; 2];
        // SAFETY: `fds` has room for the two fds pipe2 writes.
        check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
        Ok((fds[0], fds[1]))
    }

    async fn splice(&self, from: Fd, to: Fd, max_bytes: usize) -> Result<usize, Errno> {
        // SAFETY: plain syscall; null offsets: neither a pipe nor a socket
        // has a position.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                max_bytes,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 { Err(errno()) } else { Ok(n as usize) }
    }

    async fn epoll_create(&self) -> Result<Fd, Errno> {
        // SAFETY: plain syscall.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: the epoll fd stays open while registered: `close` drops
        // the registration first.
        let watched =
            unsafe { AsyncFd::register_with_interest(Watched(fd), tokio::io::Interest::READABLE) }
                .map_err(|e| Errno::from_io(&io::Error::from(e)))?;
        self.pollers.borrow_mut().insert(fd, Rc::new(watched));
        Ok(fd)
    }

    async fn epoll_ctl(
        &self,
        epfd: Fd,
        op: EpollOp,
        fd: Fd,
        events: Events,
        data: u64,
        edge: bool,
    ) -> Result<(), Errno> {
        let code = match op {
            EpollOp::Add => libc::EPOLL_CTL_ADD,
            EpollOp::Mod => libc::EPOLL_CTL_MOD,
            EpollOp::Del => libc::EPOLL_CTL_DEL,
        };
        let mut ev = libc::epoll_event {
            events: to_epoll(events, edge),
            u64: fd as u64,
        };
        // SAFETY: `ev` outlives the call.
        check(unsafe { libc::epoll_ctl(epfd, code, fd, &mut ev) })?;
        let mut registered = self.data.borrow_mut();
        if op == EpollOp::Del {
            registered.remove(&(epfd, fd));
        } else {
            registered.insert((epfd, fd), data);
        }
        Ok(())
    }

    async fn epoll_wait(
        &self,
        epfd: Fd,
        max_events: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<EpollEvent>, Errno> {
        assert!(max_events > 0, "epoll_wait needs room for one event");
        let watched = self
            .pollers
            .borrow()
            .get(&epfd)
            .cloned()
            .ok_or(Errno::EBADF)?;
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let ready = self.poll_now(epfd, max_events)?;
            if !ready.is_empty() || timeout == Some(Duration::ZERO) {
                return Ok(ready);
            }
            let readable = watched.readable();
            let mut guard = match deadline {
                None => readable.await.map_err(|e| Errno::from_io(&e))?,
                Some(at) => match tokio::time::timeout_at(at, readable).await {
                    Ok(guard) => guard.map_err(|e| Errno::from_io(&e))?,
                    Err(_) => return self.poll_now(epfd, max_events),
                },
            };
            let ready = self.poll_now(epfd, max_events)?;
            if !ready.is_empty() {
                return Ok(ready);
            }
            // Cleared only if nothing new arrived since the guard was taken.
            guard.clear_ready();
        }
    }

    fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, Errno> {
        (host, port)
            .to_socket_addrs()
            .map_err(|e| Errno::from_io(&e))?
            .find(SocketAddr::is_ipv4)
            .ok_or(Errno::EINVAL)
    }
}

impl OsSys {
    /// One `epoll_wait` that does not block.
    fn poll_now(&self, epfd: Fd, max_events: usize) -> Result<Vec<EpollEvent>, Errno> {
        let mut raw = vec![libc::epoll_event { events: 0, u64: 0 }; max_events];
        // SAFETY: `raw` has room for `max_events` entries.
        let n = check(unsafe { libc::epoll_wait(epfd, raw.as_mut_ptr(), max_events as i32, 0) })?;
        let registered = self.data.borrow();
        Ok(raw[..n as usize]
            .iter()
            .map(|e| {
                let fd = e.u64 as Fd;
                EpollEvent {
                    fd,
                    events: Events(e.events),
                    data: registered.get(&(epfd, fd)).copied().unwrap_or(0),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// The answer of a call that does not wait (every call of `OsSys` but
    /// `listen` and `epoll_wait`: non-blocking, no preemption points).
    fn now<T>(call: impl Future<Output = T>) -> T {
        match pin!(call).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(answer) => answer,
            Poll::Pending => panic!("the call waited"),
        }
    }

    /// A loopback TCP pair: (client fd, accepted fd).
    fn loopback_pair(sys: &OsSys) -> (Fd, Fd) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = runtime.block_on(sys.listen(0)).expect("listen");
        let port = sys.local_port(listener).expect("a bound port");
        let client = now(sys.socket()).expect("a socket");
        match now(sys.connect(client, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))) {
            Ok(()) | Err(Errno::EINPROGRESS) => {}
            Err(e) => panic!("connect: {e}"),
        }
        let accepted = loop {
            match now(sys.accept(listener)) {
                Ok((fd, _)) => break fd,
                Err(Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("accept: {e}"),
            }
        };
        now(sys.close(listener)).unwrap();
        (client, accepted)
    }

    /// Retries `op` on EAGAIN (a real kernel moves bytes in its own time).
    fn retry(mut op: impl FnMut() -> Result<usize, Errno>) -> Result<usize, Errno> {
        for _ in 0..10_000 {
            match op() {
                Err(Errno::EAGAIN) => std::thread::sleep(Duration::from_micros(200)),
                other => return other,
            }
        }
        panic!("still EAGAIN after 10000 tries");
    }

    #[test]
    fn splice_moves_100_kb_socket_to_pipe_to_socket_on_the_real_kernel() {
        const TOTAL_BYTES: usize = 100 * 1024;
        let sys = OsSys::new();
        let (a, b) = loopback_pair(&sys); // a -> b: the source
        let (c, d) = loopback_pair(&sys); // c -> d: the destination
        let (pipe_r, pipe_w) = now(sys.pipe()).expect("a pipe");
        // Nothing to read yet: the kernel's non-blocking answers.
        assert_eq!(now(sys.splice(b, pipe_w, 4096)), Err(Errno::EAGAIN));
        assert_eq!(now(sys.splice(pipe_r, c, 4096)), Err(Errno::EAGAIN));
        // Neither side a pipe, or a pipe end used the wrong way round.
        assert_eq!(now(sys.splice(b, c, 4096)), Err(Errno::EINVAL));
        assert_eq!(now(sys.splice(b, pipe_r, 4096)), Err(Errno::EBADF));

        let data: Vec<u8> = (0..TOTAL_BYTES).map(|i| (i % 251) as u8).collect();
        let mut sent = 0;
        let mut through = 0;
        let mut received = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        while received.len() < TOTAL_BYTES {
            if sent < TOTAL_BYTES {
                match now(sys.send(a, &data[sent..])) {
                    Ok(n) => sent += n,
                    Err(Errno::EAGAIN) => {}
                    Err(e) => panic!("send: {e}"),
                }
            }
            match now(sys.splice(b, pipe_w, 64 * 1024)) {
                Ok(n) => assert!(n > 0, "no end of stream before the sender closes"),
                Err(Errno::EAGAIN) => {}
                Err(e) => panic!("splice socket -> pipe: {e}"),
            }
            match now(sys.splice(pipe_r, c, 64 * 1024)) {
                Ok(n) => through += n,
                Err(Errno::EAGAIN) => {}
                Err(e) => panic!("splice pipe -> socket: {e}"),
            }
            match now(sys.recv(d, &mut buf)) {
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(Errno::EAGAIN) => std::thread::sleep(Duration::from_micros(100)),
                Err(e) => panic!("recv: {e}"),
            }
        }
        assert_eq!(through, TOTAL_BYTES);
        assert!(received == data, "the bytes arrive unchanged and in order");

        // The sender closes: the source socket's end of stream is splice's 0.
        now(sys.close(a)).unwrap();
        assert_eq!(retry(|| now(sys.splice(b, pipe_w, 4096))), Ok(0));
        // The pipe's writer closes: an empty pipe's end of stream is 0 too.
        now(sys.close(pipe_w)).unwrap();
        assert_eq!(now(sys.splice(pipe_r, c, 4096)), Ok(0));
        for fd in [b, c, d, pipe_r] {
            now(sys.close(fd)).unwrap();
        }
    }
}

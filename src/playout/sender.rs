//! The sender: puts one tick's batch of RTP datagrams on the wire from a single
//! non-blocking IPv4 UDP socket and says what became of each datagram. It owns that
//! socket and the scratch arrays `sendmmsg` needs. It must not decide what is sent, stamp
//! headers, read the clock, sleep, retry or block: a dead destination or a full buffer is
//! an outcome for the caller to count against that cluster, never a reason to hold up
//! the others.
//!
//! On Linux a batch leaves with `sendmmsg(2)`, up to [`MAX_MESSAGES_PER_CALL`] datagrams
//! per system call. Each datagram is two iovecs, the 12-byte header that differs per
//! cluster and the payload shared by every cluster airing the same programme, so payload
//! bytes are never copied. Elsewhere, and on Linux when asked ([`Sender::portable`]) so
//! that both paths stay tested, each datagram is one vectored `sendmsg`/`WSASendTo` of
//! the same two slices.
//!
//! Errors are those the kernel reports synchronously, for the datagram being sent:
//! no route (`ENETUNREACH`, `EHOSTUNREACH`), broadcast without `SO_BROADCAST`
//! (`EACCES`), a firewall (`EPERM`), a full socket buffer (`EAGAIN`). The socket is
//! unconnected and `IP_RECVERR` stays off, so ICMP port-unreachable from a dead speaker
//! is ignored by the kernel rather than surfacing on a later send, where it would be
//! blamed on whichever cluster happened to be next.
//!
//! What the caller must not expect: a datagram reported [`SendOutcome::Sent`] was queued
//! by the kernel, not received by anyone.

use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

use bytes::Bytes;
use socket2::{SockAddr, SockRef};

/// Send buffer asked for at start-up: 10,000 clusters × ~200-byte packets is 2 MB per
/// tick, and a burst that finds the buffer full loses datagrams. Best effort: Linux caps
/// it at `net.core.wmem_max` (often 208 KiB) for unprivileged processes.
pub const SEND_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// `sendmmsg` handles at most `UIO_MAXIOV` (1024) messages per call and quietly ignores
/// the rest, so longer batches are cut into calls of this size.
pub const MAX_MESSAGES_PER_CALL: usize = 1024;

/// After this many datagrams in a row found the socket buffer full, the buffer is not
/// draining at our pace (a stalled NIC, a flood of unresolved neighbours): the rest of
/// the batch is dropped as [`SendOutcome::WouldBlock`] without a system call each, so a
/// stuck link costs microseconds instead of one failing syscall per cluster (10,000 per
/// tick would eat the tick itself). Datagrams late in the batch bear the loss; a caller
/// that wants it spread fairly rotates the batch's starting cluster from tick to tick.
const FULL_BUFFER_GIVE_UP: usize = 32;

/// An interrupted send queued nothing, so it is retried; the cap only guarantees the
/// batch ends if signals keep arriving faster than we can send.
const INTERRUPTED_RETRIES: u32 = 3;

/// One datagram of a batch: a 12-byte RTP header that differs per cluster and a payload
/// shared by every cluster airing the same programme (cloning [`Bytes`] copies nothing).
#[derive(Debug, Clone)]
pub struct Datagram {
    pub header: [u8; 12],
    pub payload: Bytes,
    pub destination: SocketAddr,
}

/// What became of one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued by the kernel for transmission.
    Sent,
    /// The socket buffer was full (`EAGAIN`): dropped, not retried this tick, since the
    /// next tick carries fresher audio anyway.
    WouldBlock,
    /// No way there: `ECONNREFUSED`, `EHOSTUNREACH` or `ENETUNREACH`.
    Unreachable,
    /// Refused locally: `EPERM` (a firewall rule) or `EACCES` (e.g. a broadcast address).
    NotPermitted,
    /// The kernel or the interface queue had no room (`ENOBUFS`).
    NoBuffers,
    /// Anything else, with the raw OS error (0 if there was none), e.g. `EINVAL` for
    /// port 0 or `EAFNOSUPPORT` for an IPv6 destination.
    Other(i32),
}

/// `ENOBUFS` has no [`io::ErrorKind`], so it is recognised by its raw code.
#[cfg(unix)]
const ENOBUFS: i32 = libc::ENOBUFS;
#[cfg(windows)]
const ENOBUFS: i32 = 10055; // WSAENOBUFS

/// Sorts a send error into what health tracking needs to know about it.
pub fn classify(err: &io::Error) -> SendOutcome {
    if err.raw_os_error() == Some(ENOBUFS) {
        return SendOutcome::NoBuffers;
    }
    match err.kind() {
        io::ErrorKind::WouldBlock => SendOutcome::WouldBlock,
        io::ErrorKind::ConnectionRefused
        | io::ErrorKind::HostUnreachable
        | io::ErrorKind::NetworkUnreachable => SendOutcome::Unreachable,
        io::ErrorKind::PermissionDenied => SendOutcome::NotPermitted,
        _ => SendOutcome::Other(err.raw_os_error().unwrap_or(0)),
    }
}

/// Sends batches of datagrams from one non-blocking IPv4 UDP socket.
///
/// `Send` but not `Sync`: it belongs to the pacer thread. `send_batch` takes `&self`;
/// the reusable `sendmmsg` arrays sit behind a `RefCell`.
pub struct Sender {
    socket: UdpSocket,
    /// One system call per datagram even though `sendmmsg` exists (always the case
    /// where it does not).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    portable: bool,
    #[cfg(target_os = "linux")]
    scratch: std::cell::RefCell<mmsg::Scratch>,
}

impl Sender {
    /// Binds a new socket to `addr` (IPv4 only; port 0 picks a free one).
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        if !addr.is_ipv4() {
            return Err(ipv4_only());
        }
        Self::from_socket(UdpSocket::bind(addr)?)
    }

    /// Takes over a bound IPv4 socket, which it makes non-blocking, and asks for a
    /// [`SEND_BUFFER_BYTES`] send buffer. The socket should be unconnected: on a
    /// connected one the kernel reports ICMP errors on later sends, to whichever cluster
    /// comes next.
    pub fn from_socket(socket: UdpSocket) -> io::Result<Self> {
        if !socket.local_addr()?.is_ipv4() {
            return Err(ipv4_only());
        }
        socket.set_nonblocking(true)?;
        let sender = Self {
            socket,
            portable: false,
            #[cfg(target_os = "linux")]
            scratch: Default::default(),
        };
        match sender.set_send_buffer_size(SEND_BUFFER_BYTES) {
            Ok(granted) if granted < SEND_BUFFER_BYTES => tracing::warn!(
                granted,
                wanted = SEND_BUFFER_BYTES,
                "UDP send buffer is smaller than wanted (raise net.core.wmem_max); \
                 large fleets may see dropped packets"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not size the UDP send buffer"),
        }
        Ok(sender)
    }

    /// Sends one datagram per system call from now on, even where `sendmmsg` exists: the
    /// path every other platform takes, selectable on Linux so tests cover it.
    pub fn portable(self) -> Self {
        Self {
            portable: true,
            ..self
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// A second handle on the socket, for the thread that reads what arrives on it.
    pub fn try_clone_socket(&self) -> io::Result<UdpSocket> {
        self.socket.try_clone()
    }

    /// Sends one datagram now (RTCP multiplexed on the RTP port, RFC 5761).
    pub fn send_one(&self, bytes: &[u8], to: SocketAddr) -> io::Result<()> {
        self.socket.send_to(bytes, to).map(|_| ())
    }

    /// Asks for a send buffer of `bytes` and returns what the kernel granted (Linux
    /// doubles the request for its bookkeeping and caps it at `net.core.wmem_max`).
    pub fn set_send_buffer_size(&self, bytes: usize) -> io::Result<usize> {
        let socket = SockRef::from(&self.socket);
        socket.set_send_buffer_size(bytes)?;
        socket.send_buffer_size()
    }

    /// Multicast settings for datagrams to multicast groups: hop limit and the local
    /// interface address they leave from. Unicast datagrams are unaffected.
    pub fn set_multicast(&self, ttl: u32, interface: Ipv4Addr) -> io::Result<()> {
        self.socket.set_multicast_ttl_v4(ttl)?;
        SockRef::from(&self.socket).set_multicast_if_v4(&interface)
    }

    /// Sends the whole batch and writes one outcome per datagram, in batch order, into
    /// `outcomes` (cleared first). Never blocks and never stops early: a datagram that
    /// fails is recorded and the next one is tried, except that a socket buffer that
    /// stays full drops the rest of the batch (see [`SendOutcome::WouldBlock`]).
    pub fn send_batch(&self, batch: &[Datagram], outcomes: &mut Vec<SendOutcome>) {
        #[cfg(target_os = "linux")]
        if !self.portable {
            // Cannot fail: nothing in `send_batch` calls back into the sender.
            let mut scratch = self.scratch.borrow_mut();
            let mut laid = mmsg::Laid::new(&mut scratch, batch);
            let mut ipv4_until = 0;
            walk_batch(batch.len(), outcomes, |from| {
                // The messages hold IPv4 addresses only; an IPv6 destination gets the
                // error a send to it would get, and calls stop short of it.
                if from >= ipv4_until {
                    let run = batch[from..]
                        .iter()
                        .take_while(|d| d.destination.is_ipv4())
                        .count();
                    if run == 0 {
                        return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT));
                    }
                    ipv4_until = from + run;
                }
                let until = ipv4_until.min(from + MAX_MESSAGES_PER_CALL);
                laid.send(&self.socket, from, until)
            });
            return;
        }
        self.send_one_at_a_time(batch, outcomes);
    }

    fn send_one_at_a_time(&self, batch: &[Datagram], outcomes: &mut Vec<SendOutcome>) {
        let socket = SockRef::from(&self.socket);
        walk_batch(batch.len(), outcomes, |i| {
            let datagram = &batch[i];
            let parts = [
                IoSlice::new(&datagram.header),
                IoSlice::new(&datagram.payload),
            ];
            // A UDP send is all or nothing, so the byte count says nothing more.
            socket
                .send_to_vectored(&parts, &SockAddr::from(datagram.destination))
                .map(|_| 1)
        });
    }
}

fn ipv4_only() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "the RTP sender is IPv4-only")
}

/// Walks a batch of `len` datagrams through `send_from(i)`, which sends datagrams from
/// index `i` on and returns how many left (at least one), or the error of datagram `i`,
/// which did not leave. Pure bookkeeping, so the skip-and-continue rules are tested
/// without sockets.
fn walk_batch(
    len: usize,
    outcomes: &mut Vec<SendOutcome>,
    mut send_from: impl FnMut(usize) -> io::Result<usize>,
) {
    outcomes.clear();
    outcomes.reserve(len);
    let mut full_in_a_row = 0;
    let mut interrupted = 0;
    while outcomes.len() < len {
        if full_in_a_row >= FULL_BUFFER_GIVE_UP {
            outcomes.resize(len, SendOutcome::WouldBlock);
            break;
        }
        let next = outcomes.len();
        let outcome = match send_from(next) {
            Ok(sent) if sent > 0 => {
                let sent = sent.min(len - next);
                outcomes.extend(std::iter::repeat_n(SendOutcome::Sent, sent));
                full_in_a_row = 0;
                interrupted = 0;
                continue;
            }
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted && interrupted < INTERRUPTED_RETRIES =>
            {
                interrupted += 1;
                continue;
            }
            Err(e) => classify(&e),
            // Breaks the contract; counting it as a failure still guarantees progress.
            Ok(_) => SendOutcome::Other(0),
        };
        interrupted = 0;
        if outcome == SendOutcome::WouldBlock {
            full_in_a_row += 1;
        } else {
            full_in_a_row = 0;
        }
        outcomes.push(outcome);
    }
}

/// The `sendmmsg` path, and the module's only `unsafe` code.
#[cfg(target_os = "linux")]
mod mmsg {
    use std::io;
    use std::marker::PhantomData;
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;

    use super::{Datagram, MAX_MESSAGES_PER_CALL};

    /// Arrays reused from batch to batch so a tick allocates nothing once the fleet has
    /// been at full size. Empty between batches: [`Laid`] clears them when dropped.
    #[derive(Default)]
    pub(super) struct Scratch {
        addrs: Vec<libc::sockaddr_in>,
        iovecs: Vec<[libc::iovec; 2]>,
        messages: Vec<libc::mmsghdr>,
    }

    // SAFETY: the raw pointers in `iovecs` and `messages` are what keep `Scratch` from
    // being `Send` automatically. They exist only while a `Laid` borrows the scratch and
    // the batch they point into, are used only by the thread holding that borrow, and
    // the vectors are emptied when the `Laid` is dropped; so a `Scratch` that moves to
    // another thread carries no pointers at all.
    unsafe impl Send for Scratch {}

    /// A batch laid out for `sendmmsg`. Holding it keeps both the batch and the scratch
    /// borrowed, so every pointer in the messages stays valid for as long as it can be
    /// used.
    pub(super) struct Laid<'a> {
        scratch: &'a mut Scratch,
        _batch: PhantomData<&'a [Datagram]>,
    }

    impl<'a> Laid<'a> {
        pub(super) fn new(scratch: &'a mut Scratch, batch: &'a [Datagram]) -> Self {
            let Scratch {
                addrs,
                iovecs,
                messages,
            } = &mut *scratch;
            addrs.clear();
            iovecs.clear();
            messages.clear();
            // Both arrays are complete before any message points into them, and they are
            // not touched again until `Drop`, so they are never reallocated under the
            // messages.
            addrs.extend(batch.iter().map(|d| sockaddr_in(d.destination)));
            iovecs.extend(
                batch
                    .iter()
                    .map(|d| [read_only_iovec(&d.header), read_only_iovec(&d.payload)]),
            );
            messages.extend(addrs.iter_mut().zip(iovecs.iter_mut()).map(|(addr, iov)| {
                let mut message = blank_message();
                message.msg_hdr.msg_name = (addr as *mut libc::sockaddr_in).cast();
                message.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                message.msg_hdr.msg_iov = iov.as_mut_ptr();
                message.msg_hdr.msg_iovlen = 2;
                message
            }));
            Self {
                scratch,
                _batch: PhantomData,
            }
        }

        /// Sends messages `from..until` (at most [`MAX_MESSAGES_PER_CALL`] of them, all
        /// IPv4) in one call: how many left, or the error of message `from` if none did.
        pub(super) fn send(
            &mut self,
            socket: &UdpSocket,
            from: usize,
            until: usize,
        ) -> io::Result<usize> {
            let messages = &mut self.scratch.messages[from..until];
            let count = messages.len().min(MAX_MESSAGES_PER_CALL) as libc::c_uint;
            // SAFETY: `socket` is borrowed for the call, so its descriptor is open.
            // `messages` is an exclusive borrow of at least `count` initialised headers;
            // the kernel reads them and writes only their `msg_len`. Each `msg_name`
            // points at an entry of `scratch.addrs` and each `msg_iov` at an entry of
            // `scratch.iovecs`, filled in `new` and left alone until `Drop`; `self`
            // borrows the scratch exclusively, so they cannot move meanwhile. Each iovec
            // points at a datagram's header array or payload in the batch, which `self`
            // borrows for `'a`, so those bytes are alive and unchanged; the kernel only
            // reads them (the iovec's `*mut` is the C API's, not a licence to write).
            // `msg_control` is null with length 0. MSG_DONTWAIT keeps the call from
            // blocking even if someone made the socket blocking again.
            let sent = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    messages.as_mut_ptr(),
                    count,
                    libc::MSG_DONTWAIT as _,
                )
            };
            // Negative means failure, with errno set.
            usize::try_from(sent).map_err(|_| io::Error::last_os_error())
        }
    }

    impl Drop for Laid<'_> {
        fn drop(&mut self) {
            // Leave no pointers into the batch behind once it is no longer borrowed.
            self.scratch.messages.clear();
            self.scratch.iovecs.clear();
            self.scratch.addrs.clear();
        }
    }

    fn blank_message() -> libc::mmsghdr {
        // SAFETY: `mmsghdr` is a C struct of integers and raw pointers, for which all
        // zero bytes is a valid value (null pointers, zero lengths). Zeroing rather than
        // a struct literal because musl's `msghdr` has private padding fields.
        unsafe { std::mem::zeroed() }
    }

    fn sockaddr_in(destination: SocketAddr) -> libc::sockaddr_in {
        let (ip, port) = match destination {
            SocketAddr::V4(v4) => (*v4.ip(), v4.port()),
            // Never sent: calls stop short of IPv6 destinations.
            SocketAddr::V6(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0),
        };
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            // Network byte order is the octets as they read.
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(ip.octets()),
            },
            sin_zero: [0; 8],
        }
    }

    fn read_only_iovec(bytes: &[u8]) -> libc::iovec {
        libc::iovec {
            iov_base: bytes.as_ptr().cast_mut().cast(),
            iov_len: bytes.len(),
        }
    }
}

// The tests name errors by their libc constants.
#[cfg(all(test, unix))]
mod tests {
    use std::net::SocketAddrV4;
    use std::sync::mpsc;
    use std::time::Duration;

    use socket2::{Domain, Protocol, Socket, Type};

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(5);

    fn receiver() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        socket
    }

    fn sender() -> Sender {
        Sender::bind("127.0.0.1:0".parse().unwrap()).unwrap()
    }

    /// An RTP fixed header whose sequence number and SSRC say which datagram it is.
    fn header(cluster: u16, seq: u16) -> [u8; 12] {
        let mut h = [0u8; 12];
        h[0] = 0x80;
        h[2..4].copy_from_slice(&seq.to_be_bytes());
        h[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        h[8..12].copy_from_slice(&u32::from(cluster).to_be_bytes());
        h
    }

    fn datagram(cluster: u16, seq: u16, payload: &Bytes, to: SocketAddr) -> Datagram {
        Datagram {
            header: header(cluster, seq),
            payload: payload.clone(),
            destination: to,
        }
    }

    fn receive(socket: &UdpSocket) -> Vec<u8> {
        let mut buf = vec![0u8; 65536];
        let (n, _) = socket.recv_from(&mut buf).expect("a datagram in time");
        buf.truncate(n);
        buf
    }

    fn concat(header: [u8; 12], payload: &[u8]) -> Vec<u8> {
        [&header[..], payload].concat()
    }

    /// `per_receiver` datagrams to each of `receivers` clusters, interleaved as a tick's
    /// batch is, with two programmes shared between the clusters; every one must arrive
    /// whole and in order.
    fn check_batch_arrives_intact(sender: &Sender, receivers: u16, per_receiver: u16) {
        let sockets: Vec<UdpSocket> = (0..receivers).map(|_| receiver()).collect();
        let programmes = [
            Bytes::from((0..160).map(|i| i as u8).collect::<Vec<u8>>()),
            Bytes::from(vec![0xd5; 80]),
        ];
        let programme = |cluster: u16| &programmes[usize::from(cluster) % 2];
        let mut batch = Vec::new();
        for seq in 0..per_receiver {
            for (cluster, socket) in (0..receivers).zip(&sockets) {
                let to = socket.local_addr().unwrap();
                batch.push(datagram(cluster, seq, programme(cluster), to));
            }
        }
        let mut outcomes = Vec::new();
        sender.send_batch(&batch, &mut outcomes);
        assert_eq!(outcomes.len(), batch.len());
        assert!(
            outcomes.iter().all(|o| *o == SendOutcome::Sent),
            "{outcomes:?}"
        );
        for (cluster, socket) in (0..receivers).zip(&sockets) {
            for seq in 0..per_receiver {
                assert_eq!(
                    receive(socket),
                    concat(header(cluster, seq), programme(cluster)),
                    "cluster {cluster}, packet {seq}"
                );
            }
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_batch_of_300_datagrams_reaches_3_receivers_intact_with_sendmmsg() {
        check_batch_arrives_intact(&sender(), 3, 100);
    }

    #[test]
    fn a_batch_of_300_datagrams_reaches_3_receivers_intact_one_send_at_a_time() {
        check_batch_arrives_intact(&sender().portable(), 3, 100);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_batch_longer_than_one_sendmmsg_call_is_sent_whole() {
        // 2,500 datagrams: three calls, the last one partial. Spread over 25 receivers
        // so no receive buffer overflows while nobody reads.
        check_batch_arrives_intact(&sender(), 25, 100);
    }

    #[test]
    fn an_empty_batch_yields_no_outcomes() {
        for sender in [sender(), sender().portable()] {
            let mut outcomes = vec![SendOutcome::Sent];
            sender.send_batch(&[], &mut outcomes);
            assert!(outcomes.is_empty());
        }
    }

    #[cfg(target_os = "linux")]
    /// Datagrams the kernel refuses on the spot, first, last and in between good ones:
    /// each gets its own outcome and every good datagram still arrives, in order.
    fn check_failures_do_not_stop_the_batch(sender: &Sender) {
        let good = receiver();
        let good_addr = good.local_addr().unwrap();
        let port = good_addr.port();
        let payload = Bytes::from_static(b"programme");
        let broadcast = SocketAddr::from((Ipv4Addr::BROADCAST, port));
        let port_zero = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let ipv6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        let destinations = [
            broadcast, good_addr, port_zero, good_addr, ipv6, ipv6, good_addr, good_addr, broadcast,
        ];
        let batch: Vec<Datagram> = (0..)
            .zip(destinations)
            .map(|(seq, to)| datagram(7, seq, &payload, to))
            .collect();
        let mut outcomes = Vec::new();
        sender.send_batch(&batch, &mut outcomes);
        use SendOutcome::*;
        assert_eq!(
            outcomes,
            [
                NotPermitted,
                Sent,
                Other(libc::EINVAL),
                Sent,
                Other(libc::EAFNOSUPPORT),
                Other(libc::EAFNOSUPPORT),
                Sent,
                Sent,
                NotPermitted,
            ]
        );
        for seq in [1, 3, 6, 7] {
            assert_eq!(receive(&good), concat(header(7, seq), &payload));
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn failing_destinations_do_not_stop_the_rest_of_the_batch_with_sendmmsg() {
        check_failures_do_not_stop_the_batch(&sender());
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn failing_destinations_do_not_stop_the_rest_of_the_batch_one_send_at_a_time() {
        check_failures_do_not_stop_the_batch(&sender().portable());
    }

    /// Runs `send_batch` on another thread so a blocking send fails the test instead of
    /// hanging it.
    fn send_with_watchdog(sender: Sender, batch: Vec<Datagram>) -> Vec<SendOutcome> {
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            sender.send_batch(&batch, &mut outcomes);
            let _ = done.send(outcomes);
        });
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("send_batch returned instead of blocking")
    }

    #[test]
    fn a_burst_into_a_tiny_send_buffer_returns_without_blocking() {
        // On loopback the kernel frees a datagram's buffer space as soon as it is handed
        // to the receiver, so this cannot fill the buffer; it checks that a burst far
        // beyond the buffer returns, one outcome per datagram. The full buffer itself is
        // exercised by `walk_batch` tests below and the ignored neighbour test.
        let silent = receiver();
        let to = silent.local_addr().unwrap();
        let payload = Bytes::from(vec![0x55; 8000]);
        for sender in [sender(), sender().portable()] {
            sender.set_send_buffer_size(1).unwrap();
            let batch: Vec<Datagram> = (0..2000).map(|i| datagram(1, i, &payload, to)).collect();
            let outcomes = send_with_watchdog(sender, batch);
            assert_eq!(outcomes.len(), 2000);
            assert!(
                outcomes
                    .iter()
                    .all(|o| matches!(o, SendOutcome::Sent | SendOutcome::WouldBlock)),
                "{outcomes:?}"
            );
        }
    }

    fn group_member(group: Ipv4Addr, port: u16) -> UdpSocket {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket.bind(&SocketAddrV4::new(group, port).into()).unwrap();
        socket
            .join_multicast_v4(&group, &Ipv4Addr::LOCALHOST)
            .unwrap();
        let socket = UdpSocket::from(socket);
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        socket
    }

    fn check_multicast_reaches_every_member(sender: Sender) {
        let group = Ipv4Addr::new(239, 255, 77, 41);
        let first = group_member(group, 0);
        let port = first.local_addr().unwrap().port();
        let second = group_member(group, port);
        sender.set_multicast(1, Ipv4Addr::LOCALHOST).unwrap();
        let payload = Bytes::from_static(b"announcement");
        let batch = [datagram(3, 42, &payload, SocketAddr::from((group, port)))];
        let mut outcomes = Vec::new();
        sender.send_batch(&batch, &mut outcomes);
        assert_eq!(outcomes, [SendOutcome::Sent]);
        for member in [first, second] {
            assert_eq!(receive(&member), concat(header(3, 42), &payload));
        }
    }

    fn looping_sender() -> Sender {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Loopback delivery of our own multicast is what makes this testable on one host.
        socket.set_multicast_loop_v4(true).unwrap();
        Sender::from_socket(socket).unwrap()
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn one_multicast_datagram_reaches_every_member_of_the_group_with_sendmmsg() {
        check_multicast_reaches_every_member(looping_sender());
    }

    #[test]
    fn one_multicast_datagram_reaches_every_member_of_the_group_one_send_at_a_time() {
        check_multicast_reaches_every_member(looping_sender().portable());
    }

    #[test]
    fn an_ipv6_bind_address_is_refused() {
        let err = Sender::bind("[::1]:0".parse().unwrap()).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn the_sender_can_move_to_the_pacer_thread() {
        fn is_send<T: Send>() {}
        is_send::<Sender>();
    }

    #[test]
    #[cfg(unix)]
    fn os_errors_map_to_what_health_needs_to_know() {
        let outcome = |code| classify(&io::Error::from_raw_os_error(code));
        assert_eq!(outcome(libc::EAGAIN), SendOutcome::WouldBlock);
        assert_eq!(outcome(libc::ECONNREFUSED), SendOutcome::Unreachable);
        assert_eq!(outcome(libc::EHOSTUNREACH), SendOutcome::Unreachable);
        assert_eq!(outcome(libc::ENETUNREACH), SendOutcome::Unreachable);
        assert_eq!(outcome(libc::EPERM), SendOutcome::NotPermitted);
        assert_eq!(outcome(libc::EACCES), SendOutcome::NotPermitted);
        assert_eq!(outcome(libc::ENOBUFS), SendOutcome::NoBuffers);
        assert_eq!(outcome(libc::EMSGSIZE), SendOutcome::Other(libc::EMSGSIZE));
        assert_eq!(
            classify(&io::Error::other("no OS error")),
            SendOutcome::Other(0)
        );
    }

    fn os_error(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    /// Sends datagrams one call at a time, failing those listed with their error; counts
    /// calls.
    fn walk_with_failures(
        len: usize,
        fail: impl Fn(usize) -> Option<i32>,
    ) -> (Vec<SendOutcome>, usize) {
        let mut calls = 0;
        let mut outcomes = Vec::new();
        walk_batch(len, &mut outcomes, |i| {
            calls += 1;
            match fail(i) {
                Some(code) => Err(os_error(code)),
                // Sends up to the next failure, as sendmmsg does.
                None => Ok((i..len).take_while(|j| fail(*j).is_none()).count()),
            }
        });
        (outcomes, calls)
    }

    #[test]
    fn a_failed_datagram_is_recorded_and_the_next_one_is_tried() {
        let (outcomes, calls) = walk_with_failures(6, |i| match i {
            0 => Some(libc::EACCES),
            3 => Some(libc::ENOBUFS),
            _ => None,
        });
        use SendOutcome::*;
        assert_eq!(outcomes, [NotPermitted, Sent, Sent, NoBuffers, Sent, Sent]);
        assert_eq!(calls, 4);
    }

    #[test]
    fn once_the_send_buffer_stays_full_the_rest_of_the_batch_is_dropped_without_more_calls() {
        let (outcomes, calls) = walk_with_failures(10_000, |i| (i >= 100).then_some(libc::EAGAIN));
        assert_eq!(outcomes.len(), 10_000);
        assert!(outcomes[..100].iter().all(|o| *o == SendOutcome::Sent));
        assert!(
            outcomes[100..]
                .iter()
                .all(|o| *o == SendOutcome::WouldBlock)
        );
        assert_eq!(calls, 1 + FULL_BUFFER_GIVE_UP);
    }

    #[test]
    fn a_buffer_that_drains_between_failures_keeps_the_batch_going() {
        // Every other datagram finds the buffer full: never a streak, so all are tried.
        let (outcomes, _) = walk_with_failures(1000, |i| (i % 2 == 1).then_some(libc::EAGAIN));
        assert_eq!(
            outcomes.iter().filter(|o| **o == SendOutcome::Sent).count(),
            500
        );
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == SendOutcome::WouldBlock)
                .count(),
            500
        );
    }

    #[test]
    fn an_interrupted_send_is_retried_then_recorded_if_signals_keep_coming() {
        let mut outcomes = Vec::new();
        let mut attempts = [0u32; 2];
        walk_batch(2, &mut outcomes, |i| {
            attempts[i] += 1;
            // Datagram 0 goes out on its second try; datagram 1 is interrupted forever.
            if i == 0 && attempts[0] == 2 {
                Ok(1)
            } else {
                Err(io::Error::from(io::ErrorKind::Interrupted))
            }
        });
        assert_eq!(outcomes, [SendOutcome::Sent, SendOutcome::Other(0)]);
        assert_eq!(attempts, [2, 1 + INTERRUPTED_RETRIES]);
    }

    #[test]
    fn a_send_that_reports_nothing_sent_cannot_stall_the_batch() {
        let mut outcomes = Vec::new();
        walk_batch(3, &mut outcomes, |_| Ok(0));
        assert_eq!(outcomes, [SendOutcome::Other(0); 3]);
    }

    #[test]
    fn a_send_that_claims_more_than_asked_is_clamped_to_the_batch() {
        let mut outcomes = Vec::new();
        walk_batch(3, &mut outcomes, |_| Ok(10));
        assert_eq!(outcomes, [SendOutcome::Sent; 3]);
    }
}

//! Pokes: the broker tells a settled shim it has directives for one of its containers, so the shim does not wait
//! for its heartbeat to collect them.
//!
//! A shim that registers with `pokes` reads the connection its reports arrive on between its own requests. When
//! a directive is queued for such a container outside its own report (a tick's lease, another task's Register,
//! Update or Finish), the broker writes one [`Response::Poke`] line on that connection; the shim reports at once
//! and the reply carries the directives. One poke per report: a container poked is not poked again until it
//! reports. A poke never blocks the broker: it is sent with `MSG_DONTWAIT` and only when no reply is being
//! written on the connection; one not sent is tried again at the next tick.
//!
//! Because a shim that takes pokes needs no heartbeat to collect directives, the broker asks it a longer one
//! ([`ControllerConfig::idle_heartbeat_ms`]) and trusts its tasks' reports for two of them.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, Weak};

use predictive_api::wire::Response;

use super::{Broker, write_response};
use crate::controller::ControllerConfig;

/// One connection: the reading thread reads `stream` unlocked; every write (a reply, a poke) holds `write`.
pub(super) struct Peer {
    pub(super) stream: UnixStream,
    write: Mutex<()>,
}

impl Peer {
    pub(super) fn new(stream: UnixStream) -> Arc<Self> {
        Arc::new(Self {
            stream,
            write: Mutex::new(()),
        })
    }

    /// Writes a reply (blocking, bounded by the socket's write timeout).
    pub(super) fn reply(&self, id: Option<u64>, resp: &Response) -> std::io::Result<()> {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        write_response(&self.stream, id, resp)
    }

    /// Writes one poke without waiting: `false` when a reply is being written or the socket is full.
    fn poke(&self) -> bool {
        let Ok(_w) = self.write.try_lock() else {
            return false;
        };
        let line = poke_line();
        // SAFETY: send reads `line.len()` bytes from a live buffer on a descriptor this Peer owns.
        let n = unsafe {
            libc::send(
                self.stream.as_raw_fd(),
                line.as_ptr().cast(),
                line.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        match usize::try_from(n) {
            Ok(n) if n == line.len() => true,
            // A short line (no room for all of it: not seen for a line this small) is finished blocking, bounded
            // by the write timeout, so the stream stays whole.
            Ok(n) if n > 0 => (&self.stream).write_all(&line.as_bytes()[n..]).is_ok(),
            _ => false,
        }
    }
}

fn poke_line() -> &'static str {
    static LINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LINE.get_or_init(|| {
        predictive_api::wire::encode_response(None, &Response::Poke)
            .expect("a poke encodes (no floats)")
    })
}

/// How a running container is poked.
#[derive(Debug, Default)]
pub(super) struct Pokes {
    /// It registered with `pokes`.
    pub(super) takes: bool,
    /// The connection its latest report (or Register) came on.
    peer: Option<Weak<Peer>>,
    /// Listed to be poked (or poked) since its latest report.
    asked: bool,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("fd", &self.stream.as_raw_fd())
            .finish()
    }
}

impl Pokes {
    pub(super) fn new(takes: bool, peer: Option<&Arc<Peer>>) -> Self {
        Self {
            takes,
            peer: peer.filter(|_| takes).map(Arc::downgrade),
            asked: false,
        }
    }

    /// Whether a directive queued now needs a poke: the shim takes pokes and none was asked since the latest
    /// report (this one is, from now on).
    pub(super) fn ask(&mut self) -> bool {
        let first = self.takes && !self.asked;
        self.asked |= first;
        first
    }

    /// It reported on `peer`: pokes go there, and it may be poked again.
    pub(super) fn reported(&mut self, peer: Option<&Arc<Peer>>) {
        if self.takes
            && let Some(p) = peer
        {
            self.peer = Some(Arc::downgrade(p));
        }
        self.asked = false;
    }
}

/// The heartbeat asked of a shim, and its tasks' staleness bound when it differs from `stale_after_ms`: a shim
/// that takes pokes heartbeats every `idle_heartbeat_ms` (when longer than half of `stale_after_ms`) and its
/// task stays fresh for two heartbeats and a tick, so one lost heartbeat still leaves it fresh.
pub(super) fn heartbeat(cfg: &ControllerConfig, tick_ms: u64, pokes: bool) -> (u64, Option<u64>) {
    let short = super::reports::heartbeat_ms(cfg.stale_after_ms);
    if !pokes || cfg.idle_heartbeat_ms <= short {
        return (short, None);
    }
    let hb = cfg.idle_heartbeat_ms;
    (
        hb,
        Some(
            hb.saturating_mul(2)
                .saturating_add(tick_ms)
                .max(cfg.stale_after_ms),
        ),
    )
}

impl Broker {
    /// Pokes the containers listed since the last call ([`State::to_poke`]: directives queued for them since
    /// their latest report) that still have directives waiting. Called after the directives were queued (and
    /// their records submitted: the report the poke brings waits for them to be durable). One not sent (a reply
    /// being written, a full socket) stays listed for the next call.
    pub(super) fn poke_pending(&self) {
        let due: Vec<(String, Arc<Peer>)> = {
            let mut st = self.lock();
            let listed = std::mem::take(&mut st.to_poke);
            listed
                .into_iter()
                .filter_map(|id| {
                    let r = st.running.get(&id).filter(|r| !r.pending.is_empty())?;
                    let peer = r.pokes.peer.as_ref()?.upgrade()?;
                    Some((id, peer))
                })
                .collect()
        };
        if due.is_empty() {
            return;
        }
        // One poke per connection: a shim of many containers reports all of them on one wake-up.
        let mut sent: Vec<(*const Peer, bool)> = Vec::new();
        let mut missed = Vec::new();
        for (id, peer) in &due {
            let ptr = Arc::as_ptr(peer);
            let ok = match sent.iter().find(|(p, _)| *p == ptr) {
                Some((_, ok)) => *ok,
                None => {
                    let ok = peer.poke();
                    sent.push((ptr, ok));
                    ok
                }
            };
            if !ok {
                missed.push(id.clone());
            }
        }
        self.tracker
            .poked(sent.iter().filter(|(_, ok)| *ok).count());
        if !missed.is_empty() {
            self.lock().to_poke.extend(missed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    #[test]
    fn a_poke_is_one_line_a_client_reads_as_a_poke() {
        let (ours, theirs) = UnixStream::pair().expect("pair");
        let peer = Peer::new(ours);
        assert!(peer.poke());
        let mut line = String::new();
        BufReader::new(&theirs)
            .read_line(&mut line)
            .expect("a line");
        assert_eq!(
            predictive_api::wire::parse_response(&line),
            (None, Ok(Response::Poke))
        );
    }

    #[test]
    fn a_poke_never_waits_on_a_reply_being_written() {
        let (ours, _theirs) = UnixStream::pair().expect("pair");
        let peer = Peer::new(ours);
        let _writing = peer.write.lock().expect("lock");
        assert!(!peer.poke(), "a reply holds the connection");
    }

    #[test]
    fn a_full_socket_refuses_a_poke_without_blocking() {
        let (ours, _theirs) = UnixStream::pair().expect("pair");
        ours.set_nonblocking(true).expect("nonblocking");
        let chunk = [b'x'; 4096];
        while (&ours).write(&chunk).is_ok() {}
        let peer = Peer::new(ours);
        assert!(!peer.poke());
    }

    #[test]
    fn a_container_is_listed_for_a_poke_once_per_report() {
        let (ours, _theirs) = UnixStream::pair().expect("pair");
        let peer = Peer::new(ours);
        let mut p = Pokes::new(true, Some(&peer));
        assert!(p.ask(), "the first directive after a report asks a poke");
        assert!(!p.ask(), "the next ones ride on it");
        p.reported(Some(&peer));
        assert!(p.ask(), "asked again after the report");
        let mut old = Pokes::new(false, Some(&peer));
        assert!(!old.ask(), "a shim that does not take pokes is never poked");
    }

    #[test]
    fn only_a_shim_that_takes_pokes_gets_the_long_heartbeat() {
        let cfg = ControllerConfig::default();
        assert_eq!(heartbeat(&cfg, 1000, false), (2500, None));
        let (hb, stale) = heartbeat(&cfg, 1000, true);
        assert_eq!(hb, cfg.idle_heartbeat_ms);
        assert_eq!(stale, Some(2 * hb + 1000));
        let off = ControllerConfig {
            idle_heartbeat_ms: 0,
            ..ControllerConfig::default()
        };
        assert_eq!(heartbeat(&off, 1000, true), (2500, None));
    }
}

//! Tolerant parsers for the formats cgroupfs and procfs use.
//!
//! Sampling treats every file as optional and every malformed value as absent: a parser here returns
//! `None` rather than an error, and never panics on empty files, `max`, truncated lines or numbers that
//! overflow `u64`. Callers that must report a malformed value (actuation read-back) do their own check.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The most a sampled file may hold: past it the file is not read on and counts as unreadable.
///
/// Every cgroup file sampled is under 4 KiB; what grows is in a container's hands, `/proc/<pid>/net/dev` (about
/// 120 bytes per interface of its network namespace; 30,000 interfaces are 3.7 MB and 29 ms of kernel time per
/// read). 256 KiB is about 2,000 interfaces, read in ~2 ms; each read stops at the bound, so what lies past it
/// is never generated.
pub(crate) const MAX_FILE_BYTES: usize = 256 << 10;

/// Reads a whole (small) file; `None` when it is missing, unreadable or over [`MAX_FILE_BYTES`].
pub(crate) fn read(path: &Path) -> Option<String> {
    let file = File::open(path).ok()?;
    let mut buf = vec![0; 4096];
    let len = read_whole(&file, &mut buf).ok()??;
    buf.truncate(len);
    String::from_utf8(buf).ok()
}

/// The first line of a file (without its newline), from one read of at most 64 bytes: a `cgroup.procs`'s
/// first pid, however many processes a container starts.
pub(crate) fn first_line(path: &Path) -> Option<String> {
    let file = File::open(path).ok()?;
    let mut buf = [0u8; 64];
    let n = loop {
        match file.read_at(&mut buf, 0) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    };
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    text.split_once('\n').map(|(line, _)| line.to_owned())
}

/// Below this many bytes a read that returned less than asked was the content's end.
///
/// A seq_file (cgroupfs, procfs) hands out at most one page of whole records per read, so a read of a file
/// longer than a page returns short (a page minus less than one record) while more follows: `/proc/<pid>/net/dev`
/// with 40 interfaces comes in reads of ~4,000 bytes. A read shorter than half a page leaves room for a record of
/// more than half a page, which no file read here has, so it ends the content, and the extra `read` that would
/// only return 0 is saved for the small files sampled every second.
const SHORT_READ_ENDS: usize = 2048;

/// Reads from offset 0 into `buf`, growing it as needed; the length, or `None` past [`MAX_FILE_BYTES`].
fn read_whole(file: &File, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    if buf.is_empty() {
        buf.resize(4096, 0);
    }
    let mut len = 0;
    loop {
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => return Ok(Some(len)),
            Ok(n) => {
                len += n;
                if len > MAX_FILE_BYTES {
                    return Ok(None);
                }
                if len < buf.len() && n < SHORT_READ_ENDS {
                    return Ok(Some(len));
                }
                if len == buf.len() {
                    buf.resize((buf.len() * 2).min(MAX_FILE_BYTES + 1), 0);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// FNV-1a: the cache keys are a few dozen short paths, SipHash's DoS resistance buys nothing here.
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

/// How sampling reads files: open-read-close each time, or keep descriptors open and `pread` from 0.
///
/// Opening a cgroup file costs several times more than reading it (kernfs allocates per open), so a
/// long-lived [`crate::cgroup::Sampler`] caches descriptors; seq_file regenerates the content on every
/// read at offset 0. A failed read drops the descriptor so the next call reopens (the cgroup may have
/// been recreated); a file that does not exist is remembered as absent.
#[derive(Debug, Default)]
pub(crate) struct Files {
    cache: Option<FnvMap<Vec<u8>, Option<File>>>,
    buf: Vec<u8>,
    /// The latest [`Self::read`] stopped at [`MAX_FILE_BYTES`].
    oversized: bool,
}

impl Files {
    /// No caching: each read opens the file.
    pub(crate) fn uncached() -> Self {
        Self {
            cache: None,
            buf: Vec::new(),
            oversized: false,
        }
    }

    /// Keep descriptors open between reads.
    pub(crate) fn cached() -> Self {
        Self {
            cache: Some(FnvMap::default()),
            buf: vec![0; 8192],
            oversized: false,
        }
    }

    /// The file's content, `None` when missing, unreadable, not UTF-8 or over [`MAX_FILE_BYTES`] (which
    /// [`Self::oversized`] then says).
    pub(crate) fn read(&mut self, path: &Path) -> Option<&str> {
        self.oversized = false;
        let len = match &mut self.cache {
            None => {
                let file = File::open(path).ok()?;
                read_whole(&file, &mut self.buf).ok()?
            }
            Some(cache) => {
                // Keyed by bytes: hashing a Path walks its components, which costs more than the read.
                let key = path.as_os_str().as_encoded_bytes();
                let entry = match cache.get_mut(key) {
                    Some(entry) => entry,
                    None => {
                        let opened = match File::open(path) {
                            Ok(f) => Some(f),
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                            // Transient (EMFILE, EACCES...): do not remember, try again next time.
                            Err(_) => return None,
                        };
                        cache.entry(key.to_vec()).or_insert(opened)
                    }
                };
                let file = entry.as_ref()?;
                match read_whole(file, &mut self.buf) {
                    Ok(len) => len,
                    Err(_) => {
                        cache.remove(key);
                        return None;
                    }
                }
            }
        };
        let Some(len) = len else {
            self.oversized = true;
            return None;
        };
        std::str::from_utf8(&self.buf[..len]).ok()
    }

    /// Whether the latest [`Self::read`] found the file over [`MAX_FILE_BYTES`].
    pub(crate) fn oversized(&self) -> bool {
        self.oversized
    }

    /// A single-number file.
    pub(crate) fn u64(&mut self, path: &Path) -> Option<u64> {
        u64_value(self.read(path)?)
    }

    /// Forgets a cached descriptor (after the file's owner went away).
    pub(crate) fn forget(&mut self, path: &Path) {
        if let Some(cache) = &mut self.cache {
            cache.remove(path.as_os_str().as_encoded_bytes());
        }
    }
}

/// A single unsigned number; `max` and out-of-range values are `None`.
pub(crate) fn u64_value(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A single-value file holding a number.
pub(crate) fn u64_file(path: &Path) -> Option<u64> {
    u64_value(&read(path)?)
}

/// A limit: `Some(None)` for `max` (unlimited), `Some(Some(n))` for a number, `None` when malformed.
pub(crate) fn limit_value(text: &str) -> Option<Option<u64>> {
    let text = text.trim();
    if text == "max" {
        return Some(None);
    }
    text.parse().ok().map(Some)
}

/// Looks up `key` in flat keyed content (`key value` per line).
pub(crate) fn keyed<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let mut parts = line.split_ascii_whitespace();
        (parts.next()? == key).then(|| parts.next()).flatten()
    })
}

/// Looks up several keys of flat keyed content in one pass (`memory.stat` has dozens of lines).
pub(crate) fn keyed_many<const N: usize>(text: &str, keys: [&str; N]) -> [Option<u64>; N] {
    let mut out = [None; N];
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        if let Some(i) = keys.iter().position(|k| *k == key) {
            out[i] = value.parse().ok();
        }
    }
    out
}

/// Looks up `key` in flat keyed content and parses it as a number.
pub(crate) fn keyed_u64(text: &str, key: &str) -> Option<u64> {
    keyed(text, key)?.parse().ok()
}

/// One line of a pressure-stall file (`some avg10=.. avg60=.. avg300=.. total=..`).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PsiLine {
    /// Share of wall time stalled over the last 10 s, in percent.
    pub avg10: f64,
    /// Same over 60 s.
    pub avg60: f64,
    /// Same over 300 s.
    pub avg300: f64,
    /// Total stall time since the cgroup was created, in microseconds.
    pub total_us: u64,
}

/// A pressure-stall file: `some` is always there when the file is, `full` is absent for cpu on old kernels.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pressure {
    /// At least one task stalled.
    pub some: PsiLine,
    /// All non-idle tasks stalled at once.
    pub full: Option<PsiLine>,
}

fn psi_line(rest: &str) -> Option<PsiLine> {
    let mut line = PsiLine::default();
    let mut seen = 0;
    for kv in rest.split_ascii_whitespace() {
        let (key, value) = kv.split_once('=')?;
        match key {
            "avg10" => line.avg10 = value.parse().ok().filter(|v: &f64| v.is_finite())?,
            "avg60" => line.avg60 = value.parse().ok().filter(|v: &f64| v.is_finite())?,
            "avg300" => line.avg300 = value.parse().ok().filter(|v: &f64| v.is_finite())?,
            "total" => line.total_us = value.parse().ok()?,
            _ => continue,
        }
        seen += 1;
    }
    (seen == 4).then_some(line)
}

/// Parses `cpu.pressure` / `memory.pressure` / `io.pressure`; `None` unless a well-formed `some` line exists.
pub(crate) fn pressure(text: &str) -> Option<Pressure> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("some ") {
            some = psi_line(rest);
        } else if let Some(rest) = line.strip_prefix("full ") {
            full = psi_line(rest);
        }
    }
    Some(Pressure { some: some?, full })
}

/// Totals over the non-loopback interfaces of `/proc/<pid>/net/dev`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetDevTotals {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
}

/// Parses `/proc/<pid>/net/dev`, skipping `lo` and malformed lines; `None` if no interface line parsed.
pub(crate) fn net_dev(text: &str) -> Option<NetDevTotals> {
    let mut totals = NetDevTotals::default();
    let mut any = false;
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let fields: Vec<u64> = counters
            .split_ascii_whitespace()
            .map_while(|f| f.parse().ok())
            .collect();
        if fields.len() < 10 {
            continue;
        }
        any = true;
        totals.rx_bytes = totals.rx_bytes.saturating_add(fields[0]);
        totals.rx_packets = totals.rx_packets.saturating_add(fields[1]);
        totals.tx_bytes = totals.tx_bytes.saturating_add(fields[8]);
        totals.tx_packets = totals.tx_packets.saturating_add(fields[9]);
    }
    any.then_some(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_reads_see_new_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, "1\n").expect("write");
        let mut files = Files::cached();
        assert_eq!(files.u64(&file), Some(1));
        std::fs::write(&file, "22\n").expect("rewrite in place");
        assert_eq!(files.u64(&file), Some(22));
        let big = "x".repeat(20_000);
        std::fs::write(&file, &big).expect("big");
        assert_eq!(files.read(&file).map(|s| s.len()), Some(20_000));
        let missing = dir.path().join("missing");
        assert_eq!(files.read(&missing), None);
        std::fs::write(&missing, "3").expect("appears later");
        assert_eq!(files.u64(&missing), None, "remembered as absent");
        files.forget(&missing);
        assert_eq!(files.u64(&missing), Some(3));
        std::fs::write(&file, [0xffu8, 0xfe]).expect("binary");
        assert_eq!(files.read(&file), None);
        assert_eq!(Files::uncached().u64(&missing), Some(3));
    }

    #[test]
    fn a_seq_file_longer_than_a_page_is_read_whole() {
        // procfs hands out a page of whole records per read, so a file of many short records comes in reads
        // short of the buffer: 300 mappings that cannot merge make /proc/self/maps ~25 KiB of them.
        let page = 4096;
        let maps: Vec<usize> = (0..300)
            .map(|i| {
                let prot = if i % 2 == 0 {
                    libc::PROT_READ
                } else {
                    libc::PROT_NONE
                };
                // SAFETY: a fresh private anonymous mapping, unmapped below, never dereferenced.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        page,
                        prot,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                assert_ne!(p, libc::MAP_FAILED);
                p as usize
            })
            .collect();
        let path = Path::new("/proc/self/maps");
        let mut cached = Files::cached();
        let by_files = cached.read(path).map(|t| t.lines().count());
        let by_read = read(path).map(|t| t.lines().count());
        let whole = std::fs::read_to_string(path).expect("read maps");
        for p in maps {
            // SAFETY: mapped above with this length.
            unsafe { libc::munmap(p as *mut libc::c_void, page) };
        }
        assert!(whole.len() > 2 * page, "maps has {} bytes", whole.len());
        assert_eq!(by_files, Some(whole.lines().count()));
        assert_eq!(by_read, Some(whole.lines().count()));
    }

    #[test]
    fn a_file_past_the_bound_is_not_read_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (big, small) = (dir.path().join("big"), dir.path().join("small"));
        std::fs::write(&big, "x".repeat(MAX_FILE_BYTES + 1)).expect("write");
        std::fs::write(&small, "x".repeat(MAX_FILE_BYTES)).expect("write");
        let mut files = Files::cached();
        assert_eq!(files.read(&big), None);
        assert!(files.oversized());
        assert!(files.buf.len() <= MAX_FILE_BYTES + 1, "{}", files.buf.len());
        assert_eq!(files.read(&small).map(str::len), Some(MAX_FILE_BYTES));
        assert!(!files.oversized());
        assert_eq!(read(&big), None);
        std::fs::write(&big, format!("{}\n{}", 4242, "1\n".repeat(200_000))).expect("write");
        assert_eq!(first_line(&big).as_deref(), Some("4242"));
        std::fs::write(&big, "x".repeat(100)).expect("write");
        assert_eq!(first_line(&big), None, "no line within the first read");
    }

    #[test]
    fn numbers_and_limits() {
        assert_eq!(u64_value("42\n"), Some(42));
        assert_eq!(u64_value(""), None);
        assert_eq!(u64_value("max"), None);
        assert_eq!(u64_value("99999999999999999999999"), None);
        assert_eq!(u64_value("-1"), None);
        assert_eq!(limit_value("max\n"), Some(None));
        assert_eq!(limit_value("7"), Some(Some(7)));
        assert_eq!(limit_value(""), None);
        assert_eq!(limit_value("184467440737095516150"), None);
    }

    #[test]
    fn keyed_lookup() {
        let text = "nr_periods 5\nnr_throttled\nthrottled_time 18446744073709551615\nbad x\n";
        assert_eq!(keyed_u64(text, "nr_periods"), Some(5));
        assert_eq!(keyed_u64(text, "nr_throttled"), None);
        assert_eq!(keyed_u64(text, "throttled_time"), Some(u64::MAX));
        assert_eq!(keyed_u64(text, "bad"), None);
        assert_eq!(keyed_u64(text, "missing"), None);
        assert_eq!(keyed_u64("", "x"), None);
        assert_eq!(
            keyed_many(text, ["throttled_time", "nr_periods", "x", "bad"]),
            [Some(u64::MAX), Some(5), None, None]
        );
    }

    #[test]
    fn pressure_files() {
        let p = pressure(
            "some avg10=1.50 avg60=0.20 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=99\n",
        )
        .expect("well formed");
        assert_eq!(p.some.avg10, 1.5);
        assert_eq!(p.some.total_us, 1234);
        assert_eq!(p.full.map(|f| f.total_us), Some(99));
        let p = pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n").expect("some only");
        assert_eq!(p.full, None);
        assert_eq!(pressure(""), None);
        assert_eq!(pressure("some"), None);
        assert_eq!(pressure("so"), None);
        assert_eq!(pressure("some avg10=x avg60=0 avg300=0 total=1"), None);
        assert_eq!(pressure("some avg10=NaN avg60=0 avg300=0 total=1"), None);
        assert_eq!(
            pressure("some avg10=0 avg60=0 avg300=0 total=99999999999999999999999"),
            None
        );
    }

    #[test]
    fn net_dev_totals() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 100 2 0 0 0 0 0 0 100 2 0 0 0 0 0 0\n  eth0: 1000 10 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n  eth1: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n  bad: 1 2\n";
        let t = net_dev(text).expect("two interfaces");
        assert_eq!(
            t,
            NetDevTotals {
                rx_bytes: 1001,
                rx_packets: 11,
                tx_bytes: 501,
                tx_packets: 6
            }
        );
        assert_eq!(net_dev(""), None);
        assert_eq!(
            net_dev("a\nb\n  lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n"),
            None
        );
    }
}

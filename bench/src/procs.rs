//! Child processes under test (mock, bare proxy, tollgate): start, wait for `listening on`, and always kill.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const TAIL_LINES: usize = 30;

/// A running child; `Drop` kills and reaps it, so an error anywhere in the run leaves nothing behind.
pub struct ChildProc {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl ChildProc {
    /// Starts `cmd` and waits until it prints `listening on ADDR` on stdout or stderr.
    /// `known` is the address it was told to use, taken when the line carries no parseable address.
    pub fn start(name: &'static str, mut cmd: Command, known: Option<SocketAddr>, timeout: Duration) -> Result<Self> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        if !Path::new(&program).exists() {
            bail!("{name}: {program} not found; build it first (see the reproduce command in --help)");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name} ({program})"))?;
        let (tx, rx) = mpsc::channel::<String>();
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        if let Some(out) = child.stdout.take() {
            pump(out, tx.clone(), tail.clone());
        }
        if let Some(err) = child.stderr.take() {
            pump(err, tx, tail.clone());
        }
        let mut me = ChildProc { name, addr: known.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))), child, tail };

        let deadline = Instant::now() + timeout;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => match parse_listen(&line) {
                    Some(Some(addr)) => {
                        me.addr = addr;
                        break;
                    }
                    Some(None) if known.is_some() => break,
                    _ => {}
                },
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("{name} closed its output before listening:\n{}", me.tail_text())
                }
            }
            me.check_alive()?;
            if Instant::now() >= deadline {
                bail!("{name} did not print `listening on` within {timeout:?}:\n{}", me.tail_text());
            }
        }
        Ok(me)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the child's last output lines if it has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}); last output:\n{}", self.name, self.tail_text());
        }
        Ok(())
    }

    fn tail_text(&self) -> String {
        // Let the pump threads catch the last lines of a child that just died.
        std::thread::sleep(Duration::from_millis(50));
        match self.tail.lock() {
            Ok(t) => t.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"),
            Err(_) => String::new(),
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads lines until EOF: forwards them while someone listens and keeps the last few, so the pipe never fills.
fn pump(r: impl Read + Send + 'static, tx: mpsc::Sender<String>, tail: Arc<Mutex<VecDeque<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut t) = tail.lock() {
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line.clone());
            }
            let _ = tx.send(line);
        }
    });
}

/// `None`: not a listen line. `Some(None)`: a listen line without a parseable address.
pub fn parse_listen(line: &str) -> Option<Option<SocketAddr>> {
    let clean = strip_ansi(line);
    let rest = &clean[clean.find("listening on")? + "listening on".len()..];
    let addr = rest.split_whitespace().find_map(|tok| {
        let tok = tok.rsplit('=').next().unwrap_or(tok);
        let tok = tok.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']')));
        let tok = tok.strip_prefix("http://").unwrap_or(tok);
        tok.parse::<SocketAddr>().ok()
    });
    Some(addr)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequence: ESC [ params final-byte(@..~)
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) && d != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A loopback port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Resident and peak resident memory in KiB, from /proc/PID/status.
pub fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |key: &str| -> Option<u64> {
        status.lines().find_map(|l| l.strip_prefix(key)?.trim().trim_end_matches("kB").trim().parse().ok())
    };
    match (field("VmRSS:"), field("VmHWM:")) {
        (Some(rss), Some(hwm)) => Ok((rss, hwm)),
        _ => bail!("no VmRSS/VmHWM in /proc/{pid}/status"),
    }
}

/// CPU seconds (user + system, all threads) a process has used so far, from /proc/PID/stat.
pub fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = stat_cpu_ticks(&stat).with_context(|| format!("no utime/stime in /proc/{pid}/stat"))?;
    Ok(ticks as f64 / clock_ticks_per_sec())
}

/// utime + stime (fields 14 and 15, in clock ticks) of a /proc/PID/stat line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from its closing parenthesis.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = stat.get(stat.rfind(')')? + 1..)?;
    // After the name: state (3), ppid, pgrp, session, tty_nr, tpgid, flags, minflt, cminflt, majflt,
    // cmajflt (13), then utime (14) and stime (15).
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a system constant; it has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        // USER_HZ on every Linux architecture the bench runs on.
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_lines() {
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(parse_listen("listening on 127.0.0.1:4000"), Some(Some(a)));
        assert_eq!(
            parse_listen("2026-01-01T00:00:00Z  INFO tollgate: listening on addr=127.0.0.1:4000"),
            Some(Some(a))
        );
        assert_eq!(parse_listen("\u{1b}[32m INFO\u{1b}[0m listening on http://127.0.0.1:4000/"), Some(Some(a)));
        assert_eq!(parse_listen("INFO listening on"), Some(None));
        assert_eq!(parse_listen("starting up"), None);
    }

    #[test]
    fn rss_of_self() {
        let (rss, hwm) = rss_kib(std::process::id()).unwrap();
        assert!(rss > 0 && hwm >= rss);
    }

    #[test]
    fn cpu_ticks_from_stat() {
        // A name with a space and a parenthesis; utime 250 and stime 37 ticks are fields 14 and 15.
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1200 0 3 0 250 37 0 0 20 0 9 0 100 1000 50";
        assert_eq!(stat_cpu_ticks(stat), Some(287));
        assert_eq!(stat_cpu_ticks("4242 (short) S 1 2"), None);
        assert_eq!(stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn cpu_of_self() {
        let s = cpu_secs(std::process::id()).unwrap();
        assert!(s.is_finite() && s >= 0.0);
    }
}

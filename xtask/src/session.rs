//! Scripted console sessions: run QEMU with its serial console on stdin/stdout, wait
//! for text to appear and type input, as a person at the terminal would (GRUB's prompt
//! is not followed by a newline, so waiting works on raw bytes, not on lines).

use crate::qemu::{HvResult, HvRun, Outcome, Transcript, ensure_qemu, hypervisor_command};
use crate::{Result, describe, err};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One step of a session: wait until `wait_for` appears in the console output (after
/// where the previous step's text was found), then type `send`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Text to wait for.
    pub wait_for: String,
    /// Bytes to type once it appeared (may be empty).
    pub send: Vec<u8>,
}

impl Step {
    /// Wait for `wait_for`, then type `send`.
    pub fn new(wait_for: &str, send: &[u8]) -> Self {
        Step {
            wait_for: wait_for.into(),
            send: send.to_vec(),
        }
    }
}

/// What a session produced.
#[derive(Clone, Debug)]
pub struct SessionOutput {
    /// Console lines (split at '\n', '\r' removed; a last partial line included).
    pub transcript: Transcript,
    /// QEMU's stderr.
    pub stderr: String,
    /// QEMU's exit status (`None` if killed).
    pub status: Option<i32>,
}

/// How a session ends once every step was played.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Wait for the process to exit by itself.
    Exit,
    /// Kill it as soon as the last step's text appeared (its input, if any, is sent
    /// first). `status` is then `None`.
    AfterLastStep,
}

/// Runs `cmd` with stdin and stdout piped, plays `steps` in order, then ends as `end`
/// says. Fails (killing the process) when `timeout` passes first; the error names the
/// step being waited for and carries the end of the output.
pub fn run_session(
    mut cmd: Command,
    timeout: Duration,
    steps: &[Step],
    end: End,
) -> Result<SessionOutput> {
    let what = describe(&cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err!("could not start {what}: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");

    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let deadline = Instant::now() + timeout;
    let mut output: Vec<u8> = Vec::new();
    let mut searched_from = 0usize;
    let mut next_step = 0usize;
    let mut timed_out = false;
    let mut killed = false;
    loop {
        // Play every step whose text is already there.
        while let Some(step) = steps.get(next_step) {
            let Some(at) = find(&output[searched_from..], step.wait_for.as_bytes()) else {
                break;
            };
            searched_from += at + step.wait_for.len();
            // A process that already exited cannot take input; its status tells.
            let _ = stdin.write_all(&step.send).and_then(|()| stdin.flush());
            next_step += 1;
        }
        if end == End::AfterLastStep && next_step == steps.len() {
            let _ = child.kill();
            killed = true;
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => output.extend_from_slice(&chunk),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if timed_out {
        let _ = child.kill();
    }
    drop(stdin);
    let status = child.wait().map_err(|e| err!("waiting for {what}: {e}"))?;
    let _ = reader.join();
    for chunk in rx.try_iter() {
        output.extend_from_slice(&chunk);
    }
    let stderr = stderr_reader.join().unwrap_or_default();
    let transcript = to_transcript(&output);
    if timed_out {
        let waiting = match steps.get(next_step) {
            Some(step) => format!("waiting for {:?}", step.wait_for),
            None => "waiting for QEMU to exit after the last step".into(),
        };
        return Err(err!(
            "QEMU timed out after {timeout:?} ({waiting}) and was killed; last console lines:\n{}\nQEMU stderr: {}\ncommand: {what}",
            transcript.tail(40),
            stderr.trim()
        ));
    }
    if next_step < steps.len() {
        return Err(err!(
            "QEMU exited (status {:?}) before {:?} appeared; last console lines:\n{}\nQEMU stderr: {}\ncommand: {what}",
            status.code(),
            steps[next_step].wait_for,
            transcript.tail(40),
            stderr.trim()
        ));
    }
    Ok(SessionOutput {
        transcript,
        stderr,
        status: if killed { None } else { status.code() },
    })
}

/// Boots the hypervisor with the guests and plays `steps` on its serial console.
pub fn run_hypervisor_session(run: &HvRun, steps: &[Step], end: End) -> Result<HvResult> {
    let qemu = ensure_qemu()?;
    let bundle = run.write_bundle()?;
    let cmd = hypervisor_command(&qemu, run, &bundle);
    let timeout = run.timeout.unwrap_or(Duration::from_secs(300));
    let out = run_session(cmd, timeout, steps, end)?;
    Ok(HvResult {
        transcript: out.transcript,
        outcome: Outcome::from_status(out.status),
        stderr: out.stderr,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn to_transcript(output: &[u8]) -> Transcript {
    let text = String::from_utf8_lossy(output);
    let mut lines: Vec<String> = text.split('\n').map(|l| l.replace('\r', "")).collect();
    if lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    Transcript { lines }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_wait_for_partial_lines_and_type() {
        // A "prompt" without newline that echoes one typed line, twice.
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "printf 'ready> '; read a; echo \"got $a\"; printf 'again> '; read b; echo \"got $b\"; exit 7",
        ]);
        let out = run_session(
            cmd,
            Duration::from_secs(60),
            &[
                Step::new("ready> ", b"one\n"),
                Step::new("again> ", b"two\n"),
            ],
            End::Exit,
        )
        .unwrap();
        assert_eq!(out.status, Some(7));
        assert_eq!(out.transcript.lines, ["ready> got one", "again> got two"]);
    }

    #[test]
    fn a_missing_marker_is_a_timeout_naming_it() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hello; exec sleep 600"]);
        let e = run_session(
            cmd,
            Duration::from_millis(300),
            &[Step::new("never", b"x")],
            End::Exit,
        )
        .unwrap_err();
        assert!(e.0.contains("waiting for \"never\""), "{e}");
        assert!(e.0.contains("hello"), "{e}");
    }

    #[test]
    fn exiting_before_the_marker_is_an_error() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo bye"]);
        let e = run_session(
            cmd,
            Duration::from_secs(60),
            &[Step::new("prompt", b"x")],
            End::Exit,
        )
        .unwrap_err();
        assert!(e.0.contains("before \"prompt\" appeared"), "{e}");
    }

    #[test]
    fn a_session_can_end_at_its_last_marker() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "printf 'rescue> '; exec sleep 600"]);
        let out = run_session(
            cmd,
            Duration::from_secs(60),
            &[Step::new("rescue>", b"")],
            End::AfterLastStep,
        )
        .unwrap();
        assert_eq!(out.status, None);
        assert_eq!(out.transcript.lines, ["rescue> "]);
    }
}

//! The `--shared` program's runs: start it, pump its output into the hub's fan-out, write
//! the clients' input to its stdin (whole batches, never interleaved; with `ids` each line
//! prefixed by its client's id), and stop it. Restarts and `once` are the hub's
//! ([`super::Hub::supervise`]); who receives the output is the hub's too.

use std::io;
use std::pin::pin;
use std::process::ExitStatus;

use bytes::BytesMut;
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::{Hub, Input, Source, INPUT_BATCH, OUTPUT_DRAIN};
use crate::child;
use crate::config::Program;
use crate::framing::Decoder;
use crate::reap;
use crate::relay;
use crate::session;

impl Hub {
    /// One run of `program`; `None` when it was stopped for shutdown.
    pub(super) async fn run_once(
        &self,
        program: &Program,
        input: &mut mpsc::Receiver<Input>,
    ) -> Option<io::Result<ExitStatus>> {
        let (mut child, io) = match session::start(program, self.env.clone(), None) {
            Ok(started) => started,
            Err(e) => {
                tracing::error!(program = %program.path.display(), error = %e, "failed to start the shared program");
                return if self.shutdown.is_cancelled() {
                    None
                } else {
                    Some(Err(e))
                };
            }
        };
        let session::ProgramIo {
            input: stdin,
            output: mut stdout,
            stderr,
        } = io;
        tracing::info!(pid = child.id(), "shared program started");
        // Started on pipes, so stderr is its own pipe.
        let stderr_task = stderr.map(|e| tokio::spawn(child::log_stderr(e, None).in_current_span()));
        let mut exited = false;
        let mut stopping = false;
        {
            let mut out = pin!(self.pump_output(&mut stdout));
            let mut inp = pin!(feed_input(input, stdin, self.settings.ids));
            tokio::select! {
                () = &mut out => {}
                () = &mut inp => {}
                () = child.exited() => {
                    exited = true;
                    child.signal_group(Signal::SIGKILL);
                    if tokio::time::timeout(OUTPUT_DRAIN, &mut out).await.is_err() {
                        tracing::warn!("shared program exited but its output is still open; no longer reading it");
                    }
                }
                () = self.shutdown.cancelled() => stopping = true,
            }
        }
        let status = match exited {
            true => reap::collect(child),
            false => reap::stop(child, self.close_grace).await.status,
        };
        session::finish_stderr(stderr_task).await;
        if stopping {
            let exit = status.as_ref().map_or_else(|e| e.to_string(), child::describe);
            tracing::info!(exit = %exit, "shared program stopped for shutdown");
            return None;
        }
        Some(status)
    }

    /// Reads the program's output and hands each message to the clients; returns at EOF
    /// or on a read or framing error (logged).
    async fn pump_output(&self, stdout: &mut (dyn AsyncRead + Unpin + Send)) {
        let mut decoder = Decoder::new(self.framing, self.max_message);
        let mut messages = Vec::new();
        loop {
            let (decoded, done) = match relay::read_chunk(stdout).await {
                Ok(Some(chunk)) => (decoder.push(chunk, &mut messages), false),
                Ok(None) => (decoder.finish(&mut messages), true),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the shared program's output failed");
                    (decoder.finish(&mut messages), true)
                }
            };
            self.broadcast(&mut messages, Source::Program);
            if let Err(e) = decoded {
                tracing::warn!(
                    offset = e.offset,
                    reason = e.reason,
                    "shared program output broke --framing=lenprefix; stopping it"
                );
                return;
            }
            if done {
                return;
            }
        }
    }
}

/// Writes client input to the program, a batch at a time (with `ids`, `ID ` before each
/// line). If the program closes its stdin, input is read and discarded (with a log line)
/// until the run ends; returns only when the hub is gone.
async fn feed_input(input: &mut mpsc::Receiver<Input>, mut stdin: Box<dyn AsyncWrite + Unpin + Send>, ids: bool) {
    let mut batch = BytesMut::new();
    let mut discarded = 0u64;
    let mut open = true;
    while let Some(first) = input.recv().await {
        if !open {
            discarded += 1;
            tracing::info!(
                batches = discarded,
                "shared program no longer reads stdin; client input discarded"
            );
            continue;
        }
        add(&mut batch, &first, ids);
        while batch.len() < INPUT_BATCH {
            match input.try_recv() {
                Ok(more) => add(&mut batch, &more, ids),
                Err(_) => break,
            }
        }
        if let Err(e) = stdin.write_all(&batch).await {
            tracing::warn!(error = %e, "shared program's stdin is closed; discarding further client input");
            open = false;
        }
        batch.clear();
    }
}

/// Appends one client's whole messages, each line after `ID ` with `ids`.
fn add(batch: &mut BytesMut, input: &Input, ids: bool) {
    if !ids {
        batch.extend_from_slice(&input.bytes);
        return;
    }
    let prefix = format!("{} ", input.from);
    for line in input.bytes.split_inclusive(|b| *b == b'\n') {
        batch.extend_from_slice(prefix.as_bytes());
        batch.extend_from_slice(line);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn ids_prefix_every_line_of_a_batch() {
        let mut batch = BytesMut::new();
        let input = Input {
            from: 7,
            bytes: Bytes::from_static(b"a\nb\n"),
        };
        add(&mut batch, &input, true);
        add(&mut batch, &input, false);
        assert_eq!(&batch[..], b"7 a\n7 b\na\nb\n");
    }
}

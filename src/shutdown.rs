//! Signals → cancellation: SIGINT or SIGTERM cancels the token, which stops accepting and
//! drains every session (see [`crate::server::run`]). A second signal during the drain is
//! logged and otherwise ignored: the drain is already bounded.

use std::io;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Installs the handlers now (so a signal that arrives right after startup is not lost)
/// and cancels `token` on the first SIGINT or SIGTERM.
pub fn watch_signals(token: CancellationToken) -> io::Result<()> {
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            if token.is_cancelled() {
                tracing::info!(signal = name, "already shutting down");
            } else {
                tracing::info!(signal = name, "shutting down: closing sessions and stopping programs");
                token.cancel();
            }
        }
    });
    Ok(())
}

//! The `wsbridge` binary: flags → `Config` (a usage error exits 2, printed like clap's
//! own; what the flags name that cannot be found or used exits 1), logging, TLS files
//! (bad ones exit 1), listeners — inherited from systemd or bound here (failure exits 3)
//! — signal handling (SIGINT/SIGTERM drain, SIGHUP reloads the certificate and the
//! `--htpasswd` file), then
//! [`wsbridge::server::serve`] or, with `--connect`, [`wsbridge::outbound::run`].

use std::process::ExitCode;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use wsbridge::cli::Cli;
use wsbridge::config::{ConfigError, LogLevel, Mode};
use wsbridge::htpasswd::Htpasswd;
use wsbridge::listen::{self, Listener};
use wsbridge::server::{self, Tls};
use wsbridge::{logging, shutdown, Config};

fn main() -> ExitCode {
    wsbridge::child::protect_inherited_fds();
    // Before anything else reads the environment or starts a thread.
    let activated = listen::from_systemd();
    let cli = Cli::parse_args(std::env::args_os());
    let config = match Config::try_from(cli) {
        Ok(c) => c,
        Err(ConfigError::Usage(e)) => Cli::exit_usage(e),
        Err(ConfigError::Resolve(e)) => return fail(e, 1),
    };
    if let Err(e) = logging::init(config.log_level, config.log_format) {
        return fail(e, 1);
    }
    let Config {
        session,
        threads,
        log_level,
        mode,
        ..
    } = config;
    // Without the `connect` feature serving is the only mode, hence the allow.
    #[allow(clippy::infallible_destructuring_match)]
    let settings = match mode {
        Mode::Serve(s) => s,
        #[cfg(feature = "connect")]
        Mode::Connect(c) => return connect(session, c, threads),
    };
    let tls = match server::load_tls(&settings) {
        Ok(t) => t,
        Err(e) => return fail(e, 1),
    };
    let (mut listeners, socket_file) = match activated {
        Ok(Some(inherited)) => {
            tracing::info!(sockets = inherited.len(), "using sockets from systemd (LISTEN_FDS)");
            (inherited, None)
        }
        Ok(None) => match listen::bind(&settings) {
            Ok(b) => (b.listeners, b.unix_socket),
            Err(e) => return fail(e, 3),
        },
        Err(e) => return fail(e, 3),
    };
    match listen::bind_metrics(&settings) {
        Ok(metrics) => listeners.extend(metrics),
        Err(e) => return fail(e, 3),
    }
    let runtime = match runtime(threads) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let quiet = log_level == LogLevel::None;
    let result = runtime.block_on(async move {
        let token = CancellationToken::new();
        shutdown::watch_signals(token.clone())?;
        watch_reload(tls.clone(), settings.access.htpasswd.clone())?;
        if !quiet {
            announce(&listeners, tls.is_some());
        }
        server::serve(listeners, session, settings, tls, token).await
    });
    if let Some(f) = socket_file {
        f.remove();
    }
    match result {
        Ok(status) => ExitCode::from(status),
        Err(e) => fail(e, 1),
    }
}

/// `--connect`: one connection out (or a series with `--reconnect`); exits with the
/// program's status, or 0/1 in pipe mode (see [`wsbridge::outbound`]).
#[cfg(feature = "connect")]
fn connect(
    session: wsbridge::config::Session,
    settings: wsbridge::config::Connect,
    threads: Option<std::num::NonZeroUsize>,
) -> ExitCode {
    use wsbridge::outbound;
    let client = match outbound::prepare(settings) {
        Ok(c) => c,
        Err(e) => return fail(e, 1),
    };
    let runtime = match runtime(threads) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let code = runtime.block_on(async move {
        let token = CancellationToken::new();
        if let Err(e) = shutdown::watch_signals(token.clone()) {
            eprintln!("wsbridge: cannot watch signals: {e}");
            return 1;
        }
        outbound::run(client, &session, token).await
    });
    // A read of our stdin may still be blocked in a runtime thread; do not wait for it.
    runtime.shutdown_background();
    ExitCode::from(code)
}

/// The runtime both modes run on: `--threads` worker threads (tokio's default, one per
/// CPU core, without it), or with `--threads=1` everything on the main thread, which
/// saves a thread and the hand-offs between threads on a single-core board. Exit 1 if it
/// cannot start.
///
/// One `epoll_wait` returns at most 256 events rather than tokio's default 1,024: the
/// most tokio advises for a multi-thread worker, whose local queue holds 256 tasks, and
/// 9 KiB less memory for the event buffer.
fn runtime(threads: Option<std::num::NonZeroUsize>) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = match threads.map(std::num::NonZeroUsize::get) {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .max_io_events_per_tick(256)
        .build()
        .map_err(|e| fail(format_args!("cannot start the runtime: {e}"), 1))
}

/// One `wsbridge:` line on stderr, and the exit status to leave with.
fn fail(message: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("wsbridge: {message}");
    ExitCode::from(code)
}

fn announce(listeners: &[Listener], tls: bool) {
    for l in listeners {
        eprintln!("wsbridge: {}", l.announcement(tls));
    }
}

/// SIGHUP rereads `--sslcert`/`--sslkey`; a bad pair is logged and the old one kept.
/// Without TLS it is logged and ignored (rather than killing the server, SIGHUP's
/// default), so `systemctl reload` is always safe. The reload reads files, which can
/// block (a slow disk), so it runs on tokio's blocking pool, never on an async worker
/// that handshakes and sessions need; one reload at a time.
///
/// `--htpasswd` is reread at the same time; a file that fails to load is logged and the
/// old users stay.
fn watch_reload(tls: Option<Tls>, users: Option<Htpasswd>) -> std::io::Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let tls = tls.clone();
            let users = users.clone();
            let reloaded = tokio::task::spawn_blocking(move || {
                reload_users(users.as_ref());
                reload(tls.as_ref());
            });
            if let Err(e) = reloaded.await {
                tracing::error!(signal = "SIGHUP", error = %e, "certificate reload failed; keeping the old one");
            }
        }
    });
    Ok(())
}

fn reload_users(users: Option<&Htpasswd>) {
    match users.map(Htpasswd::reload) {
        None => {}
        Some(Ok(n)) => tracing::info!(signal = "SIGHUP", users = n, "--htpasswd reloaded"),
        Some(Err(e)) => {
            tracing::error!(signal = "SIGHUP", error = %e, "--htpasswd reload failed; keeping the old users")
        }
    }
}

#[cfg(feature = "tls")]
fn reload(tls: Option<&Tls>) {
    match tls.map(Tls::reload) {
        None => tracing::info!(signal = "SIGHUP", "nothing to reload (no --ssl)"),
        Some(Ok(())) => tracing::info!(signal = "SIGHUP", "certificate reloaded"),
        Some(Err(e)) => {
            tracing::error!(signal = "SIGHUP", error = %e, "certificate reload failed; keeping the old one")
        }
    }
}

#[cfg(not(feature = "tls"))]
fn reload(_tls: Option<&Tls>) {
    tracing::info!(signal = "SIGHUP", "nothing to reload (no --ssl)");
}

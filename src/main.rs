//! The `wsbridge` binary: flags → `Config` (usage errors exit 2, bad settings exit 1),
//! logging, binding (failure exits 3), signal handling, then [`wsbridge::run`].

use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use wsbridge::cli::Cli;
use wsbridge::config::LogLevel;
use wsbridge::{logging, shutdown, Config};

fn main() -> ExitCode {
    wsbridge::child::protect_inherited_fds();
    let cli = Cli::parse_args(std::env::args_os());
    let config = match Config::try_from(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wsbridge: {e}");
            return ExitCode::from(1);
        }
    };
    logging::init(config.log_level);
    let listeners = match bind(&config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("wsbridge: {e}");
            return ExitCode::from(3);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wsbridge: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let quiet = config.log_level == LogLevel::None;
    let result = runtime.block_on(async move {
        let token = CancellationToken::new();
        shutdown::watch_signals(token.clone())?;
        if !quiet {
            for l in &listeners {
                if let Ok(addr) = l.local_addr() {
                    eprintln!("wsbridge: listening on ws://{addr}/");
                }
            }
        }
        wsbridge::run(listeners, config, token).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsbridge: {e}");
            ExitCode::from(1)
        }
    }
}

fn bind(config: &Config) -> Result<Vec<TcpListener>, String> {
    let addrs = config.bind_addresses();
    let mut out = Vec::with_capacity(addrs.len());
    for addr in addrs {
        match TcpListener::bind(addr) {
            Ok(l) => out.push(l),
            // No IPv6 on this host: the IPv4 wildcard still serves "all interfaces".
            Err(e) if config.addresses.is_empty() && e.raw_os_error() == Some(libc_eafnosupport()) => {
                let v4 = SocketAddr::from(([0, 0, 0, 0], config.port));
                out.push(TcpListener::bind(v4).map_err(|e| format!("cannot listen on {v4}: {e}"))?);
            }
            Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
        }
    }
    Ok(out)
}

const fn libc_eafnosupport() -> i32 {
    97 // EAFNOSUPPORT on Linux
}

//! Links the release binary with the code it runs at startup and for a first connection
//! placed together, in the order `tools/startup.order` lists (written by
//! `tools/order.sh`). Why: the kernel maps a program's code in 64 KiB windows around
//! each page it touches (fault-around), and the startup code of std, clap, tokio,
//! tracing and wsbridge is spread over most of the binary, so an idle server had about
//! 1.9 MB of its 2.5 MB of code resident. Placed together, it is about 0.4 MB
//! (BENCHMARKS.md, "startup code laid out together").
//!
//! The C runtime's entry code is listed first, and a one-line linker script moves
//! `.init` (run at every start) from the end of the code to just before it. The read-only
//! data those functions read (strings, constants, jump tables: the input sections
//! `tools/startup.rodata` lists, also written by `tools/order.sh`) is gathered the same
//! way into a `.rodata.startup` section before `.rodata`, right after the ELF headers the
//! loader reads anyway; left where the compiler put it, it was spread over four windows
//! of `.rodata`. Only the linker's layout changes, never the code. The files name
//! symbols and sections as this toolchain and Cargo.lock name them; a name the linker
//! does not find is skipped, so a stale file costs memory, not correctness. Linkers that
//! do not know `--symbol-ordering-file` (GNU ld, which the musl targets use, or gold) are
//! detected by linking an empty program with the same flags first; the toolchain's own
//! lld is then used if it has one (`-fuse-ld=lld`), and otherwise the option is left
//! out. `WSBRIDGE_NO_ORDER=1 cargo build --release` builds without any of this (to
//! compare).
//!
//! The relative relocations are packed (`-z pack-relative-relocs`, RELR) when the build
//! machine's C library can load a program linked so (glibc 2.36 or newer): an empty
//! program linked with the option must run here. The loader then reads a bitmap of about
//! 2 KB instead of a 121 KB table of 24-byte entries at every start: that much less
//! binary, and about 0.12 MiB less resident memory. Such a binary needs glibc 2.36 where
//! it runs (the linker records that, so an older loader refuses it with a one-line
//! error naming `GLIBC_ABI_DT_RELR`); `WSBRIDGE_NO_RELR=1 cargo build --release` builds
//! one that runs wherever the build machine's glibc symbols allow (2.34 for a build on
//! Debian 12). Cross builds never pack (the probe cannot run).

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=tools/startup.order");
    println!("cargo::rerun-if-changed=tools/startup.rodata");
    println!("cargo::rerun-if-env-changed=WSBRIDGE_NO_ORDER");
    println!("cargo::rerun-if-env-changed=WSBRIDGE_NO_RELR");
    if env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    if env::var_os("WSBRIDGE_NO_RELR").is_none() {
        let relr = ["-Wl,-z,pack-relative-relocs".to_owned()];
        if probe(&relr, true) {
            link(&relr);
        }
    }
    let dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let order = dir.join("tools/startup.order");
    if env::var_os("WSBRIDGE_NO_ORDER").is_none() && order.is_file() {
        let ordering = [
            format!("-Wl,--symbol-ordering-file={}", order.display()),
            "-Wl,--no-warn-symbol-ordering".to_owned(),
        ];
        if !link_if_accepted(&ordering) {
            // The musl targets link with the C compiler's own linker (GNU ld), which does
            // not know the option; the toolchain's lld does, as for the gnu target.
            if let Some(lld) = rust_lld() {
                link_if_accepted(&[lld, ordering.to_vec()].concat());
            }
        }
        if let Some(init) = init_first() {
            link_if_accepted(&[init]);
        }
        if let Some(rodata) = rodata_first(&dir.join("tools/startup.rodata")) {
            link_if_accepted(&[rodata]);
        }
    }
}

/// The C compiler's flags to link with the lld that comes with this toolchain (its
/// `gcc-ld/ld.lld`), if it has one.
fn rust_lld() -> Option<Vec<String>> {
    let rustc = env::var_os("RUSTC")?;
    let out = Command::new(rustc).args(["--print", "sysroot"]).output().ok()?;
    let sysroot = String::from_utf8(out.stdout).ok()?;
    let dir = Path::new(sysroot.trim()).join(format!("lib/rustlib/{}/bin/gcc-ld", env::var("HOST").ok()?));
    dir.join("ld.lld")
        .is_file()
        .then(|| vec!["-fuse-ld=lld".to_owned(), format!("-B{}", dir.display())])
}

/// Passes `args` to the linker of the `wsbridge` binary if it links an empty program with
/// them; says whether it did.
fn link_if_accepted(args: &[String]) -> bool {
    let accepted = probe(args, false);
    if accepted {
        link(args);
    }
    accepted
}

fn link(args: &[String]) {
    for a in args {
        println!("cargo::rustc-link-arg-bin=wsbridge={a}");
    }
}

/// A linker script that puts `.init` (crti.o's `_init`, which the C library calls at every
/// start) just before `.text`, beside the ordered startup code, rather than after the
/// whole of `.text` in a 64 KiB window of its own.
fn init_first() -> Option<String> {
    linker_script(
        "init-first.ld",
        "SECTIONS { .init : { KEEP (*(SORT_NONE(.init))) } } INSERT BEFORE .text;\n",
    )
}

/// A linker script that gathers the read-only data input sections `list` names (one a
/// line; `#` starts a comment) into `.rodata.startup`, placed before `.rodata`. A name
/// that matches nothing is skipped, as in the symbol ordering file.
fn rodata_first(list: &Path) -> Option<String> {
    let names = std::fs::read_to_string(list).ok()?;
    let patterns: Vec<String> = names
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.contains('"'))
        .map(|l| format!("*(\"{l}\")"))
        .collect();
    if patterns.is_empty() {
        return None;
    }
    linker_script(
        "rodata-first.ld",
        &format!(
            "SECTIONS {{ .rodata.startup : {{ {} }} }} INSERT BEFORE .rodata;\n",
            patterns.join(" ")
        ),
    )
}

/// Writes `text` to `name` in OUT_DIR; the linker flag that reads it as a script.
fn linker_script(name: &str, text: &str) -> Option<String> {
    let script = PathBuf::from(env::var_os("OUT_DIR")?).join(name);
    std::fs::write(&script, text).ok()?;
    Some(format!("-Wl,-T,{}", script.display()))
}

/// Whether the linker this build uses links an empty program with `args`, and with
/// `run`, whether that program then runs here (never in a cross build).
fn probe(args: &[String], run: bool) -> bool {
    let (Some(rustc), Some(out), Ok(target)) = (env::var_os("RUSTC"), env::var_os("OUT_DIR"), env::var("TARGET"))
    else {
        return false;
    };
    if run && env::var("HOST").as_deref() != Ok(target.as_str()) {
        return false;
    }
    let out = Path::new(&out);
    let src = out.join("probe.rs");
    if std::fs::write(&src, "fn main() {}\n").is_err() {
        return false;
    }
    let mut cmd = Command::new(rustc);
    cmd.arg("--target")
        .arg(&target)
        .arg("-o")
        .arg(out.join("probe"))
        .arg(&src);
    // The flags every crate of this build gets (a linker, crt-static, ...).
    if let Ok(flags) = env::var("CARGO_ENCODED_RUSTFLAGS") {
        cmd.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    }
    if let Some(linker) = env::var_os("RUSTC_LINKER") {
        cmd.arg("-C").arg({
            let mut l = std::ffi::OsString::from("linker=");
            l.push(linker);
            l
        });
    }
    for a in args {
        cmd.arg("-C").arg(format!("link-arg={a}"));
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let linked = cmd.status().is_ok_and(|s| s.success());
    linked
        && (!run
            || Command::new(out.join("probe"))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()))
}

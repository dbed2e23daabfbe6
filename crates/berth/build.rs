//! Links the release binary with the code that runs at startup placed first.
//!
//! `startup.order` lists the functions a fresh `berth serve` runs until it answers its first
//! request (made by `scripts/startup-order.sh`). The linker puts them next to each other at the
//! start of `.text`, so starting touches a couple of megabytes of densely packed code instead
//! of pages spread over all 19 MB of it. The kernel maps a binary's code in 64 KiB windows
//! around each page touched, so scattered startup code kept about 12 MB of the binary resident
//! in an idle server (see BENCHMARKS.md, "Idle RSS").
//!
//! The order only moves code; a name the binary does not have is skipped. Names carry hashes
//! that change with the toolchain, so the file helps most with the rustc it was made with
//! (`scripts/startup-order.sh --check` says how much still matches). The option needs LLD:
//! before passing it, this script links an empty program with the same compiler, target,
//! flags and linker, and leaves the option out if that fails. `BERTH_NO_ORDER_FILE` (set to
//! anything) leaves it out too.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=startup.order");
    for var in [
        "BERTH_NO_ORDER_FILE",
        "RUSTC_LINKER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let source = Path::new(&env("CARGO_MANIFEST_DIR")).join("startup.order");
    if env("PROFILE") != "release"
        || env("TARGET") != "x86_64-unknown-linux-gnu"
        || std::env::var_os("BERTH_NO_ORDER_FILE").is_some()
        || !source.is_file()
    {
        return;
    }
    // The linker reads a copy in OUT_DIR: cargo keeps this script's output for a checkout at
    // another path that shares the target directory (its hashes ignore where the workspace
    // lies), and a path into the first checkout would break the second's link once the first
    // is gone.
    let order = PathBuf::from(env("OUT_DIR")).join("startup.order");
    // `-Wl,` splits its argument at commas.
    if order.to_string_lossy().contains(',') {
        println!("cargo:warning=OUT_DIR holds a comma: berth links without startup.order");
        return;
    }
    // Removed first: a copy keeps the source's permissions, and a read-only one could not be
    // copied over.
    let _ = std::fs::remove_file(&order);
    if let Err(e) = std::fs::copy(&source, &order) {
        println!(
            "cargo:warning=could not copy startup.order to OUT_DIR ({e}): berth links without it"
        );
        return;
    }
    let arg = format!("-Wl,--symbol-ordering-file={}", order.display());
    if links_with(&arg) {
        println!("cargo:rustc-link-arg-bin=berth={arg}");
        println!("cargo:rustc-link-arg-bin=berth=-Wl,--no-warn-symbol-ordering");
    } else {
        println!("cargo:warning=the linker does not take --symbol-ordering-file (not LLD?): berth links without startup.order, and an idle server keeps more of its binary resident");
    }
}

/// Whether an empty program links with `arg` added, built the way this crate will be.
fn links_with(arg: &str) -> bool {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let out = PathBuf::from(env("OUT_DIR"));
    let source = out.join("order_probe.rs");
    if std::fs::write(&source, "fn main() {}\n").is_err() {
        return false;
    }
    let rustc = match env("RUSTC") {
        r if r.is_empty() => "rustc".to_owned(),
        r => r,
    };
    let mut cmd = Command::new(rustc);
    cmd.arg("--target")
        .arg(env("TARGET"))
        .arg("-o")
        .arg(out.join("order_probe"))
        .arg(&source);
    for flag in env("CARGO_ENCODED_RUSTFLAGS")
        .split('\x1f')
        .filter(|f| !f.is_empty())
    {
        cmd.arg(flag);
    }
    if let Ok(linker) = std::env::var("RUSTC_LINKER") {
        cmd.arg("-C").arg(format!("linker={linker}"));
    }
    cmd.arg("-C")
        .arg(format!("link-arg={arg}"))
        .arg("-C")
        .arg("link-arg=-Wl,--no-warn-symbol-ordering");
    cmd.output().is_ok_and(|o| o.status.success())
}

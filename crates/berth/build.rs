//! Links the release binary with the code that runs at startup placed first.
//!
//! `startup.order` lists the functions a fresh `berth serve` runs until it answers its first
//! request (made by `scripts/startup-order.sh`). The linker puts them next to each other at the
//! start of `.text`, so starting touches a couple of megabytes of densely packed code instead
//! of pages spread over all twenty. The kernel maps a binary's code in 64 KiB windows around
//! each page touched, so scattered startup code kept about 10 MB of the binary resident in an
//! idle server (see BENCHMARKS.md, "Idle RSS").
//!
//! The order only moves code; a name the binary no longer has is skipped. It needs LLD, which
//! rustc links with by default on x86_64 Linux since Rust 1.90; elsewhere, and with
//! `BERTH_NO_ORDER_FILE` set, the binary links as usual.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=startup.order");
    println!("cargo:rerun-if-env-changed=BERTH_NO_ORDER_FILE");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    if env("PROFILE") != "release"
        || env("TARGET") != "x86_64-unknown-linux-gnu"
        || std::env::var_os("BERTH_NO_ORDER_FILE").is_some()
        || !links_with_lld(&env("RUSTC"), &env("CARGO_ENCODED_RUSTFLAGS"))
    {
        return;
    }
    let order = Path::new(&env("CARGO_MANIFEST_DIR")).join("startup.order");
    if order.is_file() {
        println!(
            "cargo:rustc-link-arg-bin=berth=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=berth=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether rustc links with its bundled LLD: version 1.90 or later, with no flag that picks
/// another linker.
fn links_with_lld(rustc: &str, rustflags: &str) -> bool {
    if [
        "linker=",
        "linker-features",
        "link-self-contained",
        "fuse-ld",
    ]
    .iter()
    .any(|f| rustflags.contains(f))
    {
        return false;
    }
    let Ok(out) = Command::new(if rustc.is_empty() { "rustc" } else { rustc })
        .arg("-vV")
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.lines().find_map(|l| l.strip_prefix("release: ")) else {
        return false;
    };
    let mut parts = version
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}

//! Link-time settings of the `tollgate` binary.
//!
//! Relative relocations are packed (`DT_RELR`) where the linker and C library support it (GNU ld 2.38+,
//! glibc 2.36+; Debian 12 has both). The binary is position-independent, so the loader patches every
//! pointer in its read-only data at start: 5.6 MiB of `.rela.dyn` entries, read and kept resident for
//! the life of the process. Packed, the same relocations take a few hundred KiB.
//!
//! The functions `serve` runs (start-up and serving, `link/tollgate.order`, written by
//! `scripts/symbol-order.sh`) are placed next to each other when the linker is lld, rustc's default on
//! x86_64 Linux since 1.90. The kernel maps a binary's code in 64 KiB windows around each page that is
//! run; spread over 100 MB of `.text`, the few MB that run made 20 MiB resident. Names the build no
//! longer has are skipped, so a stale file orders less but never fails the link.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os != "linux" || env != "gnu" {
        return;
    }
    // Ask the linker the C compiler drives whether it knows the option; an older one would fail the link.
    let knows = Command::new("cc")
        .args(["-Wl,--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("pack-relative-relocs"));
    if knows && glibc_has_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=link/tollgate.order");
    println!("cargo:rerun-if-env-changed=TOLLGATE_NO_SYMBOL_ORDER");
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/tollgate.order");
    // Debug builds name their functions differently and gain nothing from the order.
    let optimized = std::env::var("PROFILE").as_deref() == Ok("release");
    if optimized && links_with_lld() && order.exists() && std::env::var_os("TOLLGATE_NO_SYMBOL_ORDER").is_none() {
        // Relative: cargo runs rustc, and so the linker, in the workspace root, which is this package's
        // directory. An absolute path would be kept by every checkout that shares the target directory
        // (another git worktree): cargo does not run this script again for a checkout at another path, so
        // the link would read that checkout's file, and fail once it is gone.
        println!("cargo:rustc-link-arg-bin=tollgate=-Wl,--symbol-ordering-file=link/tollgate.order");
        println!("cargo:rustc-link-arg-bin=tollgate=-Wl,--no-warn-symbol-ordering");
    }
}

/// rustc links x86_64 Linux targets with its own lld from 1.90 on, unless the flags pick another linker.
/// GNU ld and gold do not know `--symbol-ordering-file` (mold and lld do).
fn links_with_lld() -> bool {
    if std::env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return false;
    }
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if ["fuse-ld=bfd", "fuse-ld=gold", "linker-features=-lld", "link-self-contained=-linker"]
        .iter()
        .any(|f| flags.contains(f))
    {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else { return false };
    let text = String::from_utf8_lossy(&out.stdout);
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let Some(version) = text.split_whitespace().nth(1) else { return false };
    let mut parts = version.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (1, 90)
}

/// glibc 2.36 is the first to load `DT_RELR`; `ldd --version` names the version on its first line.
fn glibc_has_relr() -> bool {
    let Ok(out) = Command::new("ldd").arg("--version").output() else { return false };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.lines().next().and_then(|l| l.split_whitespace().last()) else { return false };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 36)
}

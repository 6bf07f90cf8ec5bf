//! Link-time settings of the `tollgate` binary.
//!
//! Relative relocations are packed (`DT_RELR`) where the linker and C library support it (GNU ld 2.38+,
//! glibc 2.36+; Debian 12 has both). The binary is position-independent, so the loader patches every
//! pointer in its read-only data at start: 5.6 MiB of `.rela.dyn` entries, read and kept resident for
//! the life of the process. Packed, the same relocations take a few hundred KiB.

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

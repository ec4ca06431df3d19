//! Records what the binary is built from, for `--version` and
//! `vault_token_exporter_build_info`: the git revision (`unknown` outside a git
//! checkout, say a source tarball) and the version of the compiler cargo runs. Neither
//! lookup can fail the build.

use std::path::Path;
use std::process::Command;

fn main() {
    let revision = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=VTE_GIT_REVISION={revision}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=VTE_RUSTC_VERSION={rustc_version}");
    // A new commit or checkout changes the revision: watch HEAD and the ref it names.
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        let head = Path::new(&git_dir).join("HEAD");
        println!("cargo:rerun-if-changed={}", head.display());
        if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
            if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
                let file = Path::new(&common).join(&reference);
                if file.exists() {
                    println!("cargo:rerun-if-changed={}", file.display());
                }
                println!(
                    "cargo:rerun-if-changed={}",
                    Path::new(&common).join("packed-refs").display()
                );
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// The trimmed output of a successful git command, with paths made absolute.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(["-c", "safe.directory=*"])
        .args(args)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    if text.is_empty() {
        return None;
    }
    let path = Path::new(&text);
    let is_path = args.contains(&"--git-dir") || args.contains(&"--git-common-dir");
    if is_path && path.is_relative() {
        let here = std::env::current_dir().ok()?;
        return Some(here.join(path).display().to_string());
    }
    Some(text)
}

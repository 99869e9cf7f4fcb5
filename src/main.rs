//! `onerec`: the command-line face of the engine. Parsing and printing only.

mod batch;
mod bench;
mod catalog_cmd;
mod cli;
mod convert;
mod default_model;
mod devices;
mod ids;
mod inspect;
mod model_args;
mod output;
mod serve;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    quiet_gpu_probe();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error chain on one line, each cause once: library errors often repeat their
/// source's text in their own message.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}

/// Vulkan drivers probing for a Wayland display print "XDG_RUNTIME_DIR is invalid or not
/// set" when that variable is missing (containers, CI, ssh sessions). Point it at a
/// private empty directory so the GPU probe of `--backend auto` stays silent.
fn quiet_gpu_probe() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    let dir = std::env::temp_dir().join("onerec-xdg-runtime");
    if std::fs::create_dir_all(&dir).is_ok() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        // SAFETY (edition 2021: safe fn): called first thing in main, before any thread.
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
    }
}

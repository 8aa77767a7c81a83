//! `sluice`: the CNI plugin binary. Everything is in the library (`sluice_cni::run_os`).

use std::io::{Read, Write};

fn main() {
    let mut stdin = Vec::new();
    // VERSION may come with nothing on stdin; a read error leaves it empty and parsing reports it.
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let reply = sluice_cni::run_os(|k| std::env::var_os(k), &stdin);
    let mut out = std::io::stdout().lock();
    if !reply.stdout.is_empty() {
        let _ = writeln!(out, "{}", reply.stdout);
    }
    let _ = out.flush();
    std::process::exit(reply.status);
}

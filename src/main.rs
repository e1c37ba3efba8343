//! The `hashshift` binary: CLI, tracing, runtime, exit code.

fn main() {
    println!("hashshift {}", env!("CARGO_PKG_VERSION"));
}

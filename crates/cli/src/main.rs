//! The `ferrolite` command.

use std::process::ExitCode;

/// jemalloc instead of the system's allocator, with its background thread on: freed memory goes
/// back to the system on jemalloc's decay timer, busy or idle (glibc kept what 10,000
/// connections had used after they closed: docs/benchmarks.md has the numbers).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    ferrolite_cli::main()
}

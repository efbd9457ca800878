/// jemalloc instead of glibc's malloc. A review allocates about 120 times; with glibc the
/// two worker threads then met on arena locks (0.8 futex calls per review, none for the
/// no-op server) and a thread preempted while holding one stalled the other. jemalloc's
/// per-thread caches and arenas do without: 6-9 µs less CPU per review (see README, Speed).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    verdict::cli::main()
}

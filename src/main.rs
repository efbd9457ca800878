/// jemalloc instead of glibc's malloc. A review allocates about 120 times; glibc's malloc
/// and free took ~15% of verdict's CPU under load (its per-thread cache holds only chunks
/// up to 1 KiB, seven of a size; the rest goes through the arena), jemalloc's take ~4%:
/// 6-9 µs less CPU per review, and less memory with 100,000 cached digests (see README,
/// Speed and Memory).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    verdict::cli::main()
}

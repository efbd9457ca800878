fn main() -> std::process::ExitCode {
    verdict::cli::main()
}

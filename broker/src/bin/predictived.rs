//! `predictived`: the host-local broker. See `broker::cli`.

fn main() -> std::process::ExitCode {
    broker::cli::main()
}

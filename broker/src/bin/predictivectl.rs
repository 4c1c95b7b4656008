//! `predictivectl`: the broker's operator CLI. See `broker::ctl`.

fn main() -> std::process::ExitCode {
    broker::ctl::main()
}

//! `predictive-hook`: an OCI createRuntime/poststop hook; see `runtime_hooks::hook`.

fn main() -> std::process::ExitCode {
    runtime_hooks::hook::main()
}

//! `predictivectl`: the broker's operator CLI. See the `predictivectl` library.

fn main() -> std::process::ExitCode {
    let code = predictivectl::cli(
        std::env::args().skip(1),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::ExitCode::from(code)
}

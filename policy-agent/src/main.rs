//! The `policy-agent` binary: one CLI for everything a user does.

fn main() -> std::process::ExitCode {
    policy_agent::cli::main()
}

//! `scaler`: the agent and the commands that talk to it.
fn main() {
    if let Err(e) = scaler_user::cli::run() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

fn main() {
    if let Err(err) = flakeforge::cli::run() {
        eprintln!("flakeforge: {err}");
        std::process::exit(1);
    }
}

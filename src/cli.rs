//! The command line: `flakeforge serve` and its flags.

pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    todo!()
}

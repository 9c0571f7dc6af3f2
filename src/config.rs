//! The settings `flakeforge serve` runs with, parsed and checked.

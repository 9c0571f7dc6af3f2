//! Running one `nix` invocation: argv only, its own process group, a timeout
//! that kills the whole group, stdout captured, stderr kept as the log.

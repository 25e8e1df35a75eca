//! Fault injection for tests, compiled into debug builds only, so a release
//! host has no such path: when the host starts with `DEMO_HOST_FAULT_FILE`
//! naming a file, every config write first reads that file; `disk-full`
//! makes writing the temporary file fail with "no space left", `read-only`
//! makes creating it fail with "read-only file system", and `panic` makes the
//! writer panic (a host bug inside a host service a plugin called). Requests
//! cannot reach
//! it: it is read from the process environment once, when the config store
//! is constructed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::atomic::Step;

/// The environment variable naming the fault-injection file.
const FAULT_FILE_ENV: &str = "DEMO_HOST_FAULT_FILE";

/// The fault-injection file the process environment names, if any.
pub(crate) fn fault_file_from_env() -> Option<PathBuf> {
    std::env::var_os(FAULT_FILE_ENV).map(PathBuf::from)
}

/// The fault `file` asks for at `step` of an atomic write, as the I/O error a
/// real fault of that kind gives. The file is read only at the steps a fault
/// can strike.
pub(crate) fn injected_fault(file: &Path, step: Step) -> io::Result<()> {
    if !matches!(step, Step::CreateTemp | Step::Write) {
        return Ok(());
    }
    let wanted = fs::read_to_string(file).unwrap_or_default();
    match (wanted.trim(), step) {
        ("disk-full", Step::Write) => Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "No space left on device (injected fault)",
        )),
        ("read-only", Step::CreateTemp) => Err(io::Error::new(
            io::ErrorKind::ReadOnlyFilesystem,
            "Read-only file system (injected fault)",
        )),
        ("panic", Step::Write) => panic!("injected fault: the config writer panics"),
        _ => Ok(()),
    }
}

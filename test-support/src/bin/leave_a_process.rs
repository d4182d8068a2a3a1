//! A test program that breaks the rule on purpose, for `tests/leftovers.rs`: it watches for
//! leftovers, then starts `sleep` (directly, or through a shell that exits at once, so that
//! the sleep is orphaned) and exits without ending it.

fn main() {
    test_support::watch_for_leftovers();
    let how = std::env::args().nth(1).unwrap_or_default();
    let mut command = match how.as_str() {
        "orphan" => {
            let mut c = std::process::Command::new("sh");
            c.args(["-c", "sleep 30 & exit 0"]);
            c
        }
        _ => {
            let mut c = std::process::Command::new("sleep");
            c.arg("30");
            c
        }
    };
    let mut child = command.spawn().expect("sh and sleep run");
    if how == "orphan" {
        // The shell exits at once; its sleep is reparented to this process.
        let _ = child.wait();
    } else {
        // Left running on purpose: the check at exit must find it.
        std::mem::forget(child);
    }
}

//! Tests that need the process environment run in a child process of their own test binary,
//! never by setting the variables in the (multithreaded) test process.

/// Runs the ignored test `name` of this test binary in a child process, with the variables of
/// `clear` removed from its environment and `env` set, and checks that it passed.
pub fn in_child(name: &str, clear: &[&str], env: &[(&str, &str)]) {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command.args([name, "--exact", "--ignored", "--test-threads=1"]);
    for variable in clear {
        command.env_remove(variable);
    }
    for (variable, value) in env {
        command.env(variable, value);
    }
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

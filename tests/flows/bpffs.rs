//! The bpffs mount a lab makes when `/sys/fs/bpf` has none: announced on stderr,
//! recorded in `/run/podwall/bpffs-mounted`, kept after the lab, and unmounted by
//! `lab down`. Run inside a private mount namespace with its own `/run/netns` and
//! `/run/podwall`, so the host's bpffs and the labs of other tests are untouched.

use std::{path::Path, process::Command};

use super::{support, AGENT};

/// What the script in the mount namespace leaves in its output directory.
fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

const SCRIPT: &str = r#"
set -e
mkdir -p /run/netns /run/podwall
mount -t tmpfs podwall-test-netns /run/netns
mount -t tmpfs podwall-test-run /run/podwall
while [ "$(stat -f -c %T /sys/fs/bpf)" = bpf_fs ]; do umount /sys/fs/bpf; done
stat -f -c %T /sys/fs/bpf > "$OUT/before"
"$AGENT" lab run -f "$MANIFESTS" --probe 80/TCP > /dev/null 2> "$OUT/run.err"
stat -f -c %T /sys/fs/bpf > "$OUT/after-run"
cat /run/podwall/bpffs-mounted > "$OUT/marker"
"$AGENT" lab down > "$OUT/down.out"
stat -f -c %T /sys/fs/bpf > "$OUT/after-down"
if [ -e /run/podwall/bpffs-mounted ]; then echo present; else echo absent; fi > "$OUT/marker-after"
"$AGENT" lab down > "$OUT/down-again.out"
"#;

#[test]
fn a_lab_announces_and_records_mounting_bpffs_and_lab_down_unmounts_it() {
    support::require_root_and_bpf();
    let out = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/secure-app");
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", SCRIPT])
        .env("AGENT", AGENT)
        .env("MANIFESTS", &manifests)
        .env("OUT", out.path())
        .env_remove("PODWALL_RUN_DIR")
        .status()
        .unwrap_or_else(|e| panic!("unshare (util-linux): {e}"));
    let dir = out.path();
    let run_err = std::fs::read_to_string(dir.join("run.err")).unwrap_or_default();
    assert!(status.success(), "{status}\nlab run stderr:\n{run_err}");
    assert_ne!(read(dir, "before").trim(), "bpf_fs");
    assert!(
        run_err.contains("podwall mounted bpffs at /sys/fs/bpf")
            && run_err.contains("WARN")
            && run_err.contains("lab down"),
        "{run_err}"
    );
    assert_eq!(read(dir, "after-run").trim(), "bpf_fs", "left mounted");
    assert!(
        read(dir, "marker").contains("mounted bpffs at /sys/fs/bpf"),
        "{}",
        read(dir, "marker")
    );
    let down = read(dir, "down.out");
    assert!(
        down.contains("unmounted bpffs at /sys/fs/bpf (a lab had mounted it)"),
        "{down}"
    );
    assert_ne!(read(dir, "after-down").trim(), "bpf_fs", "{down}");
    assert_eq!(read(dir, "marker-after").trim(), "absent");
    assert_eq!(read(dir, "down-again.out").trim(), "nothing to remove");
}

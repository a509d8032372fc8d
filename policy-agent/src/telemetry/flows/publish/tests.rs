use super::*;
use crate::telemetry::flows::fixtures::names;

fn temp_paths(name: &str) -> (tempfile::TempDir, FlowPaths) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("podwall-flows-{name}"))
        .tempdir()
        .unwrap_or_else(|e| panic!("{e}"));
    let paths = FlowPaths {
        run_root: dir.path().join("run"),
        bpffs: dir.path().join("bpf"),
        bpffs_state: dir.path().join("state"),
    };
    (dir, paths)
}

/// Publishes `names` as `instance` by hand (no datapath): the names file only.
fn publish(paths: &FlowPaths, instance: &str, pid: u32) {
    let file = paths.names_file(instance);
    fs::create_dir_all(file.parent().unwrap_or(Path::new("/"))).unwrap_or_else(|e| panic!("{e}"));
    let names = FlowNames {
        instance: instance.into(),
        pid,
        ..names()
    };
    write_names(&file, &names).unwrap_or_else(|e| panic!("{e}"));
}

/// A pid no process has (above the kernel's pid_max).
const DEAD_PID: u32 = 4_194_305;

#[test]
fn paths_are_versioned_by_the_abi() {
    let paths = FlowPaths {
        run_root: "/run/podwall".into(),
        bpffs: "/sys/fs/bpf".into(),
        bpffs_state: "/run/podwall".into(),
    };
    let v = ABI_VERSION;
    assert_eq!(
        paths.names_file("lab-1"),
        PathBuf::from(format!("/run/podwall/v{v}/lab-1/names.json"))
    );
    assert_eq!(
        paths.events_pin("lab-1"),
        PathBuf::from(format!("/sys/fs/bpf/podwall/v{v}/lab-1/events"))
    );
    assert_eq!(
        paths.stats_pin("lab-1"),
        PathBuf::from(format!("/sys/fs/bpf/podwall/v{v}/lab-1/stats"))
    );
}

#[test]
fn names_are_replaced_whole_and_read_back() {
    let (_dir, paths) = temp_paths("write");
    publish(&paths, "a", std::process::id());
    let file = paths.names_file("a");
    let read = read_names(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.instance, "a");
    publish(&paths, "a", 1);
    assert_eq!(read_names(&file).map(|n| n.pid).ok(), Some(1));
    // Nothing but the names file is left in the directory (no temporary files).
    let entries: Vec<_> = fs::read_dir(file.parent().unwrap_or(Path::new("/")))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from(NAMES_FILE)]);
}

#[test]
fn a_failed_rewrite_removes_the_old_names_file() {
    let (_dir, paths) = temp_paths("withdraw");
    publish(&paths, "a", std::process::id());
    let file = paths.names_file("a");
    assert!(file.is_file());
    // The temporary file cannot be made: a directory holds its name.
    let temporary = file.with_extension(format!("json.tmp{}", std::process::id()));
    fs::create_dir(&temporary).unwrap_or_else(|e| panic!("{e}"));
    let result = replace_names(&file, &names());
    assert!(
        matches!(
            result,
            Err(FlowLogError::Io {
                what: "creating",
                ..
            })
        ),
        "{result:?}"
    );
    assert!(!file.exists(), "the stale names file is still there");
    // A later rewrite that works publishes again.
    fs::remove_dir(&temporary).unwrap_or_else(|e| panic!("{e}"));
    replace_names(&file, &names()).unwrap_or_else(|e| panic!("{e}"));
    assert!(read_names(&file).is_ok());
}

#[test]
fn a_names_file_of_another_abi_is_refused() {
    let (_dir, paths) = temp_paths("abi");
    let file = paths.names_file("a");
    fs::create_dir_all(file.parent().unwrap_or(Path::new("/"))).unwrap_or_else(|e| panic!("{e}"));
    let old = FlowNames {
        abi_version: ABI_VERSION - 1,
        ..names()
    };
    write_names(&file, &old).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        read_names(&file),
        Err(FlowLogError::AbiMismatch { .. })
    ));
}

#[test]
fn with_nothing_published_the_reader_is_told_so() {
    let (_dir, paths) = temp_paths("none");
    let error = choose(&paths, None).err().map(|e| e.to_string());
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.starts_with("no podwall datapath is running")),
        "{error:?}"
    );
    // A dead owner's leftovers do not count as running.
    publish(&paths, "dead", DEAD_PID);
    assert!(matches!(
        choose(&paths, None),
        Err(FlowLogError::NoInstance { .. })
    ));
    assert!(matches!(
        choose(&paths, Some("dead")),
        Err(FlowLogError::Gone { pid: DEAD_PID, .. })
    ));
}

#[test]
fn the_only_live_instance_is_chosen_and_several_are_listed() {
    let (_dir, paths) = temp_paths("choose");
    let me = std::process::id();
    publish(&paths, "one", me);
    publish(&paths, "dead", DEAD_PID);
    assert_eq!(
        choose(&paths, None).ok().map(|i| i.name),
        Some("one".into())
    );
    publish(&paths, "two", me);
    let error = choose(&paths, None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains(&format!("one (pid {me}), two (pid {me})")) && !error.contains("dead"),
        "{error}"
    );
    assert_eq!(
        choose(&paths, Some("two")).ok().map(|i| i.name),
        Some("two".into())
    );
    let error = choose(&paths, Some("three"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("'three'") && error.contains("one (pid"),
        "{error}"
    );
    // A path to the instance directory or its names file works too.
    let dir = paths.names_root().join("two");
    for wanted in [dir.clone(), dir.join(NAMES_FILE)] {
        let chosen = choose(&paths, wanted.to_str()).map(|i| i.name);
        assert_eq!(chosen.ok(), Some("two".into()), "{}", wanted.display());
    }
}

#[test]
fn removing_an_instance_takes_its_names_and_pin_directories() {
    let (_dir, paths) = temp_paths("remove");
    publish(&paths, "a", DEAD_PID);
    let pin_dir = paths.pins_root().join("b");
    fs::create_dir_all(&pin_dir).unwrap_or_else(|e| panic!("{e}"));
    fs::write(pin_dir.join(EVENTS_PIN), b"").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        paths.instance_names().into_iter().collect::<Vec<_>>(),
        vec!["a".to_string(), "b".to_string()]
    );
    assert!(paths.remove("a").unwrap_or_else(|e| panic!("{e}")));
    assert!(paths.remove("b").unwrap_or_else(|e| panic!("{e}")));
    assert!(!paths.remove("b").unwrap_or_else(|e| panic!("{e}")));
    assert!(paths.instance_names().is_empty());
}

#[test]
fn an_owner_in_another_pid_namespace_is_alive_while_its_instance_lock_is_held() {
    let (_dir, paths) = temp_paths("pidns");
    let file = paths.names_file("agent");
    fs::create_dir_all(file.parent().unwrap_or(Path::new("/"))).unwrap_or_else(|e| panic!("{e}"));
    // Pid 1 of another namespace (a node agent in its container): this reader's
    // pid 1 runs, which says nothing about it.
    let names = FlowNames {
        instance: "agent".into(),
        pid: 1,
        pid_namespace: own_pid_namespace().map(|ns| ns + 1),
        ..names()
    };
    write_names(&file, &names).unwrap_or_else(|e| panic!("{e}"));
    let instance = || {
        instances(&paths)
            .into_iter()
            .find(|i| i.name == "agent")
            .unwrap_or_else(|| panic!("no instance"))
    };
    assert!(!instance().alive(), "no lock held: gone");
    let lock = File::create(file.with_file_name(AGENT_LOCK_FILE)).unwrap_or_else(|e| panic!("{e}"));
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .unwrap_or_else(|(_, e)| panic!("{e}"));
    assert!(instance().alive(), "its lock is held: alive");
    drop(held);
    assert!(!instance().alive(), "the lock let go: gone");
    // In this reader's own namespace the pid decides.
    let names = FlowNames {
        pid: DEAD_PID,
        pid_namespace: own_pid_namespace(),
        ..names
    };
    write_names(&file, &names).unwrap_or_else(|e| panic!("{e}"));
    assert!(!instance().alive());
}

//! End-to-end tests of the runbooks' compose keys in local mode (issue 9, point 7):
//! `container_name`, `env_file` and `build`, through the local driver that `stackwarden local`
//! runs, on the real Docker engine.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use stackwarden::api::{condition, Condition, ConditionType};
use stackwarden_tests::harness::{docker, run_busy, wait_for, Containers, Harness, LocalDriver};
use stackwarden_tests::images::BASE_IMAGE;

/// The harness's `wait_for` blocks its thread: the driver runs on the other worker.
const TIMEOUT: Duration = Duration::from_secs(180);

/// A ServiceStack `keys/NAME` in project `project` with this compose file, as JSON.
fn stack(name: &str, project: &str, compose: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "stackwarden.dev/v1alpha1",
        "kind": "ServiceStack",
        "metadata": {"name": name, "namespace": "keys"},
        "spec": {"compose": {"projectName": project, "file": compose}},
    })
}

fn rewrite(driver: &LocalDriver, stack: &serde_json::Value) {
    std::fs::write(&driver.manifest, yaml_serde::to_string(stack).unwrap()).unwrap();
}

/// The manifest's directory: relative `env_file` and `build` paths start there.
fn manifest_dir(driver: &LocalDriver) -> &Path {
    driver.manifest.parent().unwrap()
}

/// `docker exec NAME ARGS...`'s output, or why it failed.
fn exec(name: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .arg("exec")
        .arg(name)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Waits until `docker exec NAME ARGS` prints `want`.
fn exec_until(name: &str, args: &[&str], want: &str) {
    wait_for(
        &format!("`docker exec {name} {args:?}` to print {want:?}"),
        TIMEOUT,
        || exec(name, args).and_then(|o| if o == want { Ok(()) } else { Err(o) }),
    );
}

fn id_of(name: &str) -> String {
    docker(&["inspect", "-f", "{{.Id}}", name])
        .trim()
        .to_owned()
}

fn condition_of(driver: &LocalDriver, name: &str, t: ConditionType) -> Option<Condition> {
    condition::find(&driver.status("keys", name).conditions, t).cloned()
}

/// Waits until condition `t` of `keys/NAME` has a message containing `needle`.
fn condition_until(driver: &LocalDriver, name: &str, t: ConditionType, needle: &str) -> String {
    wait_for(&format!("{t:?} saying {needle:?}"), TIMEOUT, || {
        let c = condition_of(driver, name, t);
        match c {
            Some(c) if c.message.contains(needle) => Ok(c.message),
            other => Err(format!("{other:?}")),
        }
    })
}

fn ready(driver: &LocalDriver, name: &str) {
    wait_for("Ready", TIMEOUT, || {
        if driver.ready("keys", name) {
            Ok(())
        } else {
            Err(format!("{:?}", driver.status("keys", name).conditions))
        }
    });
}

/// Every file of the state directory, concatenated: what the driver wrote to disk.
fn state_text(driver: &LocalDriver) -> String {
    fn walk(dir: &Path, out: &mut String) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    let mut out = String::new();
    let state = driver
        .manifest
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("state");
    walk(&state, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_name_is_honoured_and_kept_across_a_recreate() {
    let h = Harness::new("cname");
    let name = format!("swt-erni-box-{}", std::process::id());
    let compose = |v: &str| {
        format!(
            "services:\n  box:\n    image: {BASE_IMAGE}\n    pull_policy: never\n    container_name: {name}\n    command: [sleep, infinity]\n    environment: {{VERSION: \"{v}\"}}\n"
        )
    };
    let driver = LocalDriver::start(&stack("cname", &h.project, &compose("1")));
    ready(&driver, "cname");
    exec_until(&name, &["printenv", "VERSION"], "1");
    let first = id_of(&name);
    assert_eq!(h.containers().len(), 1, "{:?}", h.containers());

    // A config change recreates the container under the same name.
    rewrite(&driver, &stack("cname", &h.project, &compose("2")));
    exec_until(&name, &["printenv", "VERSION"], "2");
    assert_ne!(id_of(&name), first, "the container was not recreated");
    ready(&driver, "cname");
    assert_eq!(h.containers().len(), 1, "{:?}", h.containers());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_name_taken_by_a_stranger_is_reported_and_the_stranger_left_alone() {
    let h = Harness::new("cname-taken");
    let name = format!("swt-stranger-{}", std::process::id());
    let _stranger = Containers(vec![name.clone()]);
    run_busy(&name, &[]);
    let stranger = id_of(&name);
    let compose = format!(
        "services:\n  box:\n    image: {BASE_IMAGE}\n    pull_policy: never\n    container_name: {name}\n    command: [sleep, infinity]\n"
    );
    let driver = LocalDriver::start(&stack("taken", &h.project, &compose));
    let message = condition_until(
        &driver,
        "taken",
        ConditionType::Progressing,
        "already used by a container this stack does not manage",
    );
    assert!(message.contains(&name), "{message}");
    assert_eq!(id_of(&name), stranger, "the stranger was replaced");
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &name]).trim(),
        "true"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_file_values_reach_the_container_stay_out_of_state_and_an_edit_recreates_it() {
    let h = Harness::new("envfile");
    let name = format!("swt-envfile-{}", std::process::id());
    let token = |n: &str| format!("tok-{}-{n}", std::process::id());
    let compose = format!(
        "services:\n  box:\n    image: {BASE_IMAGE}\n    pull_policy: never\n    container_name: {name}\n    command: [sleep, infinity]\n    env_file: .env\n    environment: {{OVERRIDE: from-environment}}\n"
    );
    let manifest = stack("envfile", &h.project, &compose);
    let driver = LocalDriver::start(&manifest);
    let env = manifest_dir(&driver).join(".env");

    // No env file yet: a condition naming it, nothing created.
    let message = condition_until(&driver, "envfile", ConditionType::InvalidSpec, ".env");
    assert!(message.contains("cannot be read"), "{message}");
    assert!(h.containers().is_empty());

    std::fs::write(
        &env,
        format!(
            "# the runbook's .env\nSECRET_TOKEN=\"{}\"\nOVERRIDE=from-file\n",
            token("one")
        ),
    )
    .unwrap();
    ready(&driver, "envfile");
    exec_until(&name, &["printenv", "SECRET_TOKEN"], &token("one"));
    exec_until(&name, &["printenv", "OVERRIDE"], "from-environment");
    let first = id_of(&name);
    let labels = docker(&["inspect", "-f", "{{json .Config.Labels}}", &name]);
    assert!(!labels.contains(&token("one")), "{labels}");

    // Edited env file: the running container is replaced with the new value.
    std::fs::write(&env, format!("SECRET_TOKEN={}\n", token("two"))).unwrap();
    exec_until(&name, &["printenv", "SECRET_TOKEN"], &token("two"));
    assert_ne!(id_of(&name), first);
    ready(&driver, "envfile");

    // Removed env file: InvalidSpec, and the running container stays as it is.
    let running = id_of(&name);
    std::fs::remove_file(&env).unwrap();
    condition_until(&driver, "envfile", ConditionType::InvalidSpec, ".env");
    assert_eq!(id_of(&name), running);
    let state = state_text(&driver);
    for secret in [token("one"), token("two")] {
        assert!(
            !state.contains(&secret),
            "the state directory holds {secret}"
        );
    }
}

/// Removes the images the build test made (project, repository). Dropped before the Harness,
/// so it removes the project's containers first: an image a container uses cannot be removed.
struct BuiltImages(String, String);

impl Drop for BuiltImages {
    fn drop(&mut self) {
        stackwarden_tests::harness::remove_project(&self.0);
        let out = Command::new("docker")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}", &self.1])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for reference in out.lines() {
            let _ = Command::new("docker").args(["rmi", reference]).output();
        }
    }
}

fn built_events(driver: &LocalDriver) -> usize {
    driver
        .store
        .events("keys", "build")
        .iter()
        .filter(|(_, e)| e.reason == "ImageBuilt")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_stack_is_built_once_and_rebuilt_when_its_context_changes() {
    let h = Harness::new("build");
    let _images = BuiltImages(
        h.project.clone(),
        format!("stackwarden-build/{}-box", h.project),
    );
    let name = format!("swt-build-{}", std::process::id());
    let compose = |v: &str| {
        format!(
            "services:\n  box:\n    build: ./app\n    container_name: {name}\n    environment: {{SETTING: \"{v}\"}}\n"
        )
    };
    let driver = LocalDriver::start(&stack("build", &h.project, "services: {}"));
    let app = manifest_dir(&driver).join("app");
    std::fs::create_dir(&app).unwrap();
    std::fs::write(
        app.join("Dockerfile"),
        format!(
            "FROM {BASE_IMAGE}\nCOPY version.txt /version.txt\nCMD [\"sleep\", \"infinity\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(app.join("version.txt"), "v1\n").unwrap();
    std::fs::write(app.join(".dockerignore"), "*.tmp\n").unwrap();
    rewrite(&driver, &stack("build", &h.project, &compose("a")));
    ready(&driver, "build");
    exec_until(&name, &["cat", "/version.txt"], "v1");
    let image = docker(&["inspect", "-f", "{{.Config.Image}}", &name]);
    assert!(image.starts_with("stackwarden-build/"), "{image}");
    assert_eq!(built_events(&driver), 1);

    // A recreate for another reason, and a file .dockerignore leaves out: no rebuild.
    std::fs::write(app.join("scratch.tmp"), "ignored").unwrap();
    rewrite(&driver, &stack("build", &h.project, &compose("b")));
    exec_until(&name, &["printenv", "SETTING"], "b");
    ready(&driver, "build");
    assert_eq!(
        docker(&["inspect", "-f", "{{.Config.Image}}", &name]),
        image,
        "an unchanged context got a new image"
    );
    assert_eq!(built_events(&driver), 1, "an unchanged context was rebuilt");

    // The context changes (a `git pull`): the poll notices, rebuilds and recreates.
    std::fs::write(app.join("version.txt"), "v2\n").unwrap();
    exec_until(&name, &["cat", "/version.txt"], "v2");
    assert_ne!(
        docker(&["inspect", "-f", "{{.Config.Image}}", &name]),
        image
    );
    assert_eq!(built_events(&driver), 2);
    ready(&driver, "build");

    // A build that fails: its error in the condition, the running container left alone.
    let running = id_of(&name);
    std::fs::write(
        app.join("Dockerfile"),
        format!("FROM {BASE_IMAGE}\nRUN echo the-step-that-breaks && false\n"),
    )
    .unwrap();
    let message = condition_until(
        &driver,
        "build",
        ConditionType::Progressing,
        "the build failed",
    );
    assert!(message.contains("the-step-that-breaks"), "{message}");
    assert_eq!(
        id_of(&name),
        running,
        "a failed build replaced the container"
    );
    exec_until(&name, &["cat", "/version.txt"], "v2");
}

#[tokio::test]
async fn a_recreate_cut_off_between_remove_and_create_converges_under_the_same_name() {
    let h = Harness::new("cname-cut");
    let name = format!("swt-cut-{}", std::process::id());
    let compose = |v: &str| {
        format!(
            "services:\n  box:\n    image: {BASE_IMAGE}\n    pull_policy: never\n    container_name: {name}\n    command: [sleep, infinity]\n    environment: {{VERSION: \"{v}\"}}\n"
        )
    };
    h.apply(h.spec(&compose("1")));
    h.until_ready(TIMEOUT).await;
    // The config changes, and the operator is killed right after removing the old container,
    // before creating the new one: the state a cut-off recreate leaves.
    h.apply(h.spec(&compose("2")));
    docker(&["rm", "-f", &name]);
    h.until("the container back under its name", TIMEOUT, |h| {
        exec(&name, &["printenv", "VERSION"]).is_ok_and(|v| v == "2") && h.containers().len() == 1
    })
    .await;
    h.until_ready(TIMEOUT).await;
}

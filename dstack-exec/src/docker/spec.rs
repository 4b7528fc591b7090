//! The container a job becomes: name, labels, command, mounts, limits, devices, ports. Pure:
//! nothing here talks to the engine, so the whole specification is unit-tested.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bollard::models::{
    ContainerCreateBody, DeviceRequest, HostConfig, HostConfigLogConfig, Mount, MountType,
    PortBinding,
};
use dstack_core::run::JobRequest;

use super::config::DockerConfig;
pub use super::output::OUTPUT_DIR;
use crate::local;

/// Every container of this executor starts with it; it is what `reap` accepts.
pub const NAME_PREFIX: &str = "dstack-";
/// Label: which run store the container belongs to ([`store_id`]).
pub const LABEL_STORE: &str = "dstack.store";
/// Label: the run's name.
pub const LABEL_RUN: &str = "dstack.run";
/// Label: the job's id.
pub const LABEL_JOB: &str = "dstack.job";
/// Label: the job's workflow.
pub const LABEL_WORKFLOW: &str = "dstack.workflow";
/// Label: the attempt (1, then 2 for the first retry...).
pub const LABEL_ATTEMPT: &str = "dstack.attempt";
/// Label: set on helper containers (GPU listing), with what they do.
pub const LABEL_HELPER: &str = "dstack.helper";

/// Where the job's tree is mounted in the container.
pub const WORKFLOW_DIR: &str = "/workflow";

/// A short, stable id of the run store at `dir` (hex of a hash of its absolute path), so that
/// the containers of two stores (two projects, two `DSTACK_STATE_DIR`s) never mix even when
/// their runs have the same names.
#[must_use]
pub fn store_id(dir: &Path) -> String {
    let absolute = std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf());
    let hash = fnv1a(absolute.as_os_str().as_encoded_bytes());
    format!("{hash:016x}")[..12].to_owned()
}

/// The run store a job's tree belongs to: trees live at `STORE/runs/RUN/jobs/JOB`.
pub(crate) fn store_dir_of(tree: &Path) -> PathBuf {
    let up = |p: &Path, name: &str| {
        p.parent()
            .filter(|parent| parent.file_name().is_some_and(|n| n == name))
            .map(Path::to_path_buf)
    };
    up(tree, "jobs")
        .and_then(|jobs| jobs.parent().map(Path::to_path_buf))
        .and_then(|run| up(&run, "runs"))
        .and_then(|runs| runs.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| tree.parent().unwrap_or(tree).to_path_buf())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A container name for an attempt of a job: `dstack-RUN-JOB-ATTEMPT-XXXXXX`, the job's id
/// reduced to the characters Docker accepts, and a random part so that no two containers ever
/// share a name (a retry, a resume, another store).
pub(crate) fn container_name(run: &str, job: &str, attempt: u32) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!(
        "{nanos}/{}/{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let random = format!("{:016x}", fnv1a(seed.as_bytes()));
    format!(
        "{NAME_PREFIX}{}-{}-{attempt}-{}",
        sanitize(run),
        sanitize(job),
        &random[..6]
    )
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `/workflow` joined with a relative path of the job (`.` and empty parts left out).
pub(crate) fn in_container(parts: &[&str]) -> String {
    let mut out = String::from(WORKFLOW_DIR);
    for part in parts {
        for component in Path::new(part).components() {
            if let Component::Normal(c) = component {
                out.push('/');
                out.push_str(&c.to_string_lossy());
            }
        }
    }
    out
}

/// What the spec needs besides the job: decided by the executor for this engine.
#[derive(Clone, Debug, Default)]
pub(crate) struct Context {
    /// The run store's id ([`store_id`]).
    pub store: String,
    /// The user to run as (`None`: the image's).
    pub user: Option<String>,
    /// Set `HOME=/tmp` when the job does not set `HOME` (a user without a home in the image).
    pub home_in_tmp: bool,
    /// GPUs handed to the job (device ids).
    pub gpus: Vec<String>,
    /// The host folder of the job's output files (see [`super::output`]), mounted at
    /// [`OUTPUT_DIR`]; the script's output goes there. `None`: to the attach stream.
    pub output: Option<PathBuf>,
}

/// The labels of a job's container.
pub(crate) fn labels(request: &JobRequest, store: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_STORE.to_owned(), store.to_owned()),
        (LABEL_RUN.to_owned(), request.run.clone()),
        (LABEL_JOB.to_owned(), request.job.id.clone()),
        (LABEL_WORKFLOW.to_owned(), request.job.workflow.clone()),
        (LABEL_ATTEMPT.to_owned(), request.attempt.to_string()),
    ])
}

/// The container of `request`, running `image`: its commands in one `/bin/sh -c` with `set -e`
/// in the working directory under `/workflow`, the tree mounted read-write, each input
/// mounted read-only at its path, the job's limits, GPUs and ports.
///
/// `tree` and the inputs' sources must be absolute (the engine resolves them on its host).
pub(crate) fn container_body(
    request: &JobRequest,
    image: &str,
    config: &DockerConfig,
    context: &Context,
) -> ContainerCreateBody {
    let job = &request.job;
    let working_dir = in_container(&[&job.working_dir]);
    let mut env: Vec<String> = job.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("DSTACK_RUN={}", request.run));
    env.push(format!("DSTACK_JOB={}", job.id));
    env.push(format!("DSTACK_WORKFLOW={}", job.workflow));
    if context.home_in_tmp && !job.env.contains_key("HOME") {
        env.push("HOME=/tmp".to_owned());
    }

    let mut mounts = vec![Mount {
        target: Some(WORKFLOW_DIR.to_owned()),
        source: Some(request.tree.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(false),
        ..Mount::default()
    }];
    let mut script = local::script(job);
    if let Some(output) = &context.output {
        mounts.push(Mount {
            target: Some(OUTPUT_DIR.to_owned()),
            source: Some(output.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(false),
            ..Mount::default()
        });
        // Only what the shell or the init say before this line goes to the attach stream.
        script = format!("exec >>{OUTPUT_DIR}/stdout 2>>{OUTPUT_DIR}/stderr\n{script}");
    }
    for input in &request.inputs {
        mounts.push(Mount {
            target: Some(in_container(&[&job.working_dir, &input.path])),
            source: Some(input.source.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Mount::default()
        });
    }

    let resources = &job.resources;
    let nano_cpus = resources
        .cpu
        .map(|c| i64::from(c).saturating_mul(1_000_000_000));
    let memory = resources
        .memory_bytes
        .map(|m| i64::try_from(m).unwrap_or(i64::MAX));
    let device_requests = (!context.gpus.is_empty()).then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".to_owned()),
            device_ids: Some(context.gpus.clone()),
            capabilities: Some(vec![vec!["gpu".to_owned()]]),
            ..DeviceRequest::default()
        }]
    });

    let mut exposed = Vec::new();
    let mut bindings = HashMap::new();
    for port in &job.ports {
        let key = format!("{port}/tcp");
        exposed.push(key.clone());
        bindings.insert(
            key,
            Some(vec![PortBinding {
                host_ip: Some(config.publish_address().to_owned()),
                host_port: Some(port.to_string()),
            }]),
        );
    }

    let mut labels = labels(request, &context.store);
    labels.retain(|_, v| !v.is_empty());
    ContainerCreateBody {
        image: Some(image.to_owned()),
        // The image's entrypoint would receive the script as arguments: the commands are the
        // whole program, as with the local executor.
        entrypoint: Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), script]),
        working_dir: Some(working_dir),
        env: Some(env),
        user: context.user.clone(),
        labels: Some(labels),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        tty: Some(false),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        stop_signal: Some("SIGTERM".to_owned()),
        stop_timeout: Some(i64::try_from(config.stop_timeout().as_secs()).unwrap_or(i64::MAX)),
        host_config: Some(HostConfig {
            mounts: Some(mounts),
            nano_cpus,
            memory,
            // No swap beyond the limit: the limit is the job's memory.
            memory_swap: memory,
            shm_size: resources
                .shm_size_bytes
                .map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
            device_requests,
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            network_mode: Some(config.network().to_owned()),
            // A real init as PID 1: SIGTERM reaches the shell, and zombies are reaped.
            init: Some(true),
            privileged: Some(false),
            auto_remove: Some(false),
            // The output goes to dstack's log store through files (and, for what comes before
            // the redirection, the attached stream); the engine's own copy (a JSON file) only
            // serves `docker logs` on kept containers.
            log_config: (!config.keep_containers).then(|| HostConfigLogConfig {
                typ: Some("none".to_owned()),
                config: None,
            }),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use dstack_core::JobSpec;
    use dstack_core::resources::{GpuRequest, Resources};
    use dstack_core::run::Input;

    use super::*;

    fn request() -> JobRequest {
        JobRequest {
            run: "cowardly-goose-1".into(),
            job: JobSpec {
                id: "train/0".into(),
                workflow: "train".into(),
                provider: "docker".into(),
                image: Some("ubuntu".into()),
                commands: vec!["mkdir -p output".into(), "echo hi > output/x".into()],
                working_dir: "src".into(),
                env: BTreeMap::from([("EPOCHS".into(), "3".into())]),
                artifacts: vec!["output".into()],
                ports: vec![6006],
                resources: Resources {
                    cpu: Some(2),
                    memory_bytes: Some(512 << 20),
                    gpu: Some(GpuRequest {
                        count: 1,
                        name: Some("v100".into()),
                        memory_bytes: None,
                    }),
                    shm_size_bytes: Some(1 << 30),
                },
                ..JobSpec::default()
            },
            tree: "/state/runs/cowardly-goose-1/jobs/train__0".into(),
            inputs: vec![Input {
                from_job: "prepare".into(),
                source: "/state/runs/cowardly-goose-1/artifacts/prepare/data".into(),
                path: "data/raw".into(),
            }],
            attempt: 2,
        }
    }

    #[test]
    fn the_whole_container() {
        let body = container_body(
            &request(),
            "ubuntu",
            &DockerConfig::default(),
            &Context {
                store: "abc".into(),
                user: Some("1000:1000".into()),
                home_in_tmp: true,
                gpus: vec!["GPU-1".into()],
                output: Some("/state/runs/cowardly-goose-1/docker/dstack-x".into()),
            },
        );
        assert_eq!(body.image.as_deref(), Some("ubuntu"));
        assert_eq!(
            body.entrypoint,
            Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                "exec >>/.dstack-output/stdout 2>>/.dstack-output/stderr\n\
                 set -e\nmkdir -p output\necho hi > output/x\n"
                    .into()
            ])
        );
        assert_eq!(body.cmd, None);
        assert_eq!(body.working_dir.as_deref(), Some("/workflow/src"));
        assert_eq!(
            body.env,
            Some(vec![
                "EPOCHS=3".into(),
                "DSTACK_RUN=cowardly-goose-1".into(),
                "DSTACK_JOB=train/0".into(),
                "DSTACK_WORKFLOW=train".into(),
                "HOME=/tmp".into(),
            ])
        );
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        let labels = body.labels.expect("labels");
        assert_eq!(labels[LABEL_STORE], "abc");
        assert_eq!(labels[LABEL_RUN], "cowardly-goose-1");
        assert_eq!(labels[LABEL_JOB], "train/0");
        assert_eq!(labels[LABEL_WORKFLOW], "train");
        assert_eq!(labels[LABEL_ATTEMPT], "2");
        assert_eq!(body.exposed_ports, Some(vec!["6006/tcp".into()]));
        assert_eq!(body.tty, Some(false));

        let host = body.host_config.expect("host config");
        assert_eq!(host.nano_cpus, Some(2_000_000_000));
        assert_eq!(host.memory, Some(512 << 20));
        assert_eq!(host.memory_swap, Some(512 << 20));
        assert_eq!(host.shm_size, Some(1 << 30));
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
        assert_eq!(host.init, Some(true));
        assert_eq!(host.auto_remove, Some(false));
        assert_eq!(host.binds, None, "mounts only: no `:` parsing of paths");
        assert_eq!(
            host.log_config.and_then(|l| l.typ).as_deref(),
            Some("none"),
            "output is in dstack's files, not logged twice"
        );
        let mounts: Vec<_> = host
            .mounts
            .expect("mounts")
            .into_iter()
            .map(|m| {
                (
                    m.source.expect("source"),
                    m.target.expect("target"),
                    m.read_only,
                )
            })
            .collect();
        assert_eq!(
            mounts,
            vec![
                (
                    "/state/runs/cowardly-goose-1/jobs/train__0".into(),
                    "/workflow".into(),
                    Some(false)
                ),
                (
                    "/state/runs/cowardly-goose-1/docker/dstack-x".into(),
                    "/.dstack-output".into(),
                    Some(false)
                ),
                (
                    "/state/runs/cowardly-goose-1/artifacts/prepare/data".into(),
                    "/workflow/src/data/raw".into(),
                    Some(true)
                ),
            ]
        );
        let gpus = host.device_requests.expect("device requests");
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].driver.as_deref(), Some("nvidia"));
        assert_eq!(gpus[0].device_ids, Some(vec!["GPU-1".into()]));
        assert_eq!(
            gpus[0].count, None,
            "Docker refuses count together with device_ids"
        );
        assert_eq!(gpus[0].capabilities, Some(vec![vec!["gpu".into()]]));
        let ports = host.port_bindings.expect("ports");
        let binding = ports["6006/tcp"].as_ref().expect("binding");
        assert_eq!(binding[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding[0].host_port.as_deref(), Some("6006"));
    }

    #[test]
    fn nothing_asked_nothing_set() {
        let mut r = request();
        r.job.resources = Resources::default();
        r.job.ports.clear();
        r.job.working_dir = ".".into();
        r.job.env.insert("HOME".into(), "/root".into());
        let config = DockerConfig {
            network: Some("none".into()),
            ..DockerConfig::default()
        };
        let body = container_body(&r, "img", &config, &Context::default());
        // No output folder: the script as it is, its output attached.
        assert_eq!(
            body.entrypoint
                .as_ref()
                .and_then(|e| e.last())
                .map(String::as_str),
            Some("set -e\nmkdir -p output\necho hi > output/x\n")
        );
        assert_eq!(body.working_dir.as_deref(), Some("/workflow"));
        assert_eq!(body.user, None);
        assert!(
            !body
                .env
                .as_ref()
                .expect("env")
                .contains(&"HOME=/tmp".to_owned())
        );
        assert_eq!(body.exposed_ports, None);
        let host = body.host_config.expect("host config");
        assert_eq!(host.nano_cpus, None);
        assert_eq!(host.memory, None);
        assert_eq!(host.memory_swap, None);
        assert_eq!(host.shm_size, None);
        assert_eq!(host.device_requests, None);
        assert_eq!(host.port_bindings, None);
        assert_eq!(host.network_mode.as_deref(), Some("none"));
    }

    #[test]
    fn names_and_paths() {
        let a = container_name("cowardly-goose-1", "train/0 (big)", 1);
        assert!(
            a.starts_with("dstack-cowardly-goose-1-train_0__big_-1-"),
            "{a}"
        );
        assert_eq!(
            a.len(),
            "dstack-cowardly-goose-1-train_0__big_-1-".len() + 6
        );
        assert_ne!(a, container_name("cowardly-goose-1", "train/0 (big)", 1));
        assert_eq!(in_container(&["."]), "/workflow");
        assert_eq!(in_container(&["./src/", "data"]), "/workflow/src/data");
        assert_eq!(
            store_dir_of(Path::new("/p/.dstack/state/runs/r-1/jobs/a__b")),
            Path::new("/p/.dstack/state")
        );
        assert_eq!(
            store_dir_of(Path::new("/elsewhere/tree")),
            Path::new("/elsewhere")
        );
        assert_eq!(store_id(Path::new("/a")), store_id(Path::new("/a")));
        assert_ne!(store_id(Path::new("/a")), store_id(Path::new("/b")));
        assert_eq!(store_id(Path::new("/a")).len(), 12);
    }
}

//! Handing a whole run to Slurm, fast.
//!
//! One `sbatch` per process costs a process start and a round trip to the controller (about
//! 8 ms here), too slow for a thousand jobs. So jobs of one resource shape (the same `#SBATCH`
//! lines) go into one job array, held, and a single `scontrol` process then gives every array
//! task its name and its dependencies (`afterok:ARRAY_TASK:...`), one command per line on its
//! standard input; a last `scontrol release` (after the scheduler recorded the ids) lets them
//! start. Dependencies are set in reverse plan order, so that a task's dependencies are always
//! still untouched array tasks when it is updated (Slurm's cycle check follows dependencies of
//! dependencies through the array's shared record otherwise).
//!
//! All or nothing: when a step fails, every array already submitted is cancelled (held, none
//! of it ran).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};

use dstack_core::run::artifacts;
use dstack_core::run::{DagJob, DagRequest, ExecutorError};
use futures_util::StreamExt as _;

use super::command::Tools;
use super::config::Container;
use super::layout::Layout;
use super::script::{self, JobPaths};
use super::state::array_of;
use super::tracker::scancel;
use super::{Inner, io_error};

/// How many `sbatch` calls run at once.
const SBATCH_CONCURRENCY: usize = 8;

/// Jobs of one shape, in one array (of at most `MaxArraySize - 1` tasks).
#[derive(Debug)]
struct Group {
    /// The batch script (absolute).
    script: PathBuf,
    /// The task file, relative to the run's Slurm folder.
    tasks: String,
    /// The jobs (indexes into the request), task 0 first.
    members: Vec<usize>,
}

/// Submits every job of `dag`, held; returns their ids (`ARRAY_TASK`), in order.
pub(super) async fn submit(inner: &Inner, dag: &DagRequest) -> Result<Vec<String>, ExecutorError> {
    let problems: Vec<String> = dag
        .jobs
        .iter()
        .flat_map(|j| script::problems(&j.request.job))
        .collect();
    if !problems.is_empty() {
        return Err(ExecutorError::new(format!(
            "these jobs cannot be written for Slurm:\n  - {}",
            problems.join("\n  - ")
        )));
    }
    if dag.jobs.is_empty() {
        return Ok(Vec::new());
    }
    let max_array = inner.max_array_tasks().await?;
    let layout = Layout::new(&dag.run, inner.settings.shared_dir.as_deref());
    let groups = {
        let layout = layout.clone();
        let dag = dag.clone();
        let container = inner.settings.container.clone();
        tokio::task::spawn_blocking(move || write_files(&layout, &dag, &container, max_array))
            .await
            .map_err(|e| ExecutorError::new(format!("writing the jobs' files failed: {e}")))??
    };
    let slurm_dir = layout.slurm_dir();
    let chdir = slurm_dir.to_str().ok_or_else(|| {
        ExecutorError::new(format!(
            "the shared folder `{}` is not valid UTF-8, which Slurm's options cannot carry",
            slurm_dir.display()
        ))
    })?;

    // The arrays, a few `sbatch` at once.
    let name = script::job_name(&dag.run.name, "");
    let name = name.trim_end_matches('/');
    let calls: Vec<(usize, Vec<String>)> = groups
        .iter()
        .enumerate()
        .map(|(k, group)| {
            let mut args = vec![
                "--parsable".to_owned(),
                "--hold".to_owned(),
                format!("--array=0-{}", group.members.len() - 1),
                format!("--job-name={name}"),
                format!("--chdir={chdir}"),
            ];
            args.extend(inner.settings.sbatch_args.iter().cloned());
            args.push(group.script.to_string_lossy().into_owned());
            args.push(group.tasks.clone());
            (k, args)
        })
        .collect();
    let results: Vec<(usize, Result<String, ExecutorError>)> = futures_util::stream::iter(
        calls
            .into_iter()
            .map(|(k, args)| sbatch(&inner.tools, k, args)),
    )
    .buffer_unordered(SBATCH_CONCURRENCY)
    .collect()
    .await;
    let mut arrays: Vec<(&Group, String)> = Vec::new();
    let mut refused: Option<(&Group, ExecutorError)> = None;
    for (k, result) in results {
        match result {
            Ok(id) => arrays.push((&groups[k], id)),
            Err(e) if refused.is_none() => refused = Some((&groups[k], e)),
            Err(_) => {}
        }
    }
    if let Some((group, e)) = refused {
        cancel_arrays(inner, arrays.iter().map(|(_, id)| id.clone()).collect()).await;
        let jobs: Vec<String> = group
            .members
            .iter()
            .take(5)
            .map(|&i| format!("`{}`", dag.jobs[i].request.job.id))
            .collect();
        let more = group.members.len().saturating_sub(5);
        let script = std::fs::read_to_string(&group.script).unwrap_or_default();
        let options: Vec<&str> = script
            .lines()
            .filter_map(|l| l.strip_prefix("#SBATCH "))
            .collect();
        return Err(ExecutorError {
            message: format!(
                "Slurm refused job(s) {}{} ({}): {}",
                jobs.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                },
                options.join(" "),
                e.message
            ),
            help: e.help.or_else(|| {
                Some(
                    "check the jobs' `resources` against what the cluster has (`sinfo -o '%P %c %m %G'`), and `slurm.partition`/`sbatch-args` in the executor configuration".to_owned(),
                )
            }),
        });
    }

    let mut ids = vec![String::new(); dag.jobs.len()];
    for (group, array) in &arrays {
        for (task, &i) in group.members.iter().enumerate() {
            ids[i] = format!("{array}_{task}");
        }
    }

    // Names and dependencies, in one `scontrol`, dependents first.
    let by_id: HashMap<&str, usize> = dag
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.request.job.id.as_str(), i))
        .collect();
    let mut commands = String::new();
    for (i, job) in dag.jobs.iter().enumerate().rev() {
        let _ = write!(
            commands,
            "update JobId={} Name={}",
            ids[i],
            script::job_name(&dag.run.name, &job.request.job.id)
        );
        let after: Vec<&str> = job
            .after
            .iter()
            .filter_map(|d| by_id.get(d.as_str()).map(|&d| ids[d].as_str()))
            .chain(
                job.after_submitted
                    .iter()
                    .map(String::as_str)
                    .filter(|id| array_of(id).is_some()),
            )
            .collect();
        if !after.is_empty() {
            let _ = write!(commands, " Dependency=afterok:{}", after.join(":"));
        }
        commands.push('\n');
    }
    commands.push_str("quit\n");
    if let Err(e) = inner
        .tools
        .run("scontrol", &[], Some(commands.as_bytes()))
        .await
    {
        cancel_arrays(inner, arrays.iter().map(|(_, id)| id.clone()).collect()).await;
        return Err(ExecutorError {
            message: format!(
                "setting the jobs' dependencies failed, nothing was started: {}",
                e.message
            ),
            help: e.help,
        });
    }
    Ok(ids)
}

/// One `sbatch` of a held array; its id.
async fn sbatch(
    tools: &Tools,
    k: usize,
    args: Vec<String>,
) -> (usize, Result<String, ExecutorError>) {
    let result = tools.run("sbatch", &args, None).await.and_then(|out| {
        let id = out.stdout.trim().split(';').next().unwrap_or("").to_owned();
        if array_of(&id).is_some() {
            Ok(id)
        } else {
            Err(ExecutorError::new(format!(
                "`sbatch --parsable` answered `{}`, not a job id",
                out.stdout.trim()
            )))
        }
    });
    (k, result)
}

/// Lets held jobs start: one `scontrol release` for `ids`, given as whole arrays when
/// `whole_arrays` (every task of them is released: one request per array), else one by one.
pub(super) async fn release(
    inner: &Inner,
    ids: &[String],
    whole_arrays: bool,
) -> Result<(), ExecutorError> {
    let mut list: Vec<&str> = if whole_arrays {
        ids.iter().filter_map(|id| array_of(id)).collect()
    } else {
        ids.iter()
            .map(String::as_str)
            .filter(|id| array_of(id).is_some())
            .collect()
    };
    list.sort_unstable();
    list.dedup();
    if list.is_empty() {
        return Ok(());
    }
    inner
        .tools
        .run("scontrol", &["release".to_owned(), list.join(",")], None)
        .await
        .map(|_| ())
}

async fn cancel_arrays(inner: &Inner, arrays: Vec<String>) {
    if arrays.is_empty() {
        return;
    }
    if let Err(e) = scancel(&inner.tools, &arrays, false).await {
        tracing::error!("cannot cancel the arrays of a failed submission: {e}");
    }
}

/// Writes the run's copy of the project (once), the batch scripts, every job's folder and the
/// task files; returns the arrays to submit.
fn write_files(
    layout: &Layout,
    dag: &DagRequest,
    container: &Container,
    max_array: usize,
) -> Result<Vec<Group>, ExecutorError> {
    let slurm = layout.slurm_dir();
    for sub in ["scripts", "tasks", "output", "jobs"] {
        let dir = slurm.join(sub);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, &e))?;
    }
    let source = slurm.join("source");
    if !source.is_dir() {
        // Written aside, then renamed: a crash never leaves a half copy for jobs to use.
        let partial = slurm.join(format!("source.partial-{}", std::process::id()));
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(|e| io_error(&partial, &e))?;
        }
        dag.files
            .materialise(&partial)
            .map_err(|e| io_error(&partial, &e))?;
        if let Err(e) = std::fs::rename(&partial, &source)
            && !source.is_dir()
        {
            return Err(io_error(&source, &e));
        }
    }

    let retry_delay_ms = u64::try_from(dag.retry_delay.as_millis()).unwrap_or(u64::MAX);
    let mut shapes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, job) in dag.jobs.iter().enumerate() {
        let text =
            script::batch_script(&script::resource_options(&job.request.job, retry_delay_ms));
        shapes.entry(text).or_default().push(i);
    }

    let nonce = dstack_core::run::now_ms();
    let mut groups = Vec::new();
    for (text, members) in shapes {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut hasher);
        let script = slurm
            .join("scripts")
            .join(format!("{:016x}.sh", hasher.finish()));
        if !script.is_file() {
            std::fs::write(&script, &text).map_err(|e| io_error(&script, &e))?;
        }
        for chunk in members.chunks(max_array.max(1)) {
            let tasks = format!("tasks/{nonce}-{}.sh", groups.len());
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(task, &i)| {
                    job_entry(
                        layout,
                        &source,
                        task,
                        &dag.jobs[i],
                        dag,
                        container,
                        retry_delay_ms,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            let path = slurm.join(&tasks);
            std::fs::write(&path, script::manifest(&entries)).map_err(|e| io_error(&path, &e))?;
            groups.push(Group {
                script: script.clone(),
                tasks,
                members: chunk.to_vec(),
            });
        }
    }
    Ok(groups)
}

/// One job's branch of its array's manifest. What an earlier submission of the job left in
/// its folder (output, status, offsets) is removed first.
fn job_entry(
    layout: &Layout,
    source: &Path,
    task: usize,
    job: &DagJob,
    dag: &DagRequest,
    container: &Container,
    retry_delay_ms: u64,
) -> Result<Vec<u8>, ExecutorError> {
    let request = &job.request;
    let spec = &request.job;
    let dir = layout.job_dir(&request.tree);
    if std::fs::symlink_metadata(&dir).is_ok() {
        std::fs::remove_dir_all(&dir).map_err(|e| io_error(&dir, &e))?;
    }
    let tree = layout.shared(&request.tree);
    let working_dir = if spec.working_dir == "." {
        tree.clone()
    } else {
        tree.join(&spec.working_dir)
    };
    let artifacts_dir = layout.shared(&job.artifacts_dir);
    let paths = JobPaths {
        tree: &tree,
        working_dir: &working_dir,
        artifacts: &artifacts_dir,
        source,
    };

    let mut inputs = Vec::new();
    for input in &request.inputs {
        let shared = layout.shared(&input.source);
        // An artifact already in the store but not on the shared file system (a separate
        // shared folder: a tagged run's, or an earlier drive's) is staged there.
        if layout.separate()
            && std::fs::symlink_metadata(&shared).is_err()
            && std::fs::symlink_metadata(&input.source).is_ok()
        {
            if let Some(parent) = shared.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_error(parent, &e))?;
            }
            artifacts::link_tree(&input.source, &shared, false)
                .map_err(|e| io_error(&shared, &e))?;
        }
        inputs.push((input.from_job.clone(), shared, input.path.clone()));
    }

    let command = match (&spec.image, &spec.download) {
        (Some(image), None) => {
            let workdir = if spec.working_dir == "." {
                "/workflow".to_owned()
            } else {
                format!("/workflow/{}", spec.working_dir)
            };
            script::container_command(container, image, &tree, &workdir).map(|c| (c, workdir))
        }
        _ => None,
    };
    let cd_to = match &command {
        Some((_, workdir)) => std::ffi::OsString::from(workdir),
        None => working_dir.clone().into_os_string(),
    };
    let files = script::JobFiles {
        job_script: script::job_script(spec, &request.run, &cd_to),
        launch: script::launch(command.as_ref().map(|(c, _)| c.as_slice())),
        inputs: script::inputs_file(&inputs),
        artifacts: script::artifacts_file(&spec.artifacts),
    };
    Ok(script::manifest_entry(
        task,
        &Layout::job_dir_relative(&request.tree),
        &paths,
        spec,
        retry_delay_ms,
        dag.keep_failed_trees,
        &files,
    ))
}

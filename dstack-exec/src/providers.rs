//! Provider programs on this machine: [`ProcessRunner`] runs the programs of
//! `.dstack/providers.yaml` providers as local processes and fetches the providers of other
//! repositories (`provider: {repo: URL, name: NAME}`) with git2 into a cache.
//!
//! The protocol (input file, environment, JSON output) is dstack-core's: see
//! [`dstack_core::program`]. A program runs in its `image` through the Docker executor when the
//! configured engine answers (a throwaway copy of the folder that defines it, the project or
//! the provider repository's checkout at the fetched commit, is the container's `/workflow`),
//! else on the host in that folder ([`ProcessRunner::on_host`] and
//! [`ProcessRunner::in_containers`] choose explicitly).
//!
//! # The repository cache
//!
//! `<state>/providers/repos/<key>` holds a bare repository per URL (`key` is a hash of the URL);
//! `<state>/providers/trees/<key>-<commit>` the files of one commit, written once (aside, then
//! renamed) and read by every later plan. `URL@REF` (split by dstack-core) pins a branch, a tag or a commit; a full
//! commit hash already in the cache needs no network at all. Without `@REF` the remote's default
//! branch is fetched at every plan (in one process, once per URL).

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dstack_core::JobSpec;
use dstack_core::program::{Program, ProgramError, ProgramInput, ProgramRunner, RepoProviders};
use dstack_core::run::{Executor, FailureReason, JobOutcome, JobRequest, Reporter, Stream};
use dstack_core::{Project, ProviderRegistry};
use git2::{ObjectType, Oid, Repository};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How long a provider program may run by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// The most a provider program may print on standard output.
pub const MAX_OUTPUT: usize = 16 << 20;
/// How much of a failed program's standard error is shown.
const STDERR_TAIL: usize = 4096;

static SCRATCH: AtomicU64 = AtomicU64::new(0);

/// A name no other thread or process of this machine uses at the same time.
fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        SCRATCH.fetch_add(1, Ordering::Relaxed)
    )
}

/// How long the output of a finished program is waited for (a process that left its group
/// may hold the pipes open).
const DRAIN: Duration = Duration::from_secs(2);

/// Where provider programs run.
#[derive(Debug, Clone)]
enum Mode {
    /// In their image when a Docker engine answers (the executor configuration's), else on
    /// the host.
    Auto,
    /// On the host, as process groups.
    Host,
    /// In their image, through this executor.
    Containers(Arc<dyn Executor>),
}

/// Runs provider programs (in their image when a Docker engine answers, else as local
/// processes); fetches provider repositories into a cache.
#[derive(Debug)]
pub struct ProcessRunner {
    cache: PathBuf,
    root: PathBuf,
    timeout: Duration,
    fetched: Mutex<HashMap<String, RepoProviders>>,
    mode: Mode,
    engine: OnceLock<Option<Arc<dyn Executor>>>,
}

impl ProcessRunner {
    /// A runner that keeps its files in `cache` (`<state>/providers`) and resolves relative
    /// repository paths against the project's `root`.
    #[must_use]
    pub fn new(cache: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        // Absolute, because programs run in other folders than ours (`-C .` is the default).
        let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        ProcessRunner {
            cache: absolute(cache.into()),
            root: absolute(root.into()),
            timeout: DEFAULT_TIMEOUT,
            fetched: Mutex::new(HashMap::new()),
            mode: Mode::Auto,
            engine: OnceLock::new(),
        }
    }

    /// Runs programs on the host, whatever engine answers.
    #[must_use]
    pub fn on_host(mut self) -> Self {
        self.mode = Mode::Host;
        self
    }

    /// Runs programs in their image through `executor` (a Docker executor).
    #[must_use]
    pub fn in_containers(mut self, executor: Arc<dyn Executor>) -> Self {
        self.mode = Mode::Containers(executor);
        self
    }

    /// The executor that runs programs in their image, if any (asked once).
    fn container(&self) -> Option<Arc<dyn Executor>> {
        match &self.mode {
            Mode::Host => None,
            Mode::Containers(e) => Some(e.clone()),
            Mode::Auto => self
                .engine
                .get_or_init(|| {
                    let config = crate::ExecConfig::load(&self.root).ok()?;
                    crate::docker::probe(&config.docker)
                        .ok()
                        .map(|s| s.executor)
                })
                .clone(),
        }
    }

    /// Sets how long a program may run.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// The built-in providers plus a [`ProcessRunner`] for the project at `root` whose state is in
/// `state_dir`: what the CLI and the Python bindings plan with.
#[must_use]
pub fn registry(root: &Path, state_dir: &Path) -> ProviderRegistry {
    let mut registry = ProviderRegistry::default();
    set_runner(&mut registry, root, state_dir);
    registry
}

/// Gives `registry` a [`ProcessRunner`] unless it has a runner already.
pub fn set_runner(registry: &mut ProviderRegistry, root: &Path, state_dir: &Path) {
    if registry.program_runner().is_none() {
        registry.set_program_runner(Arc::new(ProcessRunner::new(
            state_dir.join("providers"),
            root,
        )));
    }
}

/// Loads the project at `root` with [`registry`].
///
/// # Errors
/// As [`Project::load_with`].
pub fn load_project(root: &Path) -> Result<Project, dstack_core::Error> {
    let state = dstack_core::run::default_state_dir(root);
    Project::load_with(root, registry(root, &state))
}

fn script(commands: &[String]) -> String {
    let mut s = String::from("set -e\n");
    for c in commands {
        s.push_str(c);
        s.push('\n');
    }
    s
}

/// Removes a file when dropped.
struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Removes a folder when dropped.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl ProgramRunner for ProcessRunner {
    fn run(&self, program: &Program, input: &ProgramInput) -> Result<Vec<u8>, ProgramError> {
        self.ensure_cache()?;
        if let Some(executor) = self.container() {
            return self.run_in_image(&executor, program, input);
        }
        let inputs = self.cache.join("inputs");
        std::fs::create_dir_all(&inputs)
            .map_err(|e| ProgramError::new(format!("cannot create `{}`: {e}", inputs.display())))?;
        let file = inputs.join(format!("{}.json", unique()));
        let json = serde_json::to_vec_pretty(input)
            .map_err(|e| ProgramError::new(format!("cannot write its input: {e}")))?;
        std::fs::write(&file, json)
            .map_err(|e| ProgramError::new(format!("cannot write `{}`: {e}", file.display())))?;
        let _remove = Remove(file.clone());
        // A program from the repository cache runs in a throwaway copy of its checkout, so
        // what it writes never changes the cache or meets another plan's files.
        let scratch = if program.dir.starts_with(&self.cache) {
            let work = self.cache.join("work").join(unique());
            let copied = dstack_core::run::tree::ProjectFiles::scan_all(&program.dir)
                .and_then(|files| files.materialise(&work));
            if let Err(e) = copied {
                let _ = std::fs::remove_dir_all(&work);
                return Err(ProgramError::new(format!(
                    "cannot copy `{}` to run its program: {e}",
                    program.dir.display()
                )));
            }
            Some(RemoveDir(work))
        } else {
            None
        };
        let dir = scratch
            .as_ref()
            .map_or(program.dir.as_path(), |w| w.0.as_path());
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script(&program.provider.commands))
            .current_dir(dir)
            .env("DSTACK_WORKFLOW_FILE", &file)
            .env("DSTACK_WORKFLOW", &input.workflow)
            .env("DSTACK_PROVIDER", &input.provider)
            .env("DSTACK_PROVIDER_IMAGE", &program.provider.image)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                ProgramError::new(format!(
                    "its program cannot start in `{}`: {e}",
                    program.dir.display()
                ))
            })?;
        let group = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let (out_tx, out_rx) = std::sync::mpsc::channel();
        let (err_tx, err_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut overflow = false;
            if let Some(s) = stdout.as_mut() {
                let _ = s.take(MAX_OUTPUT as u64 + 1).read_to_end(&mut buf);
                overflow = buf.len() > MAX_OUTPUT;
                // Keep draining so the program never blocks on a full pipe.
                let _ = std::io::copy(s, &mut std::io::sink());
            }
            let _ = out_tx.send((buf, overflow));
        });
        std::thread::spawn(move || {
            let mut tail = Vec::new();
            if let Some(s) = stderr.as_mut() {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&chunk[..n]);
                    if tail.len() > 2 * STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
            }
            let _ = err_tx.send(tail);
        });
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if started.elapsed() >= self.timeout => {
                    let _ = killpg(group, Signal::SIGKILL);
                    let _ = child.wait();
                    break Err(());
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    let _ = killpg(group, Signal::SIGKILL);
                    let _ = child.wait();
                    return Err(ProgramError::new(format!(
                        "cannot wait for its program: {e}"
                    )));
                }
            }
        };
        // What it left running in the background would hold the pipes open.
        let _ = killpg(group, Signal::SIGKILL);
        // Bounded: a process that left the group (`setsid`) may hold the pipes open for ever.
        let (stdout, overflow) = out_rx.recv_timeout(DRAIN).unwrap_or((Vec::new(), true));
        let tail = err_rx.recv_timeout(DRAIN).unwrap_or_default();
        let with_stderr = |e: ProgramError| with_stderr_tail(e, &tail);
        let Ok(status) = status else {
            return Err(with_stderr(ProgramError::new(format!(
                "its program ran longer than {}",
                humantime::format_duration(self.timeout)
            ))));
        };
        if !status.success() {
            let how = match (
                status.code(),
                std::os::unix::process::ExitStatusExt::signal(&status),
            ) {
                (Some(code), _) => format!("exited with code {code}"),
                (None, Some(sig)) => format!("was killed by signal {sig}"),
                (None, None) => "failed".to_owned(),
            };
            return Err(with_stderr(ProgramError::new(format!("its program {how}"))));
        }
        if overflow {
            return Err(ProgramError::new(format!(
                "its program printed more than {} MiB",
                MAX_OUTPUT >> 20
            )));
        }
        Ok(stdout)
    }

    fn fetch(&self, repo: &str, git_ref: Option<&str>) -> Result<RepoProviders, ProgramError> {
        let key = match git_ref {
            Some(r) => format!("{repo}@{r}"),
            None => repo.to_owned(),
        };
        if let Some(hit) = self
            .fetched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return Ok(hit.clone());
        }
        let fetched = self.fetch_uncached(repo, git_ref)?;
        self.fetched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, fetched.clone());
        Ok(fetched)
    }
}

/// Collects a containerised program's output.
#[derive(Debug, Default)]
struct Collect {
    stdout: Mutex<(Vec<u8>, bool)>,
    stderr: Mutex<Vec<u8>>,
}

impl Reporter for Collect {
    fn started(&self, _executor_id: &str) {}

    fn log(&self, stream: Stream, bytes: &[u8]) {
        match stream {
            Stream::Stdout => {
                let mut out = self
                    .stdout
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if out.0.len() + bytes.len() > MAX_OUTPUT {
                    out.1 = true;
                } else {
                    out.0.extend_from_slice(bytes);
                }
            }
            Stream::Stderr => {
                let mut tail = self
                    .stderr
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                tail.extend_from_slice(bytes);
                if tail.len() > 2 * STDERR_TAIL {
                    let cut = tail.len() - STDERR_TAIL;
                    tail.drain(..cut);
                }
            }
        }
    }

    fn note(&self, _message: &str) {}
}

/// Adds the end of a program's standard error to `e` as help.
fn with_stderr_tail(e: ProgramError, tail: &[u8]) -> ProgramError {
    let text = String::from_utf8_lossy(tail);
    let text = text.trim_end();
    if text.is_empty() {
        return e;
    }
    let start = text.len().saturating_sub(STDERR_TAIL);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    let shown: Vec<String> = text[start..].lines().map(|l| format!("    {l}")).collect();
    e.with_help(format!(
        "its standard error ended with:\n{}",
        shown.join("\n")
    ))
}

impl ProcessRunner {
    /// Runs `program` in its image: a throwaway copy of the folder that defines it is the
    /// container's `/workflow`, its input file is in it.
    fn run_in_image(
        &self,
        executor: &Arc<dyn Executor>,
        program: &Program,
        input: &ProgramInput,
    ) -> Result<Vec<u8>, ProgramError> {
        const INPUT: &str = ".dstack-provider-input.json";
        let work = RemoveDir(self.cache.join("work").join(unique()));
        let state = self.cache.parent().unwrap_or(&self.cache).to_path_buf();
        let files = if program.dir.starts_with(&self.cache) {
            dstack_core::run::tree::ProjectFiles::scan_all(&program.dir)
        } else {
            dstack_core::run::tree::ProjectFiles::scan(&program.dir, &state)
        };
        files.and_then(|f| f.materialise(&work.0)).map_err(|e| {
            ProgramError::new(format!(
                "cannot copy `{}` to run its program: {e}",
                program.dir.display()
            ))
        })?;
        let json = serde_json::to_vec_pretty(input)
            .map_err(|e| ProgramError::new(format!("cannot write its input: {e}")))?;
        std::fs::write(work.0.join(INPUT), json)
            .map_err(|e| ProgramError::new(format!("cannot write its input: {e}")))?;
        let env = [
            ("DSTACK_WORKFLOW_FILE", format!("/workflow/{INPUT}")),
            ("DSTACK_WORKFLOW", input.workflow.clone()),
            ("DSTACK_PROVIDER", input.provider.clone()),
            ("DSTACK_PROVIDER_IMAGE", program.provider.image.clone()),
        ];
        let job = JobSpec {
            id: format!("provider-{}", input.provider),
            workflow: input.workflow.clone(),
            provider: input.provider.clone(),
            image: Some(program.provider.image.clone()),
            commands: program.provider.commands.clone(),
            working_dir: ".".to_owned(),
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ..JobSpec::default()
        };
        let request = JobRequest {
            run: format!("plan-{}", unique()),
            job: job.clone(),
            tree: work.0.clone(),
            inputs: Vec::new(),
            attempt: 1,
        };
        let collect = Arc::new(Collect::default());
        let timeout = self.timeout;
        let reporter: Arc<dyn Reporter> = collect.clone();
        // A runtime of its own on a thread of its own: planning is called from inside and
        // outside runtimes alike.
        let outcome = std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| ProgramError::new(format!("cannot start a runtime: {e}")))?;
                    runtime.block_on(async move {
                        executor
                            .prepare(std::slice::from_ref(&job))
                            .await
                            .map_err(|e| {
                                let mut p = ProgramError::new(format!(
                                    "its image cannot be used: {}",
                                    e.message
                                ));
                                if let Some(h) = e.help {
                                    p = p.with_help(h);
                                }
                                p
                            })?;
                        let cancel = tokio_util::sync::CancellationToken::new();
                        let run = executor.run(request, reporter, cancel.clone());
                        tokio::pin!(run);
                        tokio::select! {
                            outcome = &mut run => Ok(Some(outcome)),
                            () = tokio::time::sleep(timeout) => {
                                cancel.cancel();
                                let _ = run.await;
                                Ok(None)
                            }
                        }
                    })
                })
                .join()
                .unwrap_or_else(|_| Err(ProgramError::new("running its program failed")))
        })?;
        let tail = collect
            .stderr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let (stdout, overflow) = std::mem::take(
            &mut *collect
                .stdout
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        match outcome {
            None => Err(with_stderr_tail(
                ProgramError::new(format!(
                    "its program ran longer than {}",
                    humantime::format_duration(timeout)
                )),
                &tail,
            )),
            Some(JobOutcome::Succeeded) if overflow => Err(ProgramError::new(format!(
                "its program printed more than {} MiB",
                MAX_OUTPUT >> 20
            ))),
            Some(JobOutcome::Succeeded) => Ok(stdout),
            Some(JobOutcome::Failed(reason)) => {
                let how = match &reason {
                    FailureReason::Error { message } => message.clone(),
                    other => other.to_string(),
                };
                Err(with_stderr_tail(
                    ProgramError::new(format!(
                        "its program {how} (in image `{}`)",
                        program.provider.image
                    )),
                    &tail,
                ))
            }
            Some(JobOutcome::Cancelled) => Err(ProgramError::new("its program was cancelled")),
        }
    }
}

fn git_problem(what: String, e: &git2::Error) -> ProgramError {
    let mut error = ProgramError::new(format!("{what}: {}", e.message()));
    if e.class() == git2::ErrorClass::Ssh || e.message().contains("unsupported URL protocol") {
        error = error.with_help(
            "dstack fetches provider repositories over https://, file:// or from a local path",
        );
    } else if e.class() == git2::ErrorClass::Net || e.class() == git2::ErrorClass::Http {
        error = error.with_help("check the URL and the network; a commit already fetched once (`URL@COMMIT`) needs no network");
    }
    error
}

impl ProcessRunner {
    /// Creates the cache folder with a `.gitignore` of its own: the cache lives in the state
    /// folder, which may be inside the project, and `plan` alone must not make it show up in
    /// `git status`.
    fn ensure_cache(&self) -> Result<(), ProgramError> {
        let ignore = self.cache.join(".gitignore");
        if ignore.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.cache)
            .and_then(|()| {
                std::fs::write(
                    &ignore,
                    "# Written by dstack: the provider programs' cache.\n*\n",
                )
            })
            .map_err(|e| {
                ProgramError::new(format!("cannot create `{}`: {e}", self.cache.display()))
            })
    }

    fn fetch_uncached(
        &self,
        url: &str,
        reference: Option<&str>,
    ) -> Result<RepoProviders, ProgramError> {
        self.ensure_cache()?;
        let url = if url.contains("://") || url.starts_with('/') || looks_like_scp(url) {
            url.to_owned()
        } else {
            self.root.join(url).to_string_lossy().into_owned()
        };
        let key = Oid::hash_object(ObjectType::Blob, url.as_bytes())
            .map_err(|e| git_problem("cannot hash the URL".to_owned(), &e))?
            .to_string()[..16]
            .to_owned();
        let repos = self.cache.join("repos");
        let bare = repos.join(&key);
        let repository = match Repository::open_bare(&bare) {
            Ok(r) => r,
            Err(_) => {
                // The first fetch goes into a fresh repository aside, kept only if it works:
                // an unreachable URL leaves nothing behind.
                let partial = repos.join(format!(".{key}.partial-{}", unique()));
                let _ = std::fs::remove_dir_all(&partial);
                let fresh = Repository::init_bare(&partial).map_err(|e| {
                    git_problem(
                        format!("cannot create a cache in `{}`", partial.display()),
                        &e,
                    )
                });
                let fetched = fresh.and_then(|r| fetch(&r, &url).map(|_| ()));
                if let Err(e) = fetched {
                    let _ = std::fs::remove_dir_all(&partial);
                    for dir in [&repos, &self.cache] {
                        let _ = std::fs::remove_dir(dir); // only when empty
                    }
                    return Err(e);
                }
                if std::fs::rename(&partial, &bare).is_err() {
                    let _ = std::fs::remove_dir_all(&partial); // another process was first
                }
                Repository::open_bare(&bare).map_err(|e| {
                    git_problem(format!("cannot open the cache `{}`", bare.display()), &e)
                })?
            }
        };
        let pinned = reference
            .filter(|r| r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|r| Oid::from_str(r).ok())
            .filter(|oid| repository.find_commit(*oid).is_ok());
        let commit = match pinned {
            Some(oid) => oid,
            None => {
                let default = fetch(&repository, &url)?;
                resolve(&repository, &url, reference, default.as_deref())?
            }
        };
        let tree = self.cache.join("trees").join(format!("{key}-{commit}"));
        if !tree.is_dir() {
            let partial = self
                .cache
                .join("trees")
                .join(format!(".{key}-{commit}.partial-{}", unique()));
            let _ = std::fs::remove_dir_all(&partial);
            if let Err(e) = crate::git::write_commit(&repository, commit, &partial) {
                let _ = std::fs::remove_dir_all(&partial);
                return Err(ProgramError::new(format!(
                    "cannot write commit {commit} of `{url}`: {e}"
                )));
            }
            if std::fs::rename(&partial, &tree).is_err() {
                let _ = std::fs::remove_dir_all(&partial);
                if !tree.is_dir() {
                    return Err(ProgramError::new(format!(
                        "cannot write `{}`",
                        tree.display()
                    )));
                }
            }
        }
        let file = tree.join(".dstack").join("providers.yaml");
        let short = &commit.to_string()[..12];
        let text = std::fs::read_to_string(&file).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ProgramError::new(format!(
                    "commit {short} has no `.dstack/providers.yaml`"
                ))
                .with_help("a provider repository defines its providers in `.dstack/providers.yaml` (`providers:` with `name`, `image`, `commands`)")
            } else {
                ProgramError::new(format!("cannot read `{}`: {e}", file.display()))
            }
        })?;
        let shown = PathBuf::from(format!("{url}@{short}:.dstack/providers.yaml"));
        let providers = dstack_core::config::parse_providers_file(&text, &shown).map_err(|d| {
            ProgramError::new(format!(
                "its `.dstack/providers.yaml` has problems:\n{}",
                d.errors()
                    .map(|d| format!("  {d}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
        })?;
        Ok(RepoProviders {
            commit: commit.to_string(),
            dir: tree,
            providers,
        })
    }
}

fn looks_like_scp(url: &str) -> bool {
    // `user@host:path`
    url.find(':')
        .is_some_and(|c| url[..c].contains('@') && !url[..c].contains('/'))
}

/// Fetches every branch and tag of `url`; returns the remote's default branch
/// (`refs/heads/main`).
fn fetch(repository: &Repository, url: &str) -> Result<Option<String>, ProgramError> {
    let mut remote = repository
        .remote_anonymous(url)
        .map_err(|e| git_problem(format!("cannot use `{url}`"), &e))?;
    let mut connection = remote
        .connect_auth(git2::Direction::Fetch, None, None)
        .map_err(|e| git_problem(format!("cannot reach `{url}`"), &e))?;
    let default = connection
        .default_branch()
        .ok()
        .and_then(|b| b.as_str().ok().map(str::to_owned));
    let mut options = git2::FetchOptions::new();
    options.download_tags(git2::AutotagOption::All);
    connection
        .remote()
        .fetch(
            &[
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ],
            Some(&mut options),
            None,
        )
        .map_err(|e| git_problem(format!("cannot fetch `{url}`"), &e))?;
    Ok(default)
}

/// The commit `reference` (a branch, tag or commit; the default branch when `None`) names.
fn resolve(
    repository: &Repository,
    url: &str,
    reference: Option<&str>,
    default: Option<&str>,
) -> Result<Oid, ProgramError> {
    let peel = |spec: &str| {
        repository
            .revparse_single(spec)
            .ok()
            .and_then(|o| o.peel_to_commit().ok())
            .map(|c| c.id())
    };
    match reference {
        None => {
            let branch = default
                .and_then(|d| d.strip_prefix("refs/heads/"))
                .ok_or_else(|| {
                    ProgramError::new(format!(
                        "`{url}` has no default branch (an empty repository?)"
                    ))
                    .with_help("pin a branch, tag or commit: `URL@REF`")
                })?;
            peel(&format!("refs/remotes/origin/{branch}")).ok_or_else(|| {
                ProgramError::new(format!("`{url}`: branch `{branch}` has no commit"))
            })
        }
        Some(r) => {
            for spec in [format!("refs/remotes/origin/{r}"), format!("refs/tags/{r}")] {
                if let Some(oid) = peel(&spec) {
                    return Ok(oid);
                }
            }
            if r.len() >= 4
                && r.bytes().all(|b| b.is_ascii_hexdigit())
                && let Some(oid) = peel(r)
            {
                return Ok(oid);
            }
            let names: Vec<String> = repository
                .references()
                .map(|refs| {
                    refs.filter_map(Result::ok)
                        .filter_map(|r| r.shorthand().ok().map(str::to_owned))
                        .map(|n| n.strip_prefix("origin/").map_or(n.clone(), str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let hint = dstack_core::diag::did_you_mean(r, names.iter().map(String::as_str));
            let mut e = ProgramError::new(format!("`{r}` is no branch, tag or commit of `{url}`"));
            match hint {
                Some(h) => e = e.with_help(format!("did you mean `{h}`?")),
                None if !names.is_empty() => {
                    let mut names = names;
                    names.sort();
                    names.dedup();
                    let more = names.len().saturating_sub(10);
                    names.truncate(10);
                    e = e.with_help(format!(
                        "its branches and tags: {}{}",
                        names.join(", "),
                        if more > 0 {
                            format!(" (and {more} more)")
                        } else {
                            String::new()
                        }
                    ));
                }
                None => {}
            }
            Err(e)
        }
    }
}

//! `dstack`: the command-line interface of dstack-rs.
//!
//! Thin by design: it parses arguments, calls `dstack-core` and `dstack-exec`, and renders
//! results and errors. Exit codes: 0 success, 1 a problem in the user's files or workflows (or
//! a failed job), 2 a usage error.

mod render;
mod runs;

/// mimalloc instead of the system allocator: fewer instructions per allocation, and far fewer
/// page faults, because it takes memory from the system in large pieces (`dstack plan` on
/// thousands of workflows makes hundreds of thousands of small allocations; BENCHMARKS.md).
/// Its 2.x line (the crate's `v2` feature): mimalloc 3 touched a third more fresh memory for
/// the same work here, and zeroing fresh pages is much of a short run's time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use dstack_core::{Code, Diagnostics, Error, Overrides, Project};

#[derive(Debug, Parser)]
#[command(
    name = "dstack",
    version,
    about = "Declarative ML workflows: validate, plan and run `.dstack/workflows.yaml`",
    propagate_version = true
)]
struct Cli {
    /// Run as if dstack was started in DIR (the folder that holds `.dstack/`).
    #[arg(short = 'C', value_name = "DIR", global = true, default_value = ".")]
    dir: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check `.dstack/*.yaml` and report every problem, each with its file, line and column.
    Validate {
        /// How to print problems.
        #[arg(long, value_enum, default_value_t = DiagFormat::Text)]
        format: DiagFormat,
    },
    /// Show the jobs a workflow would run, with its dependencies, in stages.
    ///
    /// Variables follow the workflow name: `dstack plan train --gpu 2 --epoch 100`. A prefix of
    /// a variable's name is enough when it is unambiguous, and `_` may stand for `-`.
    Plan {
        /// The workflow to plan.
        workflow: String,
        /// Variable overrides: `--NAME VALUE` or `--NAME=VALUE`. dstack's own options
        /// (`--format`, `--var`) may come before or after them.
        #[arg(value_name = "--NAME VALUE", allow_hyphen_values = true, trailing_var_arg = true, num_args = 0..)]
        variables: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        /// Set a variable whose name is also a dstack option (`--var format=csv`).
        #[arg(long = "var", value_name = "NAME=VALUE")]
        var: Vec<String>,
    },
    /// List the project's workflows with their providers, dependencies and descriptions.
    #[command(visible_alias = "ls")]
    Workflows,
    /// Print the JSON Schema of `.dstack/workflows.yaml` (for editors).
    Schema,
    /// Run a workflow and what it depends on; prints the run's name.
    ///
    /// Variables follow the workflow name: `dstack run train --gpu 2 --epoch 100`. dstack's
    /// own options (`--executor`, `-j`, `--keep-going`, `--detach`, `--no-git`, `--var`) may come
    /// before or after them. Ctrl-C stops the run (a second Ctrl-C kills its jobs at once).
    Run {
        /// The workflow to run.
        workflow: String,
        /// Variable overrides: `--NAME VALUE` or `--NAME=VALUE`.
        #[arg(value_name = "--NAME VALUE", allow_hyphen_values = true, trailing_var_arg = true, num_args = 0..)]
        variables: Vec<String>,
        #[command(flatten)]
        options: runs::DriveArgs,
        /// Where jobs run: `auto` (Docker when an engine answers, else local processes),
        /// `local`, `docker`, `slurm`.
        #[arg(long, default_value = "auto")]
        executor: String,
        /// Set a variable whose name is also a dstack option (`--var detach=1`).
        #[arg(long = "var", value_name = "NAME=VALUE")]
        var: Vec<String>,
        /// Run the folder as it is, without a Git repository: no commit or local changes are
        /// recorded, and a resume runs the files as they are then.
        #[arg(long, env = "DSTACK_NO_GIT", value_parser = clap::builder::FalseyValueParser::new())]
        no_git: bool,
    },
    /// Run again what did not succeed in a run (stopped, failed, or interrupted); keep the rest.
    Resume {
        /// The run.
        run: String,
        #[command(flatten)]
        options: runs::DriveArgs,
    },
    /// List runs: unfinished ones and those of the last day (all with `-a`).
    #[command(visible_alias = "status")]
    Ps {
        /// Show this run and its jobs.
        run: Option<String>,
        /// All runs.
        #[arg(short, long)]
        all: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = runs::ListFormat::Text)]
        format: runs::ListFormat,
    },
    /// Print a run's logs (of one workflow's jobs when WORKFLOW is given).
    Logs {
        /// The run.
        run: String,
        /// Only this workflow's jobs.
        workflow: Option<String>,
        /// Keep printing new lines until the run ends.
        #[arg(short, long)]
        follow: bool,
        /// Only lines written since this long ago (`10m`, `1d`) or this time (RFC 3339).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
    },
    /// Stop a run: its running jobs are stopped (the artifacts they wrote are kept), the rest
    /// skipped.
    Stop {
        /// The run.
        run: String,
        /// Stop without saving artifacts; the run ends `aborted`.
        #[arg(long)]
        abort: bool,
    },
    /// Tag a finished run (`depends-on: WORKFLOW:TAG` reuses its artifacts).
    Tag {
        /// The run.
        run: String,
        /// The tag, e.g. `latest`; moves it if another run has it.
        tag: String,
    },
    /// Remove a tag.
    Untag {
        /// The tag.
        tag: String,
    },
    /// List tags.
    Tags,
    /// List a run's artifacts, or copy them into a folder.
    Artifacts {
        /// The run.
        run: String,
        /// Copy them into DIR/JOB/PATH.
        #[arg(long, short, value_name = "DIR")]
        output: Option<PathBuf>,
    },
    /// Delete finished runs that have no tag, with their logs and artifacts (but those whose
    /// artifacts a kept run reuses).
    Prune,
    /// Drive a run submitted with `--detach` (started by dstack itself).
    #[command(name = "__drive", hide = true)]
    Drive {
        /// The run.
        run: String,
        #[command(flatten)]
        options: runs::DriveArgs,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PlanFormat {
    Text,
    Json,
    Dot,
    Mermaid,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DiagFormat {
    Text,
    Json,
}

/// What `main` reports: user problems (exit 1) or usage problems (exit 2).
enum Failure {
    User(String),
    Usage(String),
    /// Exit with this code, having said everything already (a failed or stopped run).
    Code(u8),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            // Variables given on the command line that match no variable, or several: a
            // usage error, as argparse made it in the original (like `--gpu` with no value).
            Error::Invalid(ref d)
                if !d.0.is_empty() && d.0.iter().all(|d| d.code == Code::UnknownVariable) =>
            {
                Failure::Usage(e.to_string())
            }
            // One line per problem, each with its location and severity.
            Error::Invalid(_) => Failure::User(e.to_string()),
            // A file that cannot be read (a folder, no permission).
            other => Failure::User(format!("error: {other}")),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let mut command = Cli::command();
    if args.iter().any(|a| a == "-h" || a == "--help")
        && let Some(list) = workflows_help(&args)
    {
        command = command
            .mut_subcommand("plan", |c| c.after_help(list.clone()))
            .mut_subcommand("run", |c| c.after_help(list));
    }
    let matches = command.get_matches_from(args);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // Not locked: the progress renderer writes from the runtime's threads too.
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let result = run(cli, &mut out, &mut err);
    let _ = out.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::User(message)) => {
            if !message.is_empty() {
                let _ = writeln!(err, "{message}");
            }
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            let _ = writeln!(err, "{message}");
            ExitCode::from(2)
        }
        Err(Failure::Code(code)) => ExitCode::from(code),
    }
}

/// Removes dstack's own options (`--NAME VALUE`, `--NAME=VALUE`) from the words that follow
/// the workflow name, which are otherwise variables.
fn take_options(
    words: &mut Vec<String>,
    names: &[&'static str],
) -> Result<Vec<(&'static str, String)>, Failure> {
    take_options_and_flags(words, names, &[])
}

/// [`take_options`], also taking the flags in `flags` (they get the value `true`).
fn take_options_and_flags(
    words: &mut Vec<String>,
    names: &[&'static str],
    flags: &[&'static str],
) -> Result<Vec<(&'static str, String)>, Failure> {
    let mut taken = Vec::new();
    let mut rest = Vec::with_capacity(words.len());
    let mut iter = std::mem::take(words).into_iter();
    while let Some(word) = iter.next() {
        if let Some(flag) = word
            .strip_prefix("--")
            .and_then(|f| flags.iter().find(|n| **n == f))
        {
            taken.push((*flag, "true".to_owned()));
            continue;
        }
        // `-j N` and `-jN`, the short form of `--jobs`.
        if names.contains(&"jobs") && word.starts_with("-j") && !word.starts_with("--") {
            let value = match &word[2..] {
                "" => iter
                    .next()
                    .ok_or_else(|| Failure::Usage("error: `-j` needs a value".into()))?,
                v => v.to_owned(),
            };
            taken.push(("jobs", value));
            continue;
        }
        let option = word.strip_prefix("--").and_then(|o| {
            let (name, value) = match o.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (o, None),
            };
            names.iter().find(|n| **n == name).map(|n| (*n, value))
        });
        match option {
            Some((name, Some(value))) => taken.push((name, value)),
            Some((name, None)) => match iter.next() {
                Some(value) => taken.push((name, value)),
                None => return Err(Failure::Usage(format!("error: `--{name}` needs a value"))),
            },
            None => rest.push(word),
        }
    }
    *words = rest;
    Ok(taken)
}

/// Variable overrides from `--NAME VALUE` words and `--var NAME=VALUE` options.
fn overrides(words: &[String], vars: &[String]) -> Result<Overrides, Failure> {
    let mut overrides = Overrides::from_args(words).map_err(|d| Failure::Usage(d.to_string()))?;
    for v in vars {
        let Some((name, value)) = v.split_once('=') else {
            return Err(Failure::Usage(format!(
                "error: `--var {v}` needs the form `--var NAME=VALUE`"
            )));
        };
        overrides.set_text(name, value);
    }
    Ok(overrides)
}

/// The project's workflows and their `help` lines, for `dstack plan --help`.
fn workflows_help(args: &[OsString]) -> Option<String> {
    let dir = args
        .iter()
        .position(|a| a == "-C")
        .and_then(|i| args.get(i + 1))
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let project = Project::load(&dir).ok()?;
    let width = project.workflows().iter().map(|w| w.name.len()).max()?;
    let mut text = format!("Workflows of {}:\n", project.files().workflows.display());
    for wf in project.workflows() {
        let help = wf.help.as_deref().unwrap_or("");
        text.push_str(&format!("  {:width$}  {help}\n", wf.name));
    }
    Some(text)
}

fn write_warnings(err: &mut dyn std::io::Write, warnings: &Diagnostics) {
    for w in warnings.warnings() {
        let _ = writeln!(err, "{w}");
    }
}

fn run(
    cli: Cli,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> Result<(), Failure> {
    match cli.command {
        Command::Run {
            workflow,
            mut variables,
            mut options,
            mut executor,
            mut var,
            mut no_git,
        } => {
            let taken = take_options_and_flags(
                &mut variables,
                &["executor", "jobs", "var"],
                &["keep-going", "detach", "no-git"],
            )?;
            for (name, value) in taken {
                match name {
                    "executor" => executor = value,
                    "jobs" => {
                        options.jobs = Some(value.parse().map_err(|_| {
                            Failure::Usage(format!("error: `-j {value}` needs a number of jobs"))
                        })?);
                    }
                    "keep-going" => options.keep_going = true,
                    "detach" => options.detach = true,
                    "no-git" => no_git = true,
                    _ => var.push(value),
                }
            }
            let overrides = overrides(&variables, &var)?;
            let request = runs::RunRequest {
                workflow: &workflow,
                overrides: &overrides,
                executor: &executor,
                git: !no_git,
            };
            runs::run(&cli.dir, &request, &options, out, err)
        }
        Command::Resume { run, options } => runs::resume(&cli.dir, &run, &options, out, err),
        Command::Drive { run, options } => runs::drive_detached(&cli.dir, &run, &options),
        Command::Ps { run, all, format } => runs::ps(&cli.dir, run.as_deref(), all, format, out),
        Command::Logs {
            run,
            workflow,
            follow,
            since,
        } => runs::logs(
            &cli.dir,
            &run,
            workflow.as_deref(),
            follow,
            since.as_deref(),
            out,
            err,
        ),
        Command::Stop { run, abort } => runs::stop(&cli.dir, &run, abort, out),
        Command::Tag { run, tag } => runs::tag(&cli.dir, &run, &tag, out),
        Command::Untag { tag } => runs::untag(&cli.dir, &tag, out),
        Command::Tags => runs::tags(&cli.dir, out),
        Command::Artifacts { run, output } => {
            runs::artifacts(&cli.dir, &run, output.as_deref(), out)
        }
        Command::Prune => runs::prune(&cli.dir, out),
        Command::Schema => {
            let schema = dstack_core::schema::workflows_schema();
            let text = serde_json::to_string_pretty(&schema).unwrap_or_default();
            let _ = writeln!(out, "{text}");
            Ok(())
        }
        Command::Validate { format } => {
            let result = dstack_exec::providers::load_project(&cli.dir).and_then(|p| {
                let warnings = p.validate(&Overrides::new())?;
                Ok((p, warnings))
            });
            match format {
                DiagFormat::Json => {
                    let (ok, diags) = match &result {
                        Ok((_, w)) => (true, w.clone()),
                        Err(Error::Invalid(d)) => (false, d.clone()),
                        Err(e) => return Err(Failure::User(format!("error: {e}"))),
                    };
                    let text = serde_json::to_string_pretty(&diags).unwrap_or_default();
                    let _ = writeln!(out, "{text}");
                    if ok {
                        Ok(())
                    } else {
                        Err(Failure::User(String::new()))
                    }
                }
                DiagFormat::Text => {
                    let (project, warnings) = result?;
                    write_warnings(err, &warnings);
                    let n = project.workflows().len();
                    let _ = writeln!(
                        out,
                        "{}: {n} workflow{} valid",
                        project.files().workflows.display(),
                        if n == 1 { "" } else { "s" }
                    );
                    Ok(())
                }
            }
        }
        Command::Plan {
            workflow,
            mut variables,
            mut format,
            mut var,
        } => {
            for (name, value) in take_options(&mut variables, &["format", "var"])? {
                match name {
                    "format" => {
                        format = PlanFormat::from_str(&value, false).map_err(|e| {
                            Failure::Usage(format!(
                                "error: invalid value `{value}` for `--format`: {e}"
                            ))
                        })?;
                    }
                    _ => var.push(value),
                }
            }
            let overrides = overrides(&variables, &var)?;
            let project = dstack_exec::providers::load_project(&cli.dir)?;
            let plan = project.plan(&workflow, &overrides)?;
            write_warnings(err, &plan.warnings);
            for note in &plan.notes {
                let _ = writeln!(err, "note: {note}");
            }
            let mut buffered = std::io::BufWriter::with_capacity(256 * 1024, out);
            let _ = match format {
                PlanFormat::Text => write!(buffered, "{plan}"),
                PlanFormat::Json => plan.write_json(&mut buffered),
                PlanFormat::Dot => buffered.write_all(plan.to_dot().as_bytes()),
                PlanFormat::Mermaid => buffered.write_all(plan.to_mermaid().as_bytes()),
            };
            let _ = buffered.flush();
            // The process ends next: freeing thousands of jobs one by one is wasted work.
            std::mem::forget(plan);
            std::mem::forget(project);
            Ok(())
        }
        Command::Workflows => {
            let project = dstack_exec::providers::load_project(&cli.dir)?;
            write_warnings(err, project.warnings());
            let width = project
                .workflows()
                .iter()
                .map(|w| w.name.len())
                .max()
                .unwrap_or(0);
            for wf in project.workflows() {
                let deps: Vec<String> = wf
                    .depends_on
                    .iter()
                    .map(dstack_core::Dependency::reference)
                    .collect();
                let mut line = format!("{:width$}  {}", wf.name, wf.provider.name());
                if !deps.is_empty() {
                    line.push_str(&format!("  after {}", deps.join(", ")));
                }
                if let Some(help) = &wf.help {
                    line.push_str(&format!("  # {help}"));
                }
                let _ = writeln!(out, "{}", line.trim_end());
            }
            Ok(())
        }
    }
}

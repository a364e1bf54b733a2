//! `s3state`: inspect and repair Terraform state in S3 from the command line.

mod backend_block;
mod commands;
mod digest;
mod error;
mod generated_docs;
mod inventory;
mod probe;
mod rekey;
mod settings;
mod tooling;
mod ui;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error
  2  usage error
  3  conflict: the state changed since it was read (refresh and retry)
  4  locked: someone else holds the state's lock
  5  probe: the store is safe only under the lock
  6  probe: the store is unsafe for s3state
  7  probe: the store is safe, with limits (some features fail with an error)

Settings come from flags, then S3STATE_* variables, then the `backend \"s3\"` block of the
.tf files in --chdir (default: the current directory). Credentials and region also come from
the standard AWS_* variables and profiles.";

/// Why `push` and `restore` lock, in their `--help` (a macro, so that `concat!` can use it).
macro_rules! locking_help {
    ($command:literal) => {
        concat!(
            "Locking: ",
            $command,
            " takes the state's lock first and releases it when done,\n",
            "as `terraform state push` does (<key>.tflock, the lock Terraform and OpenTofu use).\n",
            "A held lock exits 4 and names its holder; --lock-timeout 5m waits for it instead.\n",
            "The write is also conditional (compare-and-swap), but that protects only against\n",
            "writers that write conditionally too. Terraform writes its state blindly while it\n",
            "holds the lock, so only the lock protects against a running Terraform.\n",
            "--lock=false skips the lock (compare-and-swap only)."
        )
    };
}

/// Inspect, history, diff, restore and lock Terraform state stored in S3.
#[derive(Debug, Parser)]
#[command(name = "s3state", version, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub settings: settings::Flags,

    /// More log output on stderr (-v: requests, -vv: SDK detail). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the state JSON, exactly as stored (decrypted, for an OpenTofu-encrypted state).
    #[command(
        after_help = "Example:\n  s3state pull > terraform.tfstate\n  s3state pull --version-id 3HL4kqtJvjVBH40Nrjfkd\n  TF_ENCRYPTION=\"$(cat enc.hcl)\" s3state pull\n  s3state pull --raw   # the OpenTofu envelope, undecrypted"
    )]
    Pull {
        /// A past version instead of the current one.
        #[arg(long)]
        version_id: Option<String>,
        /// The bytes as stored, without decrypting an OpenTofu-encrypted state.
        #[arg(long)]
        raw: bool,
    },
    /// Write a state file as the new snapshot, with Terraform's lineage and serial checks.
    #[command(after_help = concat!(
        locking_help!("push"),
        "\n\nExample:\n  s3state push fixed.tfstate\n  s3state pull | jq '...' | s3state push -\n  s3state push --lock-timeout 5m fixed.tfstate"
    ))]
    Push {
        /// The state file, or - for standard input.
        file: PathBuf,
        /// Allow another lineage, an older serial, or the same serial with other content. The
        /// old snapshot stays in history.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        lock: LockFlags,
    },
    /// Show root module outputs (sensitive values masked).
    #[command(
        after_help = "Example:\n  s3state outputs\n  s3state outputs vpc_id --raw\n  s3state outputs --json --show-sensitive"
    )]
    Outputs {
        /// One output only.
        name: Option<String>,
        /// JSON, in `terraform output -json`'s shape. Unlike Terraform, a sensitive value is
        /// withheld (`"value": null, "withheld": true`) unless --show-sensitive is given.
        #[arg(long, conflicts_with = "raw")]
        json: bool,
        /// Print a string, number or bool output bare, for shell scripts.
        #[arg(long, requires = "name")]
        raw: bool,
        /// Show sensitive values instead of masking them.
        #[arg(long)]
        show_sensitive: bool,
    },
    /// Show the current snapshot's identity and where it is stored.
    #[command(after_help = "Example:\n  s3state meta\n  s3state meta --json")]
    Meta {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List the state's versions, newest first.
    #[command(
        after_help = "Example:\n  s3state history --limit 10 --details\n  s3state history --json"
    )]
    History {
        /// Also show each version's serial, lineage and Terraform version (more requests).
        #[arg(long)]
        details: bool,
        /// Show at most N versions.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show what changed between two versions (B defaults to current).
    #[command(
        after_help = "Versions: a version id, `current`, `previous`, or `~N` (N versions back).\n\nExample:\n  s3state diff previous\n  s3state diff ~5 current --json"
    )]
    Diff {
        /// The older version.
        a: String,
        /// The newer version.
        #[arg(default_value = "current")]
        b: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Write a past version's content as a new snapshot (nothing in history is deleted).
    #[command(after_help = concat!(
        locking_help!("restore"),
        "\n\nExample:\n  s3state restore previous\n  s3state restore 3HL4kqtJvjVBH40Nrjfkd --yes"
    ))]
    Restore {
        /// The version to bring back: an id, `previous`, or `~N`.
        #[arg(value_name = "VERSION")]
        target: String,
        /// Allow restoring a snapshot of another lineage.
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        lock: LockFlags,
    },
    /// Take the state's lock and print its ID.
    #[command(
        after_help = "Example:\n  id=$(s3state lock --operation maintenance --timeout 2m)\n  ...\n  s3state unlock \"$id\""
    )]
    Lock {
        /// The operation recorded in the lock.
        #[arg(long, default_value = "OperationTypeInvalid")]
        operation: String,
        /// Free-form info recorded in the lock.
        #[arg(long, default_value = "")]
        info: String,
        /// How long to wait for a held lock (e.g. 30s, 2m). Default: do not wait.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// Release a lock taken with `s3state lock`, by its ID.
    #[command(after_help = "Example:\n  s3state unlock 9f0c0d5e-3f0e-4a8e-9d3a-0c5f1d1f2b7a")]
    Unlock {
        /// The lock's ID.
        id: String,
    },
    /// Remove someone else's stale lock, by its ID (see `lock-info`).
    #[command(
        after_help = "Example:\n  s3state lock-info\n  s3state force-unlock 91731845-4e72-fefa-2c11-97277aabd814"
    )]
    ForceUnlock {
        /// The lock's ID, as `lock-info` shows it.
        id: String,
    },
    /// Show who holds the lock, since when, and for what.
    #[command(after_help = "Example:\n  s3state lock-info\n  s3state -w staging lock-info --json")]
    LockInfo {
        /// JSON output (Terraform's lock info fields).
        #[arg(long)]
        json: bool,
    },
    /// Permanently remove old versions. Shows what it would remove unless --yes is given.
    #[command(
        after_help = "The current version and the newest version with content are always kept, so a deleted state keeps a snapshot to restore. A version is kept if any rule keeps it.\n\nExample:\n  s3state prune --keep 100                 # show what would go\n  s3state prune --keep 100 --newer-than 90d --yes"
    )]
    Prune {
        /// Keep the newest N versions with content (delete markers among them are kept and do
        /// not count).
        #[arg(long, value_name = "N")]
        keep: Option<usize>,
        /// Keep versions newer than this age (e.g. 30d, 12h).
        #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
        newer_than: Option<std::time::Duration>,
        /// Really delete (without it, nothing is deleted).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Move states between OpenTofu encryption keys or methods: encrypt a plaintext state,
    /// decrypt one, or re-key it (read with the fallback, written with the method), under
    /// the lock and as a new version.
    #[command(
        after_help = "Configure the target as the `method` and what the states are now as a `fallback` (TF_ENCRYPTION, or the encryption block with --chdir).\n\nExample:\n  s3state rekey --dry-run\n  s3state rekey --prefix teams/ --dry-run\n  s3state rekey --prefix teams/"
    )]
    Rekey(rekey::RekeyArgs),
    /// List, create or delete workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Show or repair the state digest in Terraform's DynamoDB lock table (`dynamodb_table`).
    #[command(subcommand)]
    Digest(digest::DigestCommand),
    /// Serve Terraform's `http` backend protocol over the bucket (see the README's gateway section).
    Serve(s3state::server::ServeArgs),
    /// list, show, rm, mv: by resource address.
    #[command(flatten)]
    Tool(tooling::ToolCommand),
    /// Check whether the endpoint and bucket honour what s3state relies on (conditional
    /// writes, versions, checksums), with scratch objects it removes afterwards.
    #[command(
        after_help = "Exit codes: 0 safe, 7 safe with limits, 5 safe only under the lock, 6 unsafe (1, 2 errors).\n\nExample:\n  s3state --bucket tfstate --endpoint-url https://s3.example.net --path-style probe\n  s3state --chdir infra probe --json"
    )]
    Probe(probe::ProbeArgs),
    /// Print a shell completion script to stdout (see the README for where it goes).
    #[command(
        after_help = "Example:\n  s3state completions bash > ~/.local/share/bash-completion/completions/s3state\n  s3state completions zsh > ~/.zfunc/_s3state\n  s3state completions fish > ~/.config/fish/completions/s3state.fish"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, or write one page per command into a directory.
    #[command(
        after_help = "Example:\n  s3state man | man -l -\n  s3state man --dir ~/.local/share/man/man1"
    )]
    Man {
        /// Write s3state.1, s3state-pull.1, … into this directory (created if missing) and
        /// print their paths.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Whether a write takes the state's lock first, and how long it waits for it.
#[derive(Debug, Clone, clap::Args)]
pub struct LockFlags {
    /// Take the state's lock first (the default). `--lock=false` skips it, and a running
    /// Terraform can then overwrite the write. Give a value only with `=`.
    // `require_equals`: `--lock false` must not read `false` as the flag's value (it is the
    // next argument), as for `--path-style`.
    #[arg(
        long,
        num_args = 0..=1,
        require_equals = true,
        default_value = "true",
        default_missing_value = "true",
        value_name = "BOOL",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub lock: bool,
    /// How long to wait for a lock someone else holds (e.g. 30s, 5m); 0s fails at once, as in
    /// Terraform.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "0s",
        value_parser = humantime::parse_duration
    )]
    pub lock_timeout: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// List the workspaces: `default` always (as Terraform lists it), then those that have a
    /// state.
    #[command(after_help = "Example:\n  s3state workspace list")]
    List,
    /// Create a workspace with an empty state.
    #[command(after_help = "Example:\n  s3state workspace new staging")]
    New {
        /// The workspace name.
        #[arg(value_parser = settings::workspace_name)]
        name: String,
    },
    /// Delete a workspace's state (its history is kept). A state that still tracks resources
    /// is refused, as Terraform refuses it, unless --force.
    #[command(after_help = "Example:\n  s3state workspace delete staging")]
    Delete {
        /// The workspace name.
        #[arg(value_parser = settings::workspace_name)]
        name: String,
        /// Delete it even though its state still tracks resources.
        #[arg(long)]
        force: bool,
    },
}

/// The command line, parsed as `Cli::parse()` parses it (the same help, version, usage errors
/// and exit codes), without dropping the command tree at the end.
///
/// The tree (every subcommand, each with its own copy of every global flag) is built to parse
/// once. Freeing it took about 9% of the instructions of a whole 1 KB `pull` (callgrind),
/// work the process's exit does for nothing.
fn parse_command_line() -> Cli {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let mut command = Cli::command();
    let mut matches = command.get_matches_mut();
    let cli = Cli::from_arg_matches_mut(&mut matches)
        .unwrap_or_else(|err| err.format(&mut command).exit());
    std::mem::forget(command);
    cli
}

fn main() -> ExitCode {
    let cli = parse_command_line();
    ui::init_logging(cli.verbose);
    // Notes about backend-block settings s3state does not apply matter where the store's
    // setup is the question (`meta`, `probe`) or when asked (-v); not on every read.
    settings::show_backend_notes(
        cli.verbose > 0 || matches!(cli.command, Command::Meta { .. } | Command::Probe(_)),
    );
    // A read-only command makes a request or a few, one after another or a few at once, and
    // takes no lock: one thread serves it, without starting a worker per core (or reading
    // the cgroup's CPU quota to count them) first. Everything else (the gateway, the
    // inventory's parallel reads, writes whose abandoned lock is released by a background
    // task) keeps the multi-threaded runtime.
    let read_only = matches!(
        cli.command,
        Command::Pull { .. }
            | Command::Outputs { .. }
            | Command::Meta { .. }
            | Command::History { .. }
            | Command::Diff { .. }
            | Command::LockInfo { .. }
    );
    let runtime = if read_only {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    if let Command::Serve(args) = cli.command {
        let s = cli.settings;
        if let Err(err) = settings::serve_takes_these(&s) {
            ui::report(&err);
            return ExitCode::from(ui::exit_code(&err));
        }
        let s3 = s3state::server::S3Flags {
            bucket: s.bucket,
            region: s.region,
            endpoint_url: s.endpoint_url,
            path_style: s.path_style,
            profile: s.profile,
            dynamodb_table: s.dynamodb_table,
            dynamodb_endpoint_url: s.dynamodb_endpoint_url,
            connect_timeout: s.connect_timeout,
            read_timeout: s.read_timeout,
            operation_attempt_timeout: s.operation_attempt_timeout,
            operation_timeout: s.operation_timeout,
        };
        return runtime.block_on(s3state::server::run_cli(args, s3));
    }
    if let Command::Probe(args) = cli.command {
        return match runtime.block_on(probe::run(cli.settings, args)) {
            Ok(verdict_code) => ExitCode::from(verdict_code),
            Err(err) => {
                ui::report(&err);
                ExitCode::from(ui::exit_code(&err))
            }
        };
    }
    let result = match cli.command {
        Command::Tool(tool) => runtime.block_on(tooling::run(&cli.settings, tool)),
        Command::Rekey(args) => runtime.block_on(rekey::run(&cli.settings, args)),
        Command::Completions { shell } => {
            generated_docs::completions(shell, <Cli as clap::CommandFactory>::command())
        }
        Command::Man { dir } => {
            generated_docs::man(<Cli as clap::CommandFactory>::command(), dir.as_deref())
        }
        _ => runtime.block_on(commands::run(cli)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            ui::report(&err);
            ExitCode::from(ui::exit_code(&err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("s3state").chain(args.iter().copied()))
    }

    #[test]
    fn a_boolean_flag_never_takes_the_next_word_as_its_value() {
        let cli = parse(&["--bucket", "b", "--key", "k", "--path-style", "pull"]).unwrap();
        assert_eq!(cli.settings.path_style, Some(true));
        assert!(matches!(cli.command, Command::Pull { .. }), "{cli:?}");

        let cli = parse(&["--path-style", "workspace", "list"]).unwrap();
        assert_eq!(cli.settings.path_style, Some(true));
        assert!(matches!(
            cli.command,
            Command::Workspace(WorkspaceCommand::List)
        ));

        for (flag, expected) in [
            ("--path-style=false", false),
            ("--path-style=true", true),
            ("--path-style=0", false),
            ("--path-style=yes", true),
        ] {
            let cli = parse(&[flag, "meta"]).unwrap();
            assert_eq!(cli.settings.path_style, Some(expected), "{flag}");
        }
        let cli = parse(&["pull", "--path-style"]).unwrap();
        assert_eq!(
            cli.settings.path_style,
            Some(true),
            "also after the command"
        );
        assert!(parse(&["--path-style=maybe", "pull"]).is_err());
    }

    fn push_lock(args: &[&str]) -> (LockFlags, PathBuf) {
        match parse(args).unwrap().command {
            Command::Push { lock, file, .. } => (lock, file),
            other => panic!("not a push: {other:?}"),
        }
    }

    #[test]
    fn writes_lock_by_default_and_lock_takes_a_value_only_after_an_equals_sign() {
        use std::time::Duration;
        let (lock, file) = push_lock(&["push", "s.json"]);
        assert!(lock.lock);
        assert_eq!(lock.lock_timeout, Duration::ZERO, "Terraform's default");
        assert_eq!(file, PathBuf::from("s.json"));

        let (lock, _) = push_lock(&["push", "--lock=false", "s.json"]);
        assert!(!lock.lock);
        let (lock, file) = push_lock(&["push", "--lock", "s.json"]);
        assert!(lock.lock);
        assert_eq!(
            file,
            PathBuf::from("s.json"),
            "--lock did not take the file"
        );
        let (lock, _) = push_lock(&["push", "--lock-timeout", "1m30s", "-"]);
        assert_eq!(lock.lock_timeout, Duration::from_secs(90));
        assert!(parse(&["push", "--lock=maybe", "-"]).is_err());
        assert!(parse(&["push", "--lock-timeout", "soon", "-"]).is_err());

        let cli = parse(&["restore", "--lock=false", "--lock-timeout=10s", "previous"]).unwrap();
        let Command::Restore { lock, target, .. } = cli.command else {
            panic!("not a restore");
        };
        assert!(!lock.lock);
        assert_eq!(lock.lock_timeout, Duration::from_secs(10));
        assert_eq!(target, "previous");
    }

    #[test]
    fn workspace_names_terraform_refuses_are_usage_errors() {
        for args in [
            &["-w", "..", "meta"][..],
            &["--workspace=a/b", "pull"],
            &["workspace", "new", "."],
            &["workspace", "new", ""],
            &["workspace", "delete", "../x"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{args:?}"
            );
            assert!(
                err.to_string().contains("is not a valid workspace name"),
                "{args:?}: {err}"
            );
        }
        assert!(parse(&["workspace", "new", "staging-2"]).is_ok());
    }
}

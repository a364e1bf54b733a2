//! Commands by resource address: `list`, `show`, `rm` and `mv` (within one state or to
//! another), as `terraform state list/show/rm/mv` but straight on S3, locked and conditional.

use crate::LockFlags;
use crate::commands::{under_lock, under_locks};
use crate::error::CliError;
use crate::settings;
use crate::ui::print_stdout;
use s3state::state::{
    Address, AddressError, Inserted, InstanceAddress, PathStep, SENSITIVE_PLACEHOLDER as SENSITIVE,
};
use s3state::{
    Error, LockInfo, Persister, Refresher, RemoteState, S3Store, SnapshotMeta, State, Store,
    Transient,
};

type Result<T = ()> = std::result::Result<T, CliError>;

/// The address commands and `ls` (flattened into the CLI's commands).
#[derive(Debug, clap::Subcommand)]
pub enum ToolCommand {
    /// List every Terraform state (*.tfstate) under the bucket or a prefix, workspaces included.
    #[command(
        after_help = "Serial, lineage and version come from the metadata s3state writes beside each state; a body\nis read only where it is missing, or for --resources. --older-than and --locked are answered\nfrom the listing; --versions lists the prefix's versions once. No --key is needed.\n\nExample:\n  s3state ls\n  s3state ls teams/ --locked\n  s3state ls --sort modified --reverse --older-than 90d\n  s3state ls --json --resources --versions"
    )]
    Ls(crate::inventory::LsArgs),
    /// List resource instances by address, as `terraform state list`.
    #[command(
        after_help = "A filter is a module (module.a: everything in it), a resource or an instance.\n\nExample:\n  s3state list\n  s3state list module.network 'aws_instance.web[\"blue\"]'"
    )]
    List {
        /// Only what these addresses name.
        #[arg(value_name = "FILTER", value_parser = parse_address)]
        filters: Vec<Address>,
    },
    /// Show one instance's attributes as JSON, or one attribute (raw, for scripts).
    #[command(
        after_help = "Sensitive attributes (the state's sensitive_attributes) and sensitive outputs print as\n\"(sensitive value)\" unless --show-sensitive.\n\nExample:\n  s3state show 'module.db.aws_db_instance.main'\n  s3state show 'aws_instance.web[0].private_ip'\n  s3state show output.vpc_id"
    )]
    Show {
        /// An instance, optionally followed by an attribute path (.name, [0], [\"key\"]), or
        /// output.NAME.
        #[arg(value_name = "ADDRESS[.ATTRIBUTE]", value_parser = parse_with_path)]
        address: Target,
        /// Show sensitive values instead of masking them.
        #[arg(long)]
        show_sensitive: bool,
    },
    /// Remove resources, instances or modules from the state (nothing is destroyed).
    #[command(after_help = concat!(
        "The removed content stays in the bucket's history; the output names the version that has it.\n",
        "Locked by default, as push; --lock=false skips the lock (the write stays conditional).\n\n",
        "Example:\n  s3state rm --dry-run module.old\n  s3state rm 'aws_instance.web[1]' aws_eip.web"
    ))]
    Rm {
        /// What to remove.
        #[arg(value_name = "ADDRESS", required = true, value_parser = parse_address)]
        addresses: Vec<Address>,
        /// Print what would be removed and write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        lock: LockFlags,
    },
    /// Move a resource, an instance or a module, within the state or to another state.
    #[command(after_help = concat!(
        "With --to-key, --to-bucket or --to-workspace the destination is another state (the other\n",
        "settings as for the source; --to-workspace defaults to the source's workspace). Both states are locked, in key order;\n",
        "the destination is written first, then the source. If a run stops between the two\n",
        "writes, running it again finds the destination done and completes the source.\n\n",
        "Example:\n  s3state mv aws_instance.a aws_instance.b\n  s3state mv module.network module.net --to-key network/terraform.tfstate\n  s3state mv --dry-run 'aws_instance.x[0]' aws_instance.y --to-workspace staging"
    ))]
    Mv {
        /// What to move.
        #[arg(value_name = "SRC", value_parser = parse_address)]
        source: Address,
        /// Where to.
        #[arg(value_name = "DST", value_parser = parse_address)]
        destination: Address,
        /// Move into the state at this key (default: the same key).
        #[arg(long, value_name = "KEY")]
        to_key: Option<String>,
        /// Move into this bucket (same region and credentials; default: the same bucket).
        #[arg(long, value_name = "BUCKET")]
        to_bucket: Option<String>,
        /// Move into this workspace's state.
        #[arg(long, value_name = "NAME", value_parser = settings::workspace_name)]
        to_workspace: Option<String>,
        /// Print the plan and write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        lock: LockFlags,
    },
}

/// An address with an attribute path, as `show` takes it.
#[derive(Debug, Clone)]
pub struct Target {
    address: Address,
    path: Vec<PathStep>,
}

fn parse_address(text: &str) -> std::result::Result<Address, String> {
    let address = Address::parse(text).map_err(|err| err.to_string())?;
    if let Address::Output(_) = address {
        return Err("outputs are not resources; use `s3state show output.NAME`".into());
    }
    Ok(address)
}

fn parse_with_path(text: &str) -> std::result::Result<Target, String> {
    let (address, path) = Address::parse_with_path(text).map_err(|err| err.to_string())?;
    if let Address::Module(_) = address {
        return Err(format!(
            "{text} names a module; show takes an instance or output.NAME"
        ));
    }
    Ok(Target { address, path })
}

impl From<AddressError> for CliError {
    fn from(err: AddressError) -> Self {
        match err {
            AddressError::Syntax { .. } => CliError::Usage(err.to_string()),
            other => CliError::Other(other.to_string()),
        }
    }
}

pub async fn run(flags: &settings::Flags, command: ToolCommand) -> Result {
    if let ToolCommand::Ls(args) = command {
        return crate::inventory::run(flags, args).await;
    }
    let resolved = settings::resolve(flags)?;
    let workspace = resolved.workspace.clone();
    let backend = resolved.builder.clone().build_backend().await?;
    match command {
        ToolCommand::List { filters } => {
            let state = current(&backend.manager(&workspace)?).await?;
            let mut text = String::new();
            for instance in state.instances()? {
                if filters.is_empty() || filters.iter().any(|f| f.contains(&instance)) {
                    text.push_str(&format!("{instance}\n"));
                }
            }
            print_stdout(text.as_bytes())
        }
        ToolCommand::Show {
            address,
            show_sensitive,
        } => {
            let state = current(&backend.manager(&workspace)?).await?;
            show(&state, &address, show_sensitive)
        }
        ToolCommand::Rm {
            addresses,
            dry_run,
            lock,
        } => rm(&backend.manager(&workspace)?, &addresses, dry_run, &lock).await,
        ToolCommand::Mv {
            source,
            destination,
            to_key,
            to_bucket,
            to_workspace,
            dry_run,
            lock,
        } => {
            let from = backend.manager(&workspace)?;
            let to_backend = if to_key.is_some() || to_bucket.is_some() {
                let mut builder = resolved.builder.clone();
                if let Some(key) = &to_key {
                    builder = builder.with_key(key);
                }
                if let Some(bucket) = &to_bucket {
                    builder = builder.with_bucket(bucket);
                }
                builder.build_backend().await?
            } else {
                backend.clone()
            };
            let to = to_backend.manager(to_workspace.as_deref().unwrap_or(&workspace))?;
            if to.store().location() == from.store().location() {
                mv_within(&from, &source, &destination, dry_run, &lock).await
            } else {
                mv_across(&from, &to, &source, &destination, dry_run, &lock).await
            }
        }
        ToolCommand::Ls(_) => unreachable!("run above"),
    }
}

/// The stored state, read now; no state is an error, as in Terraform.
async fn current(manager: &RemoteState<S3Store>) -> Result<State> {
    manager.refresh_state().await?;
    manager.state().ok_or_else(|| {
        CliError::Other(format!(
            "there is no state at {}",
            manager.store().location()
        ))
    })
}

fn show(state: &State, target: &Target, show_sensitive: bool) -> Result {
    let value = match &target.address {
        Address::Output(name) => {
            let output = state
                .outputs
                .get(name)
                .ok_or_else(|| CliError::Other(format!("the state has no output {name:?}")))?;
            let mut value = output.to_value();
            if output.sensitive && !show_sensitive {
                value = serde_json::Value::from(SENSITIVE);
            }
            let mut at = Some(value);
            for step in &target.path {
                at = at.and_then(|v| match (v, step) {
                    (v @ serde_json::Value::String(_), _) if v == SENSITIVE => Some(v),
                    (serde_json::Value::Object(mut map), PathStep::Key(k)) => map.remove(k),
                    (serde_json::Value::Array(mut items), PathStep::Index(i))
                        if (*i as usize) < items.len() =>
                    {
                        Some(items.swap_remove(*i as usize))
                    }
                    _ => None,
                });
            }
            at
        }
        Address::Resource(_) | Address::Instance(_) => {
            let instance = match &target.address {
                Address::Instance(instance) => instance.clone(),
                Address::Resource(resource) => InstanceAddress {
                    resource: resource.clone(),
                    key: None,
                },
                _ => unreachable!(),
            };
            let Some(view) = state.instance(&instance)? else {
                let keyed: Vec<String> = state
                    .instances()?
                    .iter()
                    .filter(|i| i.resource == instance.resource)
                    .map(|i| i.to_string())
                    .collect();
                return Err(CliError::Other(if keyed.is_empty() {
                    format!("the state has no instance {instance}")
                } else {
                    format!(
                        "the state has no instance {instance}; name one of: {}",
                        keyed.join(", ")
                    )
                }));
            };
            view.value(&target.path, show_sensitive)
        }
        Address::Module(_) => unreachable!("refused when parsed"),
    };
    let Some(value) = value else {
        return Err(CliError::Other(format!(
            "{} has no attribute at that path",
            target.address
        )));
    };
    let whole_instance = target.path.is_empty() && !matches!(target.address, Address::Output(_));
    let text = match (&value, whole_instance) {
        (serde_json::Value::String(s), false) => format!("{s}\n"),
        (
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) | serde_json::Value::Null,
            false,
        ) => {
            format!("{value}\n")
        }
        _ => format!(
            "{}\n",
            serde_json::to_string_pretty(&value).expect("a Value serialises")
        ),
    };
    print_stdout(text.as_bytes())
}

/// `changed` with `base`'s identity: the persist numbers it after `base` (one more serial)
/// and, being conditional on `base`, refuses it if someone wrote meanwhile.
fn next(base: &State, mut changed: State) -> State {
    changed.serial = base.serial;
    changed.lineage = base.lineage.clone();
    changed
}

/// Persists `changed`, conditionally on the snapshot last read (a change made meanwhile is a
/// conflict, never overwritten), and returns the identity written.
async fn write(
    manager: &RemoteState<S3Store>,
    changed: State,
) -> std::result::Result<SnapshotMeta, Error> {
    manager.write_state(changed);
    manager.persist_state().await?;
    Ok(SnapshotMeta::of(
        &manager.state().expect("a persisted state is known"),
    ))
}

fn version_note(version_id: Option<String>) -> String {
    match version_id {
        Some(id) => {
            format!("The previous content stays in version {id} (s3state pull --version-id {id}).")
        }
        None => "The bucket keeps no versions: the previous content is not kept.".into(),
    }
}

fn no_lock() -> LockFlags {
    LockFlags {
        lock: false,
        lock_timeout: std::time::Duration::ZERO,
    }
}

async fn rm(
    manager: &RemoteState<S3Store>,
    addresses: &[Address],
    dry_run: bool,
    lock: &LockFlags,
) -> Result {
    let what: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    let info = LockInfo::new("state-rm").with_info(format!("s3state rm {}", what.join(" ")));
    let flags = if dry_run { no_lock() } else { lock.clone() };
    under_lock(manager, &flags, info, "rm", async {
        let base = current(manager).await?;
        let before = manager.persisted_object();
        let mut changed = base.clone();
        let mut removed = Vec::new();
        for address in addresses {
            removed.extend(changed.remove_address(address)?);
        }
        let verb = if dry_run { "Would remove" } else { "Removed" };
        let mut text = String::new();
        for instance in &removed {
            text.push_str(&format!("{verb} {instance}\n"));
        }
        if dry_run {
            text.push_str(&format!(
                "Dry run: {} instance(s) would be removed; nothing was written.\n",
                removed.len()
            ));
            return print_stdout(text.as_bytes());
        }
        let meta = write(manager, next(&base, changed)).await?;
        text.push_str(&format!(
            "Successfully removed {} resource instance(s); serial {}.\n",
            removed.len(),
            meta.serial
        ));
        print_stdout(text.as_bytes())?;
        eprintln!("{}", version_note(before.and_then(|b| b.version_id)));
        Ok(())
    })
    .await
}

fn plan_text(pairs: &[(InstanceAddress, InstanceAddress)], verb: &str, into: &str) -> String {
    pairs
        .iter()
        .map(|(a, b)| format!("{verb} \"{a}\" to \"{b}\"{into}\n"))
        .collect()
}

async fn mv_within(
    manager: &RemoteState<S3Store>,
    from: &Address,
    to: &Address,
    dry_run: bool,
    lock: &LockFlags,
) -> Result {
    let info = LockInfo::new("state-mv").with_info(format!("s3state mv {from} {to}"));
    let flags = if dry_run { no_lock() } else { lock.clone() };
    under_lock(manager, &flags, info, "mv", async {
        let base = current(manager).await?;
        let before = manager.persisted_object();
        let mut changed = base.clone();
        let moved = changed.move_address(from, to)?;
        if dry_run {
            let mut text = plan_text(&moved.pairs, "Would move", "");
            text.push_str("Dry run: nothing was written.\n");
            return print_stdout(text.as_bytes());
        }
        let meta = write(manager, next(&base, changed)).await?;
        let mut text = plan_text(&moved.pairs, "Move", "");
        text.push_str(&format!(
            "Successfully moved {} object(s); serial {}.\n",
            moved.pairs.len(),
            meta.serial
        ));
        print_stdout(text.as_bytes())?;
        eprintln!("{}", version_note(before.and_then(|b| b.version_id)));
        Ok(())
    })
    .await
}

async fn mv_across(
    source: &RemoteState<S3Store>,
    destination: &RemoteState<S3Store>,
    from: &Address,
    to: &Address,
    dry_run: bool,
    lock: &LockFlags,
) -> Result {
    let info = LockInfo::new("state-mv").with_info(format!(
        "s3state mv {from} {to} (from {} to {})",
        source.store().location(),
        destination.store().location()
    ));
    let flags = if dry_run { no_lock() } else { lock.clone() };
    // Both locks, always in key order, so two opposite moves cannot deadlock.
    let (first, second) = if source.store().location() <= destination.store().location() {
        (source, destination)
    } else {
        (destination, source)
    };
    under_locks(&[first, second], &flags, info, "mv", async {
        mv_across_locked(source, destination, from, to, dry_run).await
    })
    .await
}

async fn mv_across_locked(
    source: &RemoteState<S3Store>,
    destination: &RemoteState<S3Store>,
    from: &Address,
    to: &Address,
    dry_run: bool,
) -> Result {
    let src_base = current(source).await?;
    let src_version = source.persisted_object();
    destination.refresh_state().await?;
    let dst_base = destination.state();
    let into = format!(" in {}", destination.store().location());
    if let Some(dst) = &dst_base
        && (dst.version() != src_base.version()
            || dst.terraform_version.major != src_base.terraform_version.major)
    {
        return Err(CliError::Other(format!(
            "cannot move between states of different formats: {} is format {} (Terraform {}), {} is format {} (Terraform {})",
            source.store().location(),
            src_base.version(),
            src_base.terraform_version,
            destination.store().location(),
            dst.version(),
            dst.terraform_version
        )));
    }
    let moved = match src_base.take_moved(from, to) {
        Err(AddressError::NotFound(_))
            if dst_base.as_ref().is_some_and(|dst| {
                dst.instances()
                    .is_ok_and(|all| all.iter().any(|i| to.contains(i)))
            }) =>
        {
            return Err(CliError::Other(format!(
                "{from} is not in {} and {to} is in {}: the move looks done already; nothing was written",
                source.store().location(),
                destination.store().location()
            )));
        }
        other => other?,
    };
    let mut dst_changed = dst_base
        .clone()
        .unwrap_or_else(|| State::new(src_base.terraform_version.clone()));
    let inserted = moved.insert_into(&mut dst_changed)?;
    let mut src_changed = src_base.clone();
    src_changed.remove_address(from)?;
    if dry_run {
        let mut text = plan_text(&moved.pairs, "Would move", &into);
        if inserted == Inserted::AlreadyPresent {
            text.push_str(
                "The destination already has them (an earlier mv stopped after writing it); \
                 only the source would be written.\n",
            );
        }
        text.push_str("Dry run: nothing was written.\n");
        return print_stdout(text.as_bytes());
    }
    match (inserted, &dst_base) {
        (Inserted::AlreadyPresent, _) => eprintln!(
            "The destination already has these instances (an earlier mv stopped after writing \
             it); completing the move in the source."
        ),
        (Inserted::Added, Some(dst)) => {
            write(destination, next(dst, dst_changed)).await?;
        }
        (Inserted::Added, None) => {
            // A new state: the persist gives it serial 1 and a fresh lineage.
            write(destination, dst_changed).await?;
        }
    }
    let written = write(source, next(&src_base, src_changed)).await;
    // Whatever stopped the source write, the destination may already hold the moved
    // objects: say so, and how to finish. Conflicts and held locks keep their exit codes.
    let meta = written.map_err(|err| {
        let finish = "the destination was written but the source was not; run the same command \
                      again to complete the move (it recognises the written destination and \
                      only updates the source)";
        match err {
            Error::Conflict { .. } | Error::Locked { .. } => {
                eprintln!("{finish}");
                CliError::State(err)
            }
            other => CliError::Other(format!("{finish}: {other}")),
        }
    })?;
    let mut text = plan_text(&moved.pairs, "Move", &into);
    text.push_str(&format!(
        "Successfully moved {} object(s); source serial {}.\n",
        moved.pairs.len(),
        meta.serial
    ));
    print_stdout(text.as_bytes())?;
    eprintln!("{}", version_note(src_version.and_then(|b| b.version_id)));
    Ok(())
}

//! `cairn-validator`: the validator daemon and its status command.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use cairn_api::ApiClient;
use cairn_node::config::Config;
use cairn_node::logging;
use cairn_node::sdnotify::Notifier;
use cairn_validator::service::Validator;
use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairn-validator",
    version,
    about = "cairn validator: challenges, scoring, repair, weights"
)]
struct Cli {
    /// Config file (default: <data-dir>/node.toml if present, else /etc/cairn/validator.toml).
    #[arg(long, global = true, env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides `data_dir` in the config).
    #[arg(long, global = true, env = "CAIRN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the validator until SIGTERM.
    Run,
    /// Per-miner scores, verified bytes, weights and the last failures.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Generate man pages or shell completions (used by the packages).
    #[command(hide = true, subcommand)]
    Generate(Generate),
}

#[derive(Subcommand)]
enum Generate {
    Man { dir: PathBuf },
    Completions { shell: String },
}

fn main() {
    cairn_node::malloc::tune();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn load(cli: &Cli) -> Result<Config> {
    let path = cli.config.clone().or_else(|| {
        let in_dir = cli
            .data_dir
            .as_ref()
            .map(|d| d.join("node.toml"))
            .filter(|p| p.exists());
        in_dir.or_else(|| {
            let p = PathBuf::from("/etc/cairn/validator.toml");
            p.exists().then_some(p)
        })
    });
    let mut config = Config::load(path.as_deref(), std::env::vars())?;
    if let Some(d) = &cli.data_dir {
        config.data_dir = d.clone();
    }
    Ok(config)
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Generate(Generate::Man { dir }) => {
            cairn_node::cli_docs::write_man_pages(Cli::command(), dir)?;
            return Ok(());
        }
        Command::Generate(Generate::Completions { shell }) => {
            return cairn_node::cli_docs::write_completions(Cli::command(), shell)
                .map_err(anyhow::Error::msg);
        }
        _ => {}
    }
    let config = load(&cli)?;
    match cli.command {
        Command::Generate(_) => unreachable!("handled above"),
        Command::Status { json } => status(&config, json),
        Command::Run => {
            logging::init(&config.log.level, &config.log.format);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(async {
                    let notifier = Arc::new(Notifier::from_env());
                    let (validator, queues) = Validator::start(config).await?;
                    validator.node.start_background(Arc::clone(&notifier));
                    tracing::info!(node_id = %validator.node.node_id(), hotkey = %validator.node.hotkey().ss58(), "validating");
                    let validator = Arc::new(validator);
                    let (stop, stop_rx) = tokio::sync::watch::channel(false);
                    let loops = tokio::spawn(Arc::clone(&validator).run(queues, stop_rx));
                    notifier.ready("validating");
                    cairn_node::node::wait_for_signal().await;
                    notifier.stopping();
                    let _ = stop.send(true);
                    let _ = loops.await;
                    match Arc::try_unwrap(validator) {
                        Ok(v) => v.node.shutdown(Duration::from_secs(30)).await,
                        Err(_) => tracing::warn!("validator tasks still hold the node; exiting"),
                    }
                    Ok(())
                })
        }
    }
}

fn status(config: &Config, json: bool) -> Result<()> {
    let api = ApiClient::new(config.api.listen);
    let r = api
        .scores()
        .with_context(|| format!("asking the validator at {}", config.api.listen))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "{} datasets audited, {} challenges, {} shards repaired ({} pending, {} failed attempts)",
        r.datasets, r.challenges, r.repairs_done, r.repairs_pending, r.repairs_failed
    );
    println!(
        "{:<12} {:>7} {:>6} {:>6} {:>6} {:>6} {:>12} {:>6}  last failure",
        "miner", "score", "audits", "pass", "fail", "t/o", "verified", "weight"
    );
    for m in r.miners {
        println!(
            "{:<12} {:>7.4}{} {:>6} {:>6} {:>6} {:>6} {:>9.1} MiB {:>6}  {}",
            &m.node_id[..10.min(m.node_id.len())],
            m.score,
            if m.disqualified { "!" } else { " " },
            m.audits,
            m.passes,
            m.failures,
            m.timeouts,
            m.verified_bytes as f64 / 1048576.0,
            m.weight,
            printable(&m.last_failures.last().cloned().unwrap_or_default())
        );
    }
    Ok(())
}

/// Text from a miner (an error message it sent) made safe for a terminal:
/// control characters, escape sequences among them, become `?`.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn miner_text_cannot_drive_the_terminal() {
        let hostile = "refused: \u{1b}]0;owned\u{7}\u{1b}[2Jgone\r\nfake line";
        let shown = super::printable(hostile);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert!(shown.contains("refused") && shown.contains("gone"));
    }

    use clap::CommandFactory;

    /// Catches clashing flags and bad defaults, which clap otherwise only
    /// reports when the offending subcommand runs.
    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}

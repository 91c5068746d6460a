//! The command line: `shoal start | dev | status | certs | config | gateway-sandbox`, as `API.md` specifies.
//!
//! Exit codes: 0 success, 2 bad usage or config, 1 anything else. Errors are one sentence on
//! stderr.

pub mod dev;
pub mod status;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad configuration (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Bad usage (exit 2).
    #[error("{message}")]
    Usage {
        /// What is wrong.
        message: String,
    },
    /// The command failed (exit 1).
    #[error("{message}")]
    Failed {
        /// What went wrong.
        message: String,
    },
}

impl CliError {
    /// A failure with this sentence.
    pub fn failed(message: impl Into<String>) -> Self {
        CliError::Failed { message: message.into() }
    }

    fn exit_code(&self) -> i32 {
        match self {
            CliError::Config(_) | CliError::Usage { .. } => 2,
            CliError::Failed { .. } => 1,
        }
    }
}

#[derive(Parser, Debug)]
#[command(name = "shoal", version, about = "Shoal: a cluster of identical nodes serving system-design services.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one node in the foreground until SIGTERM/SIGINT.
    Start {
        /// The node's config file.
        #[arg(long)]
        config: PathBuf,
        /// Override a config value, e.g. --set log.filter=debug (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// A local cluster for development: up, kill, start.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
    /// Members and their health, meta leader, partitions.
    Status {
        /// A node's HTTP URL; default: the dev cluster's first node.
        #[arg(long)]
        endpoint: Option<String>,
        /// Redraw every second.
        #[arg(long)]
        watch: bool,
        /// Print the raw JSON of GET /v1/cluster.
        #[arg(long)]
        json: bool,
    },
    /// Certificates for the cluster.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// GET a node URL and exit 0 on a 2xx answer, 1 otherwise (container health checks).
    Probe {
        /// The URL, e.g. http://127.0.0.1:7000/healthz.
        url: String,
        /// Give up after this long, e.g. 3s.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// A local Stripe-compatible payment gateway for development and tests (in memory; see
    /// docs/api.md, "Sandbox gateway").
    GatewaySandbox {
        /// Address to serve on (port 0: any free port; the URL is printed on stdout).
        #[arg(long, default_value = "127.0.0.1:12111")]
        listen: std::net::SocketAddr,
        /// Latency added to every API answer, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Where to POST signed events, e.g. http://127.0.0.1:7000/v1/payments/webhooks/gateway.
        #[arg(long, requires = "webhook_secret")]
        webhook_url: Option<reqwest::Url>,
        /// The secret events are signed with.
        #[arg(long, requires = "webhook_url")]
        webhook_secret: Option<String>,
        /// The API key callers present as `Authorization: Bearer`.
        #[arg(long, default_value = crate::sandbox::DEFAULT_API_KEY)]
        api_key: String,
    },
}

#[derive(Subcommand, Debug)]
enum DevCommand {
    /// Create certificates and configs, start N local nodes, stay in the foreground.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Directory for certificates, configs, data and logs.
        #[arg(long, default_value = dev::DEFAULT_DIR)]
        dir: PathBuf,
        /// First port; node N uses HTTP port P+10(N-1) and peer port one above it.
        #[arg(long, default_value_t = dev::DEFAULT_BASE_PORT)]
        base_port: u16,
        /// Override a config value on every node, e.g. --set ratelimit.enabled=false (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Do not start the sandbox payment gateway (on base port + 9; DIR/sandbox.json).
        #[arg(long)]
        no_sandbox: bool,
    },
    /// SIGKILL one node of the running dev cluster.
    Kill {
        /// Node id.
        node: u64,
        /// The dev directory.
        #[arg(long, default_value = dev::DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Start a node of the dev cluster again, with its data.
    Start {
        /// Node id.
        node: u64,
        /// The dev directory.
        #[arg(long, default_value = dev::DEFAULT_DIR)]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// Create a cluster CA and one certificate per node (existing files are kept).
    Init {
        /// Output directory.
        #[arg(long)]
        dir: PathBuf,
        /// Number of nodes (ids 1..=N).
        #[arg(long)]
        nodes: u64,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Parse and validate a config file, naming the bad field.
    Check {
        /// The file.
        file: PathBuf,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match dispatch(cli.command) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    runtime_with(0)
}

/// A runtime with `workers` threads (0: one per core).
fn runtime_with(workers: usize) -> Result<tokio::runtime::Runtime, CliError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        builder.worker_threads(workers);
    }
    builder.enable_all().build().map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))
}

fn dispatch(command: Command) -> Result<(), CliError> {
    match command {
        Command::Start { config, set } => {
            let config = Config::load_with_overrides(&config, &set)?;
            crate::node::init_tracing(&config.log);
            runtime_with(config.node.worker_threads)?
                .block_on(crate::node::run(config))
                .map_err(|e| CliError::failed(e.to_string()))
        }
        Command::Dev { command } => match command {
            DevCommand::Up { nodes, dir, base_port, set, no_sandbox } => {
                runtime()?.block_on(dev::up(dev::UpOptions { nodes, dir, base_port, set, sandbox: !no_sandbox }))
            }
            DevCommand::Kill { node, dir } => dev::kill(&dir, node),
            DevCommand::Start { node, dir } => runtime()?.block_on(dev::start(&dir, node)),
        },
        Command::Status { endpoint, watch, json } => {
            runtime()?.block_on(status::run(status::StatusOptions { endpoint, watch, json }))
        }
        Command::Certs { command: CertsCommand::Init { dir, nodes } } => {
            if nodes == 0 {
                return Err(CliError::Usage { message: "--nodes must be at least 1".into() });
            }
            let report = crate::certs::init(&dir, nodes).map_err(|e| CliError::failed(e.to_string()))?;
            let ca = if report.created_ca { "created" } else { "reused" };
            println!("CA {ca}: {}", dir.join("ca.pem").display());
            for id in &report.created_nodes {
                println!("node {id}: created {}", crate::certs::node_files(&dir, *id).0.display());
            }
            for id in &report.kept_nodes {
                println!("node {id}: kept existing {}", crate::certs::node_files(&dir, *id).0.display());
            }
            Ok(())
        }
        Command::GatewaySandbox { listen, latency_ms, webhook_url, webhook_secret, api_key } => {
            crate::node::init_tracing(&crate::config::LogSection::default());
            let webhook =
                webhook_url.zip(webhook_secret).map(|(url, secret)| crate::sandbox::WebhookTarget { url, secret });
            let faults = crate::sandbox::ledger::Faults { latency_ms, ..Default::default() };
            let options = crate::sandbox::Options { api_key, webhook, faults };
            runtime()?
                .block_on(crate::sandbox::run(listen, options, crate::node::shutdown_signal()))
                .map_err(|e| CliError::failed(format!("the sandbox gateway on {listen} failed: {e}")))
        }
        Command::Probe { url, timeout } => runtime()?.block_on(probe(&url, timeout)),
        Command::Config { command: ConfigCommand::Check { file } } => {
            let config = Config::load(&file)?;
            println!(
                "{}: ok (node {}, http {}, peer {})",
                file.display(),
                config.node.id,
                config.http.listen,
                config.peer.listen
            );
            Ok(())
        }
    }
}

/// `shoal probe URL`: one GET; a 2xx answer is success. Lets an image without curl carry a
/// Docker `HEALTHCHECK`.
async fn probe(url: &str, timeout: std::time::Duration) -> Result<(), CliError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| CliError::Usage { message: format!("{url} is not a URL: {e}") })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(CliError::Usage { message: format!("{url} is not an http(s) URL") });
    }
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| CliError::failed(format!("cannot build an HTTP client: {e}")))?;
    let response =
        client.get(parsed).send().await.map_err(|e| CliError::failed(format!("{url} did not answer: {e}")))?;
    let status = response.status();
    if status.is_success() {
        println!("{url}: {status}");
        Ok(())
    } else {
        Err(CliError::failed(format!("{url} answered {status}")))
    }
}

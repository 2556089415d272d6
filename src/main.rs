//! The `wxgate` command: `run`, `check`, `simulate`, `demo`, `cert` and `healthcheck`.
//! Configuration errors exit with status 78 (EX_CONFIG) after one line per error, naming the
//! file, the key and the reason (`healthcheck` exits 1 on every failure, as Docker expects).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use wxgate::app::Gateway;
use wxgate::config::{self, AuthMode, NonWechat, Settings};

const EX_CONFIG: u8 = 78;

/// mimalloc rather than glibc's allocator: it gives freed pages back to the system, so the
/// buffers that idle connections release when they park stop counting in RSS; glibc keeps
/// them (see `bench/RESULTS.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc reads its options from the environment when the process loads, before `main`.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// By default mimalloc returns a freed page to the system on its next call at least 10 ms
/// later, and a worker whose connections have all gone idle makes no further call: their
/// freed buffers would stay resident. `wxgate run` therefore re-executes itself once with
/// `MIMALLOC_PURGE_DELAY=0` (freed pages go back at once; the benchmarks showed no cost in
/// throughput). An operator's own setting is kept; if the re-exec fails, wxgate runs anyway.
#[cfg(target_os = "linux")]
fn reexec_with_allocator_settings() {
    use std::os::unix::process::CommandExt as _;
    if std::env::var_os(PURGE_DELAY_ENV).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    // `exec` only returns if it failed.
    let _ = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env(PURGE_DELAY_ENV, "0")
        .exec();
}

#[cfg(not(target_os = "linux"))]
fn reexec_with_allocator_settings() {}

#[derive(Parser)]
#[command(
    name = "wxgate",
    version,
    about = "Authentication gateway and reverse proxy for WeChat web apps"
)]
struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: proxy the routes of gateway.toml, running WeChat login where they ask for it.
    Run {
        /// Config file [default: $WXGATE_CONFIG, else ./gateway.toml]
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Validate the config and print the resolved routes; exits 78 on an error.
    Check {
        /// Config file [default: $WXGATE_CONFIG, else ./gateway.toml]
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Serve the WeChat simulator (open.weixin.qq.com + api.weixin.qq.com on one port) for
    /// local development and tests; see docs/simulator.md.
    Simulate {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// The simulated world (apps, users); defaults give a working demo.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Start the simulator, a demo upstream and the gateway on localhost with fresh keys:
    /// no config, no WeChat account, no network.
    Demo {
        /// Where the gateway listens [default: 127.0.0.1:8080, or the next free port when
        /// it is taken]. An address given here must be free.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Where the WeChat simulator listens [default: 127.0.0.1:9000, or the next free
        /// port when it is taken]. An address given here must be free.
        #[arg(long)]
        sim_listen: Option<std::net::SocketAddr>,
    },
    /// Write a self-signed development certificate and key (never for production).
    Cert {
        /// Host names or IPs the certificate is for.
        #[arg(long = "name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        names: Vec<String>,
        /// Where to write the certificate.
        #[arg(long, default_value = "certs/server.crt")]
        cert: PathBuf,
        /// Where to write the private key.
        #[arg(long, default_value = "certs/server.key")]
        key: PathBuf,
        /// Overwrite an existing certificate or key.
        #[arg(long)]
        force: bool,
    },
    /// Probe a running gateway's /_wxgate/healthz (for Docker's HEALTHCHECK, which then needs
    /// no curl): prints one line, exits 0 on a 2xx answer and 1 otherwise.
    Healthcheck {
        /// URL to probe [default: /_wxgate/healthz on the config's server.listen, with
        /// 0.0.0.0 and [::] read as loopback; without a config file, http://127.0.0.1:8080]
        #[arg(long)]
        url: Option<String>,
        /// Config file [default: $WXGATE_CONFIG, else ./gateway.toml]
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run { .. }) {
        reexec_with_allocator_settings();
    }
    // Flushes buffered log lines when main returns.
    let _log = init_logging(cli.log_format);
    match cli.command {
        Command::Run { config } => {
            let path = config.clone().unwrap_or_else(config::default_path);
            let settings = match load(config) {
                Ok(s) => s,
                Err(code) => return code,
            };
            // The main thread is worker 0 and runs the accept loop; `server::start` adds
            // a thread with its own single-threaded runtime for each further worker.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cannot start the tokio runtime");
            runtime.block_on(run(settings, path))
        }
        Command::Check { config } => match load(config) {
            Ok(settings) => {
                if let Err(code) = build(settings.clone()) {
                    return code;
                }
                print_check(&settings);
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Simulate { listen, config } => {
            match runtime().block_on(wxgate::simulator::run_cli(listen, config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e @ wxgate::simulator::SimError::Config(_)) => {
                    eprintln!("wxgate: {e}");
                    ExitCode::from(EX_CONFIG)
                }
                Err(e) => {
                    eprintln!("wxgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo { listen, sim_listen } => {
            match runtime().block_on(wxgate::demo::run_cli(listen, sim_listen)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("wxgate demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Cert {
            names,
            cert,
            key,
            force,
        } => write_cert(&names, &cert, &key, force),
        Command::Healthcheck { url, config } => healthcheck(url, config),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
}

/// Logs go to stderr through a non-blocking, batching writer (see `wxgate::logwriter`): the
/// access log writes a line per request, and one `write` per line cost about a tenth of the
/// gateway's CPU per request under load.
///
/// The filter is `WXGATE_LOG`, else "info" until `run` applies `[log] level`; it sits in a
/// reload layer (see `wxgate::logfilter`) so a configuration reload can change it.
fn init_logging(format: LogFormat) -> wxgate::logwriter::FlushGuard {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) =
        wxgate::logwriter::spawn(std::io::stderr()).expect("cannot start the log writer thread");
    // Access lines skip tracing's formatter (see `wxgate::accesslog::install`); on a terminal
    // they keep tracing's colours instead.
    if !ansi || matches!(format, LogFormat::Json) {
        wxgate::accesslog::install(writer.clone(), matches!(format, LogFormat::Json));
    }
    let registry = tracing_subscriber::registry().with(wxgate::logfilter::layer());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => registry.with(fmt).init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).init(),
    }
    guard
}

/// Loads and validates the config file; exits 78 after one line per error, each naming file,
/// key and reason.
fn load(path: Option<PathBuf>) -> Result<Settings, ExitCode> {
    let path = path.unwrap_or_else(config::default_path);
    Settings::load(&path).map_err(|errors| {
        for e in &errors {
            eprintln!("wxgate: config error: {e}");
        }
        ExitCode::from(EX_CONFIG)
    })
}

/// Builds the gateway, which loads key material: a bad key is a config error too.
fn build(settings: Settings) -> Result<Gateway, ExitCode> {
    Gateway::new(settings).map_err(|e| {
        eprintln!("wxgate: config error: {e}");
        ExitCode::from(EX_CONFIG)
    })
}

async fn run(settings: Settings, path: PathBuf) -> ExitCode {
    // Validated with the file; `WXGATE_LOG`, when set, wins.
    if let Err(e) = wxgate::logfilter::set_level(&settings.log.level) {
        tracing::error!("log.level: {e}");
    }
    for warning in settings.warnings() {
        tracing::warn!("{warning}");
    }
    let gateway = match build(settings) {
        Ok(g) => Arc::new(g),
        Err(code) => return code,
    };
    let stop = wxgate::server::termination_signal();
    // Before listening, so a SIGHUP sent after the "listening" line never kills the process.
    if let Err(e) = wxgate::server::reload_on_hangup(gateway.clone(), path) {
        tracing::warn!(error = %e, "cannot install the SIGHUP handler; reload needs a restart");
    }
    let server = match wxgate::server::start(gateway).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wxgate: cannot listen: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    stop.await;
    tracing::info!("shutting down");
    server.shutdown().await;
    ExitCode::SUCCESS
}

fn print_check(s: &Settings) {
    println!("{}: OK", s.source.display());
    let scheme = if s.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!("listen   {scheme}://{}", s.server.listen);
    if let Some(url) = &s.server.public_url {
        println!("public   {url}");
    }
    if let Some(w) = &s.wechat {
        println!("wechat   appid {} via {}", w.appid, w.api_base);
    }
    for warning in s.warnings() {
        println!("warning  {warning}");
    }
    println!("routes (in match order):");
    let router = wxgate::routes::Router::new(&s.routes);
    let rows: Vec<[String; 4]> = router
        .routes()
        .iter()
        .map(|r| {
            let auth = match r.auth {
                AuthMode::Required => "required",
                AuthMode::Optional => "optional",
                AuthMode::Off => "off",
            };
            let non_wechat = match r.non_wechat {
                NonWechat::Deny => "deny",
                NonWechat::Pass => "pass",
                NonWechat::Login => "login",
            };
            // `non_wechat` and `api` only shape how a visitor without a session is answered:
            // on a route without authentication they do nothing, so they are not shown.
            let policy = match r.auth {
                AuthMode::Off => format!("auth={auth}"),
                _ => format!("auth={auth} non_wechat={non_wechat} api={}", r.api),
            };
            [
                r.name.clone(),
                format!("{}{}", r.host.as_deref().unwrap_or("*"), r.path),
                r.upstream.url.to_string(),
                policy,
            ]
        })
        .collect();
    // Columns as wide as their widest cell, so that a host does not push a row out of line.
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (name_w, match_w, upstream_w) = (width(0), width(1), width(2));
    for [name, matches, upstream, policy] in &rows {
        println!("  {name:<name_w$}  {matches:<match_w$}  -> {upstream:<upstream_w$}  {policy}");
    }
}

fn write_cert(names: &[String], cert: &PathBuf, key: &PathBuf, force: bool) -> ExitCode {
    // A key may be the one a deployment uses: replacing it is never silent.
    if !force {
        let existing: Vec<String> = [cert, key]
            .into_iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            eprintln!(
                "wxgate: {} already exist{}; nothing written (use --force to overwrite)",
                existing.join(" and "),
                if existing.len() == 1 { "s" } else { "" }
            );
            return ExitCode::FAILURE;
        }
    }
    let (cert_pem, key_pem) = match wxgate::tls::self_signed(names) {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("wxgate: cannot make a certificate: {e}");
            return ExitCode::FAILURE;
        }
    };
    for path in [cert, key] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("wxgate: cannot create {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if let Err(e) =
        std::fs::write(cert, cert_pem).and_then(|_| write_private(key, key_pem.as_bytes()))
    {
        eprintln!("wxgate: cannot write: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "wrote {} and {} for {}",
        cert.display(),
        key.display(),
        names.join(", ")
    );
    ExitCode::SUCCESS
}

/// Private keys are written readable by the owner only.
fn write_private(path: &PathBuf, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(data)
}

/// How long `healthcheck` waits for an answer: Docker's own default timeout is 30 s, and a
/// gateway that takes seconds to answer its health path is not healthy.
const HEALTHCHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// `wxgate healthcheck`: one GET, one line, exit 0 on a 2xx and 1 otherwise.
fn healthcheck(url: Option<String>, config: Option<PathBuf>) -> ExitCode {
    let (url, own_listener) = match url {
        Some(url) => (url, false),
        None => match healthz_url(config) {
            Ok(url) => (url, true),
            Err(e) => {
                eprintln!("unhealthy: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let client = reqwest::Client::builder()
        .timeout(HEALTHCHECK_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        // The derived URL is the gateway's own listener on loopback, whose certificate names
        // the public host, not 127.0.0.1. The probe sends nothing and reads only a status, so
        // skipping verification there leaks nothing; a URL given with --url is verified.
        .danger_accept_invalid_certs(own_listener)
        .build();
    let probe = async {
        let resp = client?.get(&url).send().await?;
        Ok::<_, reqwest::Error>(resp.status())
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("unhealthy: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(probe) {
        Ok(status) if status.is_success() => {
            println!("healthy: {url} answered {status}");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("unhealthy: {url} answered {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            // reqwest's Display hides the cause (refused, timed out): name it.
            let e = e.without_url();
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            eprintln!("unhealthy: {url}: {why}");
            ExitCode::FAILURE
        }
    }
}

/// `/_wxgate/healthz` on the config's `server.listen` (a wildcard address is probed on
/// loopback); without `-c` and with no config file at the default path, on 127.0.0.1:8080.
fn healthz_url(config: Option<PathBuf>) -> Result<String, String> {
    let explicit = config.is_some() || std::env::var_os("WXGATE_CONFIG").is_some();
    let path = config.unwrap_or_else(config::default_path);
    if !explicit && !path.exists() {
        return Ok("http://127.0.0.1:8080/_wxgate/healthz".to_string());
    }
    let settings = Settings::load(&path).map_err(|e| format!("config error: {e}"))?;
    let mut addr = settings.server.listen;
    if addr.port() == 0 {
        return Err(format!(
            "{}: server.listen has port 0, so there is no port to probe; use --url",
            path.display()
        ));
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if settings.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    Ok(format!("{scheme}://{addr}/_wxgate/healthz"))
}

//! The `wxgate` command: `run`, `check`, `simulate`, `demo` and `cert`. Configuration errors
//! exit with status 78 (EX_CONFIG) after one line per error, naming the file, the key and the
//! reason.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use wxgate::config::{self, AuthMode, NonWechat, Settings};
use wxgate::handler::Gateway;

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
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Where the WeChat simulator listens.
        #[arg(long, default_value = "127.0.0.1:9000")]
        sim_listen: std::net::SocketAddr,
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
            runtime.block_on(run(settings))
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
            let opts = wxgate::demo::DemoOptions { listen, sim_listen };
            match runtime().block_on(wxgate::demo::run_cli(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("wxgate demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Cert { names, cert, key } => write_cert(&names, &cert, &key),
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

async fn run(settings: Settings) -> ExitCode {
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
    for r in router.routes() {
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
        println!(
            "  {:<12} {}{:<20} -> {:<32} auth={auth} non_wechat={non_wechat} api={}",
            r.name,
            r.host.as_deref().unwrap_or("*"),
            r.path,
            r.upstream.url,
            r.api
        );
    }
}

fn write_cert(names: &[String], cert: &PathBuf, key: &PathBuf) -> ExitCode {
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

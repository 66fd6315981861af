//! The `switchboard` binary: parses the settings (flags, environment,
//! `--config` file), sets up logging and the panic policy, runs the node or
//! a subcommand.

use clap::{Parser, Subcommand};

use switchboard::auth::mint::{self, TokenArgs};
use switchboard::config::{self, Config, LoadError, Settings};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit status of a node whose thread panicked: what Rust uses for a panic,
/// and non-zero, so that a supervisor (systemd `Restart=on-failure`) restarts it.
const PANIC_EXIT: i32 = 101;

#[derive(Parser, Debug)]
#[command(name = "switchboard", version, about = "WebSocket chat node (seed protocol), clustered through Redis")]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Checks the settings (flags, SWITCHBOARD_* environment, --config file)
    /// and prints the effective ones as TOML, each with where it came from.
    /// Exits 0 when a node would start with them, 2 otherwise.
    CheckConfig,
}

fn main() {
    // `switchboard token ...` mints a token (flags of its own); anything else
    // runs a node or another subcommand.
    if std::env::args().nth(1).as_deref() == Some("token") {
        let args = TokenArgs::parse_from(std::env::args().skip(1));
        if let Err(e) = mint::run(&args) {
            eprintln!("switchboard token: {e}");
            std::process::exit(2);
        }
        return;
    }
    let (cli, settings) = match config::load::<Cli>(std::env::args_os()) {
        Ok(loaded) => loaded,
        Err(LoadError::Usage(e)) => e.exit(),
        Err(e) => {
            eprintln!("switchboard: {e}");
            std::process::exit(2);
        }
    };
    match cli.command {
        Some(Command::CheckConfig) => check_config(&cli.config, &settings),
        None => run(cli.config),
    }
}

fn run(config: Config) {
    // Refused before logging starts, like a bad flag: one plain line.
    if let Err(e) = config.validate() {
        eprintln!("switchboard: invalid configuration: {e}");
        std::process::exit(2);
    }
    switchboard::logging::init(config.log_format);
    exit_on_panic();
    if let Err(e) = switchboard::server::run(config) {
        // One line, in the log's format unless logging is off.
        if log::log_enabled!(log::Level::Error) {
            log::error!("{e}");
        } else {
            eprintln!("switchboard: {e}");
        }
        std::process::exit(match e {
            switchboard::server::StartError::ReactorDied { .. } => 1,
            _ => 2,
        });
    }
}

/// A panicking thread takes the process down: a node that lost a reactor
/// would keep its users' names taken, its inbox filling and `/healthz`
/// green. Logged (as JSON where logs are), then exit for the supervisor.
fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        log::error!("thread {} panicked: {info}; exiting with {PANIC_EXIT}", thread.name().unwrap_or("?"));
        default(info);
        std::process::exit(PANIC_EXIT);
    }));
}

fn check_config(config: &Config, settings: &Settings) {
    println!("# switchboard settings: flag > SWITCHBOARD_* environment > --config file > default");
    print!("{settings}");
    match config.validate() {
        Ok(()) => println!("# valid: a node would start with these settings"),
        Err(e) => {
            eprintln!("switchboard: invalid configuration: {e}");
            std::process::exit(2);
        }
    }
}

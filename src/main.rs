use clap::Parser;

use switchboard::auth::mint::{self, TokenArgs};
use switchboard::config::Config;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    // `switchboard token ...` mints a token; anything else runs a node.
    if std::env::args().nth(1).as_deref() == Some("token") {
        let args = TokenArgs::parse_from(std::env::args().skip(1));
        if let Err(e) = mint::run(&args) {
            eprintln!("switchboard token: {e}");
            std::process::exit(2);
        }
        return;
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = Config::parse();
    if let Err(e) = switchboard::server::run(config) {
        eprintln!("switchboard: {e}");
        std::process::exit(2);
    }
}

use clap::Parser;

use switchboard::config::Config;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = Config::parse();
    if let Err(e) = switchboard::server::run(config) {
        eprintln!("switchboard: {e}");
        std::process::exit(2);
    }
}

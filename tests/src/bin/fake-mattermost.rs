//! The fake Mattermost of the tests as a process of its own, for benchmarks that run the real
//! `klaxon serve` against it (`lib/benches/load/storm.sh`). It prints its URL and bot token on
//! the first line, then once every 200 ms the number of root posts (cards) it holds:
//!
//!   url=http://127.0.0.1:PORT token=... channel=...
//!   t_ms=1200 cards=5400
//!
//! It runs until it is killed.

use klaxon_tests::fake_mattermost::{BOT_TOKEN, FakeMattermost};
use std::io::Write;
use std::time::{Duration, Instant};

const CHANNEL: &str = "st0rmch4nnelst0rmch4nnel00";

#[tokio::main]
async fn main() {
    let fake = FakeMattermost::start().await;
    fake.add_bot_to(CHANNEL);
    let started = Instant::now();
    let mut out = std::io::stdout();
    let _ = writeln!(out, "url={} token={BOT_TOKEN} channel={CHANNEL}", fake.url);
    loop {
        let _ = writeln!(out, "t_ms={} cards={}", started.elapsed().as_millis(), fake.root_count());
        let _ = out.flush();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

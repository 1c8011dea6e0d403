//! The CMC phases of the benchmark (issue #4's targets), over gRPC only, so they run the same
//! against either store:
//!
//! * `cmc`: one declared crisis filled to `--cmc-entries` information entries. The append
//!   latency of one more entry is measured (sequential `ReceiveInformation` calls) on the
//!   empty crisis and again once it is full; then the first page of its timeline (100
//!   entries), repeated.
//! * `watch`: `--watchers` concurrent `WatchTimeline` streams on that crisis, connected after
//!   its history; entries are appended at a steady pace, and each watcher's receipt of each
//!   entry is timed from the append's acknowledgement.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, stream::FuturesUnordered};
use hdrhistogram::Histogram;
use sems_proto::v1::{
    self as pb, cmc_query_service_client::CmcQueryServiceClient,
    crisis_service_client::CrisisServiceClient,
};
use tonic::{Code, transport::Channel};
use uuid::Uuid;

fn information(crisis_id: &str, n: usize) -> pb::ReceiveInformationRequest {
    pb::ReceiveInformationRequest {
        crisis_id: crisis_id.to_owned(),
        information_id: String::new(),
        source: "airport operations centre".into(),
        content: format!(
            "Update {n}: baggage sorter 3 restarted on manual mode; queue at check-in B \
             estimated 40 minutes"
        ),
        grade: Some(pb::Grade {
            reliability: "B".into(),
            credibility: 2,
            assumption: false,
        }),
        ..Default::default()
    }
}

/// Appends one entry, retrying a lost optimistic-concurrency race; returns its position.
async fn append(
    client: &mut CrisisServiceClient<Channel>,
    crisis_id: &str,
    n: usize,
) -> anyhow::Result<u64> {
    loop {
        match client.receive_information(information(crisis_id, n)).await {
            Ok(r) => return Ok(r.into_inner().position),
            Err(s) if s.code() == Code::Aborted => continue,
            Err(s) => anyhow::bail!("append: {s}"),
        }
    }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// The lock's data, even when a holder panicked (the benchmark's counters stay usable).
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// Sequential appends: p50 and p99 latency in microseconds.
async fn sequential(
    client: &mut CrisisServiceClient<Channel>,
    crisis_id: &str,
    from: usize,
    count: usize,
) -> anyhow::Result<(u64, u64)> {
    let mut h = histogram()?;
    for n in from..from + count {
        let t = Instant::now();
        append(client, crisis_id, n).await?;
        h.record(t.elapsed().as_micros() as u64)?;
    }
    Ok((h.value_at_quantile(0.5), h.value_at_quantile(0.99)))
}

/// The `cmc` phase; returns the crisis it filled.
pub async fn fill(channel: Channel, entries: usize, concurrency: usize) -> anyhow::Result<String> {
    let mut crisis = CrisisServiceClient::new(channel.clone());
    let declared = crisis
        .declare_crisis(pb::DeclareCrisisRequest {
            title: "Benchmark: ransomware on baggage OT".into(),
            incident_ids: vec![Uuid::new_v4().to_string()],
            criteria: "benchmark".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let crisis_id = declared.aggregate_id;
    const PROBE: usize = 300;
    // Warm the connection and the server's code paths, then measure on the young crisis.
    sequential(&mut crisis, &crisis_id, 0, 20).await?;
    let (first_p50, first_p99) = sequential(&mut crisis, &crisis_id, 20, PROBE).await?;

    let filled = Arc::new(std::sync::atomic::AtomicUsize::new(PROBE + 20));
    let started = Instant::now();
    let mut workers = FuturesUnordered::new();
    for _ in 0..concurrency {
        let mut client = crisis.clone();
        let filled = filled.clone();
        let crisis_id = crisis_id.clone();
        workers.push(async move {
            loop {
                let n = filled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= entries {
                    return Ok::<_, anyhow::Error>(());
                }
                append(&mut client, &crisis_id, n).await?;
            }
        });
    }
    while let Some(r) = workers.next().await {
        r?;
    }
    let fill_rate = (entries - PROBE - 20) as f64 / started.elapsed().as_secs_f64();
    let (last_p50, last_p99) = sequential(&mut crisis, &crisis_id, entries, PROBE).await?;
    println!(
        "crisis append, one caller: first {PROBE} entries p50 {} p99 {}; after {entries} entries \
         p50 {} p99 {} ({:.2}x the first p50); filled at {fill_rate:.0} entries/s with {concurrency} callers",
        ms(first_p50),
        ms(first_p99),
        ms(last_p50),
        ms(last_p99),
        last_p50 as f64 / first_p50.max(1) as f64,
    );

    // The first page, once the read model has everything.
    let mut reads = CmcQueryServiceClient::new(channel);
    let last = reads
        .get_crisis(pb::GetCrisisRequest {
            crisis_id: crisis_id.clone(),
            consistency: Some(pb::Consistency {
                min_position: declared.position,
                latest: false,
            }),
        })
        .await?;
    drop(last);
    let mut h = histogram()?;
    let mut page_len = 0;
    for _ in 0..200 {
        let t = Instant::now();
        let page = reads
            .get_timeline(pb::GetTimelineRequest {
                crisis_id: crisis_id.clone(),
                page_size: 100,
                ..Default::default()
            })
            .await?
            .into_inner();
        h.record(t.elapsed().as_micros() as u64)?;
        page_len = page.entries.len();
    }
    println!(
        "first timeline page ({page_len} entries) of a crisis with {} entries: p50 {}, p99 {}",
        entries + PROBE,
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99))
    );
    Ok(crisis_id)
}

/// The `watch` phase.
pub async fn watch(
    channel: Channel,
    crisis_id: &str,
    watchers: usize,
    appends: usize,
    every: Duration,
) -> anyhow::Result<()> {
    let mut reads = CmcQueryServiceClient::new(channel.clone());
    // Start after the history: find its last entry by paging from the end is not offered,
    // so take the position of a fresh append.
    let mut crisis = CrisisServiceClient::new(channel.clone());
    let start = append(&mut crisis, crisis_id, usize::MAX / 2).await?;
    // Wait until it is projected, so the watches start after it.
    reads
        .get_crisis(pb::GetCrisisRequest {
            crisis_id: crisis_id.to_owned(),
            consistency: Some(pb::Consistency {
                min_position: start,
                latest: false,
            }),
        })
        .await?;
    let acked: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let received: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let mut streams = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        let mut client = reads.clone();
        let stream = client
            .watch_timeline(pb::WatchTimelineRequest {
                crisis_id: crisis_id.to_owned(),
                after_position: start,
                after_seq: u32::MAX >> 1,
                kinds: vec![],
            })
            .await?
            .into_inner();
        streams.push(stream);
    }
    let mut tasks = Vec::new();
    for mut stream in streams {
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            while got < appends {
                match stream.message().await {
                    Ok(Some(e)) => {
                        locked(&received).push((e.position, Instant::now()));
                        got += 1;
                    }
                    _ => break,
                }
            }
            got
        }));
    }
    let mut tick = tokio::time::interval(every);
    for n in 0..appends {
        tick.tick().await;
        let position = append(&mut crisis, crisis_id, usize::MAX / 2 + 1 + n).await?;
        locked(&acked).insert(position, Instant::now());
    }
    let mut complete = 0;
    for t in tasks {
        if tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .ok()
            .and_then(Result::ok)
            == Some(appends)
        {
            complete += 1;
        }
    }
    let acked = locked(&acked);
    let mut h = histogram()?;
    for (position, at) in locked(&received).iter() {
        if let Some(ack) = acked.get(position) {
            // A watcher may see an entry a hair before its writer sees the acknowledgement.
            h.record(at.saturating_duration_since(*ack).as_micros().max(1) as u64)?;
        }
    }
    println!(
        "{watchers} watchers, {appends} entries one every {} ms: {complete} watchers got every entry; \
         acknowledgement → received p50 {}, p99 {}, max {}",
        every.as_millis(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    );
    Ok(())
}

//! Where the time goes: the CPU time each process on the box spent during a phase, read from
//! `/proc` (Linux), divided by the alerts (or events) the phase handled. Throughput on a
//! shared two-core machine moves by tens of percent from run to run; CPU per alert moves far
//! less, and says which process to make cheaper.

use std::collections::BTreeMap;

/// The processes a run involves, by command name.
const PROCESSES: [&str; 4] = ["semsd", "nats-server", "postgres", "sems-loadgen"];

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU ticks (user and system) spent so far by every live process of those names, by name
/// and process id.
#[derive(Debug, Clone, Default)]
pub struct Sample(BTreeMap<(&'static str, u32), u64>);

impl Sample {
    /// Reads `/proc` now; empty where there is no `/proc`.
    pub fn now() -> Self {
        let mut ticks = BTreeMap::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Self(ticks);
        };
        for entry in dir.flatten() {
            // Processes only: not `self` and `thread-self`, which would count this one again.
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let path = entry.path();
            let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid …`: the name may hold spaces, so split at the last ')'.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let Some(name) = PROCESSES.iter().find(|p| **p == &stat[open + 1..close]) else {
                continue;
            };
            // After the name: state is field 3, utime field 14, stime field 15.
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let used = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
            if let (Some(user), Some(system)) = (used(14), used(15)) {
                ticks.insert((*name, pid), user + system);
            }
        }
        Self(ticks)
    }

    /// CPU per unit between `self` (before) and `after`, as one line: each process in
    /// microseconds per unit, the total, and the rate two cores could sustain at that cost.
    /// A process that started in between counts whole; one that exited in between is left
    /// out (its share of the phase is lost, never subtracted from the others).
    pub fn per_unit(&self, after: &Sample, units: usize, unit: &str) -> Option<String> {
        if units == 0 || after.0.is_empty() {
            return None;
        }
        let micros = |ticks: u64| ticks as f64 / TICKS_PER_SECOND * 1e6 / units as f64;
        let mut total = 0.0;
        let mut parts = Vec::new();
        for name in PROCESSES {
            let spent: u64 = after
                .0
                .iter()
                .filter(|((n, _), _)| *n == name)
                .map(|(key, now)| now.saturating_sub(self.0.get(key).copied().unwrap_or(0)))
                .sum();
            // Idle bystanders (the machine's own nats-server, say) round to nothing.
            if micros(spent) >= 1.0 {
                total += micros(spent);
                parts.push(format!("{name} {:.0} µs", micros(spent)));
            }
        }
        if total == 0.0 {
            return None;
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Some(format!(
            "  CPU per {unit}: {}; total {total:.0} µs ({cores} cores at that cost: at most {:.0} {unit}s/s)",
            parts.join(", "),
            cores as f64 * 1e6 / total
        ))
    }
}

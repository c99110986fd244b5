//! Turns result files from several runs into docs/BENCHMARKS.md (medians,
//! with the spread) and an SVG chart of throughput and latency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::result::{format_value, BenchResult};
use crate::stats::median;

/// One figure over the runs.
struct Summary {
    unit: String,
    median: f64,
    min: f64,
    max: f64,
    runs: usize,
}

struct Bench {
    name: String,
    backend: String,
    command: String,
    params: serde_json::Value,
    /// In the order the benchmark reports them.
    figures: Vec<(String, Summary)>,
    checks: BTreeMap<String, (usize, usize)>,
}

fn load(dir: &Path) -> anyhow::Result<Vec<BenchResult>> {
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p)?;
        let r: BenchResult =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        if !r.quick {
            out.push(r);
        }
    }
    Ok(out)
}

fn summarise(results: &[BenchResult]) -> Vec<Bench> {
    let mut groups: BTreeMap<(String, String), Vec<&BenchResult>> = BTreeMap::new();
    for r in results {
        groups
            .entry((r.bench.clone(), r.backend.clone()))
            .or_default()
            .push(r);
    }
    let order = [
        "relay-throughput",
        "relay-latency",
        "relay-messages",
        "fanout",
        "idle-devices",
        "idle-pairs",
        "connect-storm",
        "cluster-relay",
        "cluster-idle",
        "cluster-storm",
        "session-setup",
        "ingest",
    ];
    let mut benches: Vec<Bench> = groups
        .into_iter()
        .map(|((name, backend), runs)| {
            let mut figures = Vec::new();
            for f in &runs[0].figures {
                let mut values: Vec<f64> = runs.iter().filter_map(|r| r.get(&f.name)).collect();
                let min = values.iter().cloned().fold(f64::INFINITY, f64::min);
                let max = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                figures.push((
                    f.name.clone(),
                    Summary {
                        unit: f.unit.clone(),
                        median: median(&mut values),
                        min,
                        max,
                        runs: values.len(),
                    },
                ));
            }
            let mut checks = BTreeMap::new();
            for r in &runs {
                for (c, ok) in &r.checks {
                    let e = checks.entry(c.clone()).or_insert((0, 0));
                    e.1 += 1;
                    if *ok {
                        e.0 += 1;
                    }
                }
            }
            Bench {
                command: runs[0].command.clone(),
                params: runs[0].params.clone(),
                name,
                backend,
                figures,
                checks,
            }
        })
        .collect();
    benches.sort_by_key(|b| {
        (
            order
                .iter()
                .position(|o| *o == b.name)
                .unwrap_or(order.len()),
            b.backend.clone(),
        )
    });
    benches
}

fn figure<'a>(benches: &'a [Bench], bench: &str, name: &str) -> Option<&'a Summary> {
    benches
        .iter()
        .filter(|b| b.name == bench)
        .flat_map(|b| b.figures.iter())
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
}

/// The checked-out code, as `git describe` names it (`-dirty` when tracked
/// files differ from the commit); empty outside a git checkout.
pub(crate) fn commit() -> String {
    sh("git", &["describe", "--always", "--dirty"])
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    format!(
        "- CPU: {model}, {cores} cores\n- Memory: {:.0} GiB\n- Kernel: {}\n- Compiler: {}\n- Build: release (`cargo build --release -p tessera -p tessera-bench`)\n",
        mem_kb as f64 / (1 << 20) as f64,
        sh("uname", &["-sr"]),
        sh("rustc", &["-V"]),
    )
}

fn goal_rows(benches: &[Bench]) -> String {
    let mut s = String::from("| goal | target | measured (median) | met |\n|---|---|---|---|\n");
    let mut row = |goal: &str, target: &str, value: Option<f64>, unit: &str, met: Option<bool>| {
        let measured = value
            .map(|v| format!("{} {unit}", format_value(v)))
            .unwrap_or_else(|| "not measured".into());
        let met = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let _ = writeln!(s, "| {goal} | {target} | {measured} | {met} |");
    };
    let ratio = figure(benches, "relay-throughput", "relay / raw tcp").map(|f| f.median);
    row(
        "relay throughput against raw TCP loopback",
        "≥ 0.50",
        ratio,
        "",
        ratio.map(|r| r >= 0.5),
    );
    let cpu_gib =
        figure(benches, "relay-throughput", "server CPU per GiB relayed").map(|f| f.median);
    row(
        "server CPU per GiB relayed (user + system)",
        "≤ 0.70 s",
        cpu_gib,
        "s",
        cpu_gib.map(|c| c <= 0.70),
    );
    let added = figure(benches, "relay-latency", "added p50").map(|f| f.median);
    row(
        "added p50 round-trip latency over direct",
        "≤ 20 µs",
        added,
        "µs",
        added.map(|a| a <= 20.0),
    );
    let added = figure(benches, "relay-latency", "added p99").map(|f| f.median);
    row(
        "added p99 round-trip latency over direct",
        "≤ 50 µs",
        added,
        "µs",
        added.map(|a| a <= 50.0),
    );
    let messages =
        figure(benches, "relay-messages", "messages per server CPU-second").map(|f| f.median);
    row(
        "100-byte messages per server CPU-second",
        "≥ 400,000",
        messages,
        "/s",
        messages.map(|m| m >= 400_000.0),
    );
    let idle = benches
        .iter()
        .find(|b| b.name == "idle-devices" && b.params["devices"] == 10_000);
    let per_conn = idle
        .and_then(|b| {
            b.figures
                .iter()
                .find(|(n, _)| n == "server RSS per connection")
        })
        .map(|(_, f)| f.median);
    row(
        "server memory per idle device connection (10,000 devices)",
        "≤ 16 KiB",
        per_conn,
        "KiB",
        per_conn.map(|k| k <= 16.0),
    );
    let pair = figure(
        benches,
        "idle-pairs",
        "server RSS per idle device + viewer pair",
    )
    .map(|f| f.median);
    row(
        "server memory per idle relayed device + viewer pair",
        "≤ 24 KiB",
        pair,
        "KiB",
        pair.map(|k| k <= 24.0),
    );
    let cpu = idle
        .and_then(|b| b.figures.iter().find(|(n, _)| n == "server CPU while idle"))
        .map(|(_, f)| f.median);
    row(
        "server CPU holding 10,000 idle devices with heartbeats",
        "< 10 % of one core",
        cpu,
        "%",
        cpu.map(|c| c < 10.0),
    );
    // Several nodes (issue 15): each against one node in the same run.
    let ratio = figure(benches, "cluster-relay", "cross / same node throughput").map(|f| f.median);
    row(
        "cross-node relay throughput against same-node",
        "≥ 0.50",
        ratio,
        "",
        ratio.map(|r| r >= 0.5),
    );
    let added = figure(benches, "cluster-relay", "added p99 across nodes").map(|f| f.median);
    row(
        "added p99 round-trip latency across nodes",
        "< 1,000 µs",
        added,
        "µs",
        added.map(|a| a < 1000.0),
    );
    let mem = figure(
        benches,
        "cluster-idle",
        "RSS per device, cluster / one node",
    )
    .map(|f| f.median);
    row(
        "memory per idle device on three nodes against one node",
        "reported",
        mem,
        "",
        None,
    );
    let cpu = figure(benches, "cluster-idle", "CPU per node, cluster / one node").map(|f| f.median);
    row(
        "idle CPU per node on three nodes against one node",
        "reported",
        cpu,
        "",
        None,
    );
    let back = figure(benches, "cluster-storm", "back online p99").map(|f| f.median);
    row(
        "a killed node's devices back online on the others (p99)",
        "reported",
        back,
        "ms",
        None,
    );
    // Screen goals (issue 13): against the best lossless VNC figures
    // measured on this machine (the lower end of each range quoted in
    // docs/benchmarks-analysis.md is the better of the two servers).
    let screen = |name: &str| figure(benches, "screen-workloads", name).map(|f| f.median);
    let idle = screen("idle: bytes");
    row(
        "screen: idle sends nothing after the first keyframe",
        "0 bytes",
        idle,
        "kB/s",
        idle.map(|b| b == 0.0),
    );
    for (workload, best, worst, unit_scale, unit) in [
        ("typing", 0.5, 1.5, 1.0, "kB/s"),
        ("scroll", 500.0, 1700.0, 1.0, "kB/s"),
        ("window move", 2.0, 1100.0, 1.0, "kB/s"),
    ] {
        let v = screen(&format!("{workload}: bytes")).map(|b| b * unit_scale);
        row(
            &format!("screen: {workload} bytes ≤ best lossless VNC"),
            &format!("≤ {best} {unit} (the other VNC server: {worst})"),
            v,
            unit,
            v.map(|b| b <= best),
        );
    }
    let p50 = screen("typing: key-to-pixel p50");
    row(
        "screen: key-to-pixel p50",
        "≤ 6 ms",
        p50,
        "ms",
        p50.map(|v| v <= 6.0),
    );
    let p99 = screen("typing: key-to-pixel p99");
    row(
        "screen: key-to-pixel p99",
        "≤ 12 ms",
        p99,
        "ms",
        p99.map(|v| v <= 12.0),
    );
    let key = figure(benches, "screen-encode", "keyframe desktop encode p50").map(|f| f.median);
    row(
        "screen: 1080p full-frame raw-zstd encode (one core)",
        "< 20 ms",
        key,
        "ms",
        key.map(|v| v < 20.0),
    );
    for b in benches
        .iter()
        .filter(|b| b.name == "console-pages" && b.params["devices"] == 10_000)
    {
        // The slowest page kind at the median of the runs.
        let worst = b
            .figures
            .iter()
            .filter(|(n, _)| n.ends_with(" p50"))
            .map(|(_, f)| f.median)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        row(
            &format!(
                "slowest console page at 10,000 devices and a million audit rows ({}, p50)",
                b.backend
            ),
            "< 50 ms",
            worst,
            "ms",
            worst.map(|w| w < 50.0),
        );
    }
    let checks = |console: bool| {
        benches
            .iter()
            .filter(|b| (b.name == "console-pages") == console)
            .flat_map(|b| b.checks.values())
            .fold((0, 0), |(o, a), (ok, all)| (o + ok, a + all))
    };
    let (ok, all) = checks(false);
    let _ = writeln!(
        s,
        "| no lost or reordered relay message | every check in every run | {ok} of {all} checks held | {} |",
        if ok == all && all > 0 { "yes" } else { "**no**" }
    );
    let (ok, all) = checks(true);
    if all > 0 {
        let _ = writeln!(
            s,
            "| audit page statements read through an index | every check in every run | {ok} of {all} checks held | {} |",
            if ok == all { "yes" } else { "**no**" }
        );
    }
    s
}

pub(crate) fn write(
    results: &Path,
    out: &Path,
    chart: &Path,
    analysis: &Path,
) -> anyhow::Result<()> {
    let runs = load(results)?;
    if runs.is_empty() {
        anyhow::bail!("no full (non-quick) results in {}", results.display());
    }
    let benches = summarise(&runs);
    let max_runs = benches
        .iter()
        .flat_map(|b| b.figures.iter().map(|(_, f)| f.runs))
        .max()
        .unwrap_or(0);
    // The code the runs measured; older results carry no commit, and then
    // the checkout the report is written from stands in.
    let mut commits: Vec<&str> = runs
        .iter()
        .map(|r| r.commit.as_str())
        .filter(|c| !c.is_empty())
        .collect();
    commits.sort_unstable();
    commits.dedup();
    let measured = if commits.is_empty() {
        format!("`{}`", commit())
    } else {
        commits
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    let _ = writeln!(
        md,
        "Generated by `scripts/bench.sh` (which runs each benchmark {max_runs} times and then \
         `tessera-bench report`) at commit {measured} on {}. Every figure is the **median** of the runs; \
         the range of the runs follows in brackets. Each benchmark starts its own `tessera server` \
         process (release build) on an ephemeral loopback port and drives it with real device and \
         viewer clients from the `tessera-bench` process; only the ingest benchmark also runs on \
         PostgreSQL, and the cluster-* benchmarks run several nodes on one PostgreSQL database \
         through NATS; the others use the embedded SQLite (the relay does not touch the database).\n",
        sh("date", &["-u", "+%Y-%m-%d"]),
    );
    md.push_str("## Machine\n\n");
    md.push_str(&machine());
    md.push_str("\n## Goals\n\n");
    md.push_str(&goal_rows(&benches));
    let chart_name = chart
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _ = writeln!(md, "\n![throughput and latency]({chart_name})\n");
    if let Ok(text) = std::fs::read_to_string(analysis) {
        md.push_str(text.trim_end());
        md.push_str("\n\n");
    }
    for b in &benches {
        let _ = writeln!(md, "## {} ({})\n", b.name, b.backend);
        let _ = writeln!(
            md,
            "Command: `{}`  \nParameters: `{}`\n",
            b.command, b.params
        );
        md.push_str("| figure | median | unit | range of runs |\n|---|---:|---|---|\n");
        for (name, f) in &b.figures {
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} – {} ({} runs) |",
                format_value(f.median),
                f.unit,
                format_value(f.min),
                format_value(f.max),
                f.runs
            );
        }
        for (name, (ok, all)) in &b.checks {
            let _ = writeln!(md, "| check: {name} | {ok} of {all} runs | | |");
        }
        md.push('\n');
    }
    md.push_str(NOTES);
    std::fs::write(out, md)?;
    draw(&benches, chart)?;
    println!("wrote {} and {}", out.display(), chart.display());
    Ok(())
}

const NOTES: &str = "## How to read these\n\n\
- *relay-throughput*: a device sends 64 KiB shell-output messages to one viewer through a \
  session; the same messages then cross a direct WebSocket between two tasks of one process, and \
  plain bytes cross a TCP loopback socket. All three receivers check every block's sequence number. \
  *server CPU per GiB relayed* is the server process's user + system time (from \
  `/proc/<pid>/stat`) over the relayed transfer, per GiB: unlike MB/s it does not depend on how the \
  two cores are shared with the clients.\n\
- *relay-messages*: the device sends 100-byte output messages and the viewer 100-byte input \
  messages, both at once and at full speed; every message is checked in order at its receiver. \
  Messages per server CPU-second are both directions' messages over the server's user + system time.\n\
- *relay-latency*: a viewer sends 100 bytes of input, the device echoes them as output; the same \
  over a direct WebSocket echo. Percentiles by nearest rank after a warm-up.\n\
- *fanout*: per-viewer rates are bytes over the time from the first byte sent to that viewer's \
  last byte received. The stalled viewer connects and never reads; the relay disconnects it \
  (`viewer_too_slow`, 4010) and the others keep their pace.\n\
- *idle-devices*: memory is the marginal cost: the server's resident set with all devices \
  connected minus its resident set with half of them, divided by the second half (so start-up \
  memory and the first-touch growth of pools and caches do not count as per-connection); CPU is the server's user+system time over two heartbeat intervals.\n\
- *idle-pairs*: each device has a managed shell session with one viewer joined and nothing \
  flowing; memory per pair is marginal, as for idle-devices (the second half of the pairs).\n\
- *session-setup*: from the creator's request to every member holding the session key (each \
  member's Noise handshake done and its key sent).\n\
- *cluster-relay*: two nodes on one PostgreSQL database through NATS; the device on node one, \
  its viewer on node one (same node) and then, with another device, on node two (cross node, \
  through the link). The same 64 KiB blocks and 100-byte echoes as relay-throughput and \
  relay-latency; *added* is cross node minus same node. CPU is both nodes' (the NATS server's \
  is not counted).\n\
- *cluster-idle*: one node alone holding a third of the devices, then three nodes holding all of \
  them (device i on node i mod 3); memory per device is marginal per node, as for idle-devices.\n\
- *cluster-storm*: the fleet on three nodes, each device listing its own node first and the \
  others as alternates; one node is killed with SIGKILL and each of its devices, reconnecting \
  as the agent does (next server, jittered backoff from 0.5–1 s up to 5 s), is timed from the \
  kill to its Welcome on a surviving node.\n\
- *console-pages*: 10,000 devices (one in twenty online, each with a live key), 20,000 sessions \
  and a million audit rows are written straight into the server's database, then each case's \
  pages are requested 50 times over loopback with a console cookie; a figure is the time from \
  request to the last byte of the HTML. The checks run `EXPLAIN` on the audit page's statements \
  at that size and hold when none reads the whole table.\n\
- *ingest*: four devices push batches of 500 events at once; with 50 % duplicates half of each \
  batch repeats the previous one. Audited writes are enrollment-token creations (one row and one \
  hash-chained audit row each), four writers at once.\n";

fn draw(benches: &[Bench], path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1300, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, rest) = root.split_horizontally(480);
    let (right, cpu_area) = rest.split_horizontally(520);

    let tput: Vec<(&str, f64)> = [
        ("relay", "relay"),
        ("direct ws", "direct websocket"),
        ("raw tcp", "raw tcp"),
    ]
    .iter()
    .filter_map(|(label, name)| {
        figure(benches, "relay-throughput", name).map(|f| (*label, f.median))
    })
    .collect();
    let top = tput.iter().map(|(_, v)| *v).fold(1.0, f64::max) * 1.15;
    let mut c = ChartBuilder::on(&left)
        .caption("Throughput, device → viewer (MB/s)", ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..tput.len().max(1) as f64, 0.0..top)?;
    let labels: Vec<String> = tput.iter().map(|(l, _)| l.to_string()).collect();
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(tput.len().max(1) + 1)
        .x_label_formatter(&|x: &f64| labels.get(x.floor() as usize).cloned().unwrap_or_default())
        .draw()?;
    c.draw_series(tput.iter().enumerate().map(|(i, (_, v))| {
        let x = i as f64;
        Rectangle::new([(x + 0.2, 0.0), (x + 0.8, *v)], BLUE.mix(0.7).filled())
    }))?;

    let pcts = ["p50", "p99", "p99.9"];
    let series = |who: &str| -> Vec<f64> {
        pcts.iter()
            .map(|p| {
                figure(benches, "relay-latency", &format!("{who} {p}"))
                    .map(|f| f.median)
                    .unwrap_or(0.0)
            })
            .collect()
    };
    let (relay, direct) = (series("relay"), series("direct"));
    let top = relay.iter().chain(&direct).cloned().fold(1.0, f64::max) * 1.15;
    let mut c = ChartBuilder::on(&right)
        .caption("Round trip, 100 bytes (µs)", ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..3.0, 0.0..top)?;
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(4)
        .x_label_formatter(&|x: &f64| {
            pcts.get(x.floor() as usize)
                .map(|s| s.to_string())
                .unwrap_or_default()
        })
        .draw()?;
    c.draw_series(relay.iter().enumerate().map(|(i, v)| {
        let x = i as f64;
        Rectangle::new([(x + 0.1, 0.0), (x + 0.48, *v)], RED.mix(0.7).filled())
    }))?
    .label("through the relay")
    .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], RED.mix(0.7).filled()));
    c.draw_series(direct.iter().enumerate().map(|(i, v)| {
        let x = i as f64;
        Rectangle::new([(x + 0.52, 0.0), (x + 0.9, *v)], GREEN.mix(0.7).filled())
    }))?
    .label("direct websocket")
    .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], GREEN.mix(0.7).filled()));
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .draw()?;

    // What relaying costs the server, whatever the clients get of the cores.
    let cpu = figure(benches, "relay-throughput", "server CPU per GiB relayed")
        .map(|f| f.median)
        .unwrap_or(0.0);
    let mut c = ChartBuilder::on(&cpu_area)
        .caption("Server CPU per GiB relayed (s)", ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..1.0, 0.0..(cpu.max(0.7) * 1.3))?;
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(1)
        .x_label_formatter(&|_: &f64| "relay".to_owned())
        .draw()?;
    c.draw_series(std::iter::once(Rectangle::new(
        [(0.25, 0.0), (0.75, cpu)],
        BLUE.mix(0.7).filled(),
    )))?;
    c.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, 0.7), (1.0, 0.7)],
        RED.stroke_width(2),
    )))?
    .label("goal 0.70 s")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 10, y)], RED.stroke_width(2)));
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

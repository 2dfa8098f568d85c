// ligerd's dashboard: polls the daemon's snapshot and its recent history every POLL_MS and draws
// them (charts: dygraphs; tables: plain DOM). Job names and command lines come from clients, so
// every text goes in through textContent, never as HTML.
"use strict";

const POLL_MS = 2000;
const GiB = 1024 * 1024 * 1024;
const charts = {};  // element id -> Dygraph

const num = (v) => Number(v || 0);  // uint64 fields arrive as strings (protobuf JSON)

function fmtBytes(b) {
  b = num(b);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let u = 0;
  while (b >= 1024 && u < units.length - 1) { b /= 1024; u++; }
  return (u === 0 ? b.toFixed(0) : b.toFixed(1)) + " " + units[u];
}
function fmtRate(x) {
  if (x === 0) return "0";
  if (!(x > 0)) return "-";
  if (x >= 1e6) return (x / 1e6).toFixed(2) + " M";
  if (x >= 1e4) return (x / 1e3).toFixed(1) + " k";
  return x.toFixed(x >= 100 ? 0 : 1);
}
function fmtSeconds(s) {
  if (!(s > 0)) return "-";
  if (s < 1e-3) return (s * 1e6).toFixed(1) + " us";
  if (s < 1) return (s * 1e3).toFixed(2) + " ms";
  return s.toFixed(2) + " s";
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function bar(fraction) {
  const outer = el("span", null, "bar");
  const inner = el("div");
  inner.style.width = Math.max(0, Math.min(100, fraction * 100)).toFixed(1) + "%";
  outer.appendChild(inner);
  return outer;
}
function fillTable(id, rows, columns, emptyText) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = el("tr");
    const td = el("td", emptyText, "none");
    td.colSpan = columns;
    tr.appendChild(td);
    body.appendChild(tr);
    return;
  }
  for (const cells of rows) {
    const tr = el("tr");
    for (const c of cells) {
      const td = el("td");
      if (c instanceof Node) td.appendChild(c);
      else { td.textContent = c; if (typeof c === "number" || /^[\d.,\- ]+[a-zA-Z/% ]*$/.test(String(c))) td.className = "num"; }
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

// A time series chart: `series` maps a name to [[Date, value], ...] points; `window` (ms since the
// epoch, [first, last]) is the history's span, shared by every chart so their time axes line up
// (a series with points in a few seconds only would otherwise be stretched over the whole width).
let historyWindow = null;
function drawChart(id, series, ylabel, emptyText) {
  const div = document.getElementById(id);
  const legend = document.getElementById(id + "-legend");
  const names = Object.keys(series).sort();
  const times = [...new Set(names.flatMap((n) => series[n].map((p) => p[0].getTime())))].sort((a, b) => a - b);
  const rows = times.map((t) => [new Date(t), ...names.map((n) => {
    const p = series[n].find((q) => q[0].getTime() === t);
    return p ? p[1] : null;
  })]);
  div.dataset.series = String(names.length);
  div.dataset.points = String(rows.length);
  if (rows.length === 0 || names.length === 0) {
    if (charts[id]) { charts[id].destroy(); delete charts[id]; }
    div.replaceChildren(el("div", emptyText || "no data yet", "empty"));
    legend.replaceChildren();
    return;
  }
  const options = { labels: ["time", ...names], file: rows, ylabel: ylabel, legend: "always",
                    labelsDiv: legend, labelsSeparateLines: false, connectSeparatedPoints: true, drawPoints: rows.length < 3,
                    pointSize: 3, strokeWidth: 2, axes: { y: { axisLabelWidth: 50 } } };
  if (historyWindow) options.dateWindow = historyWindow;
  if (!charts[id]) {
    div.replaceChildren();
    charts[id] = new Dygraph(div, rows, options);
  } else {
    charts[id].updateOptions(options);
  }
}

// Rates between consecutive history points: (counter now - counter before) / seconds.
function rateSeries(points, pick) {
  const out = {};
  for (let i = 1; i < points.length; i++) {
    const dt = points[i].time_unix_seconds - points[i - 1].time_unix_seconds;
    if (!(dt > 0)) continue;
    const before = pick(points[i - 1]);
    for (const [name, value] of Object.entries(pick(points[i]))) {
      if (!(name in before)) continue;
      (out[name] = out[name] || []).push([new Date(points[i].time_unix_seconds * 1000), Math.max(0, (value - before[name]) / dt)]);
    }
  }
  return out;
}

function drawHistory(history, nvmlStatus) {
  const points = history.points || [];
  const at = (p) => new Date(p.time_unix_seconds * 1000);
  historyWindow = points.length >= 2 ? [at(points[0]).getTime(), at(points[points.length - 1]).getTime()] : null;
  const mem = {}, tps = {}, loss = {}, peak = {};
  for (const p of points) {
    for (const g of p.gpus || []) (mem["GPU " + g.gpu] = mem["GPU " + g.gpu] || []).push([at(p), num(g.memory_used_bytes) / GiB]);
    for (const j of p.jobs || []) {
      if (num(j.tokens_per_second) > 0) (tps[j.job] = tps[j.job] || []).push([at(p), num(j.tokens_per_second)]);
      if (j.has_loss) (loss[j.job] = loss[j.job] || []).push([at(p), num(j.loss)]);
      if (num(j.peak_allocated_bytes) > 0) (peak[j.job] = peak[j.job] || []).push([at(p), num(j.peak_allocated_bytes) / GiB]);
    }
  }
  drawChart("chart-gpu-mem", mem, "GiB", nvmlStatus ? "no per-GPU memory: " + nvmlStatus : "no data yet");
  drawChart("chart-tps", tps, "tokens/s");
  drawChart("chart-loss", loss, "loss");
  drawChart("chart-peak", peak, "GiB");
  drawChart("chart-ops", rateSeries(points, (p) => Object.fromEntries((p.ops || []).map((o) => [o.op, num(o.calls_total)]))), "ops/s");
  // GPU time per call over each interval's samples.
  const gpuTime = {};
  for (let i = 1; i < points.length; i++) {
    const before = Object.fromEntries((points[i - 1].ops || []).map((o) => [o.op, o]));
    for (const o of points[i].ops || []) {
      const b = before[o.op];
      const n = num(o.gpu_samples) - (b ? num(b.gpu_samples) : 0);
      if (n > 0) (gpuTime[o.op] = gpuTime[o.op] || []).push([at(points[i]), (num(o.gpu_seconds_sum) - (b ? num(b.gpu_seconds_sum) : 0)) / n * 1e3]);
    }
  }
  drawChart("chart-gpu-time", gpuTime, "ms");
  return rateSeries(points, (p) => Object.fromEntries((p.ops || []).map((o) => [o.op, num(o.calls_total)])));
}

function drawSnapshot(s, opRates) {
  const status = document.getElementById("status");
  status.className = "status" + (s.draining ? " bad" : "");
  status.replaceChildren(el("div", `${s.hostname} · ligerd ${s.version}${s.draining ? " · DRAINING" : ""}`),
                         el("div", `updated ${new Date(s.time_unix_seconds * 1000).toLocaleTimeString()}`, "small"),
                         el("div", s.nvml_status ? `GPU memory: ${s.nvml_status}` : "GPU memory: NVML", "small"));

  const jobs = s.jobs || [];
  const gpus = s.gpus || [];
  const lastRate = (name) => { const r = opRates[name]; return r && r.length ? r[r.length - 1][1] : 0; };
  const opNames = [...new Set((s.ops || []).map((o) => o.op))];
  // The headline tiles count running jobs only (a job with a live process); an exited job keeps
  // its last figures in the table below.
  const live = new Set((s.processes || []).map((p) => p.job));
  const running = jobs.filter((j) => live.has(j.job));
  document.getElementById("tile-tps").textContent = fmtRate(running.reduce((a, j) => a + num(j.tokens_per_second), 0));
  document.getElementById("tile-ops").textContent = fmtRate(opNames.reduce((a, n) => a + lastRate(n), 0));
  const used = gpus.filter((g) => g.has_memory_used);
  document.getElementById("tile-mem").textContent = used.length
    ? `${fmtBytes(used.reduce((a, g) => a + num(g.memory_used_bytes), 0))} / ${fmtBytes(used.reduce((a, g) => a + num(g.memory_total_bytes), 0))}`
    : "no NVML";
  document.getElementById("tile-jobs").textContent = `${running.length} / ${s.active_sessions}`;
  const hits = num(s.jit_cache_hits_total), misses = num(s.jit_cache_misses_total);
  document.getElementById("tile-jit").textContent = hits + misses ? `${(100 * hits / (hits + misses)).toFixed(1)} %` : "-";
  document.getElementById("tile-errors").textContent = String((s.errors || []).reduce((a, e) => a + num(e.count), 0));

  const procs = {};
  for (const p of s.processes || []) (procs[p.job] = procs[p.job] || []).push(p);
  fillTable("table-jobs", jobs.map((j) => {
    const who = el("div");
    for (const p of procs[j.job] || []) {
      const line = el("div", `pid ${p.pid} · ${p.user || "?"} · ${p.dispatch || "?"}`);
      line.appendChild(el("div", p.command, "small"));
      who.appendChild(line);
    }
    if (!who.childNodes.length) who.textContent = "(exited)";
    return [j.job, who, fmtRate(num(j.tokens_per_second)), fmtSeconds(num(j.step_seconds)),
            j.has_loss ? num(j.loss).toFixed(4) : "-", num(j.peak_allocated_bytes) ? fmtBytes(j.peak_allocated_bytes) : "-",
            num(j.memory_saved_bytes) ? fmtBytes(j.memory_saved_bytes) : "-", String(num(j.tokens_total))];
  }), 8, "no job has reported yet");

  fillTable("table-gpus", gpus.map((g) => {
    const memory = el("div");
    if (g.has_memory_used) {
      memory.appendChild(bar(num(g.memory_used_bytes) / Math.max(1, num(g.memory_total_bytes))));
      memory.appendChild(el("span", ` ${fmtBytes(g.memory_used_bytes)} / ${fmtBytes(g.memory_total_bytes)}`));
    } else {
      memory.textContent = `? / ${fmtBytes(g.memory_total_bytes)}`;
    }
    const ps = el("div");
    for (const p of g.processes || []) ps.appendChild(el("div", `${p.job || "pid " + p.pid}: ${fmtBytes(p.used_bytes)}`));
    const mine = g.cuda_device >= 0 ? `${fmtBytes(g.ipc_mapped_bytes)} (${num(g.ipc_mappings)} mappings) / ${fmtBytes(g.scratch_bytes)}` : "not served";
    const name = el("div", g.model_name);
    name.appendChild(el("div", g.uuid, "small"));
    return [g.gpu, name, memory, ps.childNodes.length ? ps : "-", mine];
  }), 5, "no GPU seen (" + (s.nvml_status || "none") + ")");

  const per = {};
  for (const o of s.ops || []) {
    const t = per[o.op] = per[o.op] || { calls: 0, errors: 0, modes: {} };
    t.calls += num(o.calls_total); t.errors += num(o.errors_total);
    t.modes[o.dispatch] = (t.modes[o.dispatch] || 0) + num(o.calls_total);
  }
  const gpuTime = {};
  for (const g of s.gpu_time || []) {
    const t = gpuTime[g.op] = gpuTime[g.op] || { sum: 0, count: 0, bytes: 0 };
    t.sum += num(g.sum_seconds); t.count += num(g.count); t.bytes += num(g.sampled_bytes);
  }
  // Share of GPU time: mean sampled time per call x calls, over all ops.
  const est = (n) => gpuTime[n] && gpuTime[n].count ? gpuTime[n].sum / gpuTime[n].count * per[n].calls : 0;
  const totalGpu = Object.keys(per).reduce((a, n) => a + est(n), 0);
  fillTable("table-ops", Object.keys(per).sort().map((n) => {
    const t = per[n], g = gpuTime[n];
    const share = el("div");
    if (totalGpu > 0) { share.appendChild(bar(est(n) / totalGpu)); share.appendChild(el("span", ` ${(100 * est(n) / totalGpu).toFixed(1)} %`)); }
    else share.textContent = "-";
    return [n, String(t.calls), fmtRate(lastRate(n)), String(t.errors), g && g.count ? fmtSeconds(g.sum / g.count) : "-", share,
            g && g.sum > 0 ? (g.bytes / g.sum / 1e9).toFixed(0) + " GB/s" : "-",
            Object.entries(t.modes).map(([m, c]) => `${m} ${c}`).join(", ")];
  }), 8, "no kernel has run yet");

  const jit = document.getElementById("jit");
  jit.replaceChildren();
  for (const j of s.jit || []) {
    jit.appendChild(el("div", `${j.source === "daemon" ? "ligerd" : "local clients"}: ${num(j.memory_hits_total) + num(j.disk_hits_total)} hits ` +
      `(${num(j.disk_hits_total)} from disk), ${num(j.misses_total)} misses, ${num(j.compiles_total)} compiles ` +
      `(${num(j.compile_failures_total)} failed) in ${num(j.compile_seconds_total).toFixed(1)} s`));
  }
  const tuned = (s.tuning || []).map((t) => `${t.op}: ${num(t.improved_total)} improved, ${num(t.kept_default_total)} kept default, ${num(t.failed_total)} failed`);
  jit.appendChild(el("div", tuned.length ? "tuning runs: " + tuned.join("; ") : "tuning runs: none since ligerd started", "small"));
  for (const g of s.tuning_gains || []) jit.appendChild(el("div", `${g.bucket}: ${num(g.speedup).toFixed(2)}x faster than the default`, "small"));

  const errors = document.getElementById("errors");
  errors.replaceChildren();
  if (!(s.errors || []).length) errors.appendChild(el("div", "none", "small"));
  for (const e of s.errors || []) errors.appendChild(el("div", `${e.reason}: ${num(e.count)}`));
  errors.appendChild(el("div", `reports from local clients: ${num(s.reports_accepted_total)} accepted, ${num(s.reports_rejected_total)} refused`, "small"));
}

async function refresh() {
  try {
    const [snapshot, history] = await Promise.all([
      fetch("/api/v1/snapshot", { cache: "no-store" }).then((r) => r.json()),
      fetch("/api/v1/history", { cache: "no-store" }).then((r) => r.json()),
    ]);
    const opRates = drawHistory(history, snapshot.nvml_status);
    drawSnapshot(snapshot, opRates);
    document.body.dataset.updated = String(Date.now());
  } catch (e) {
    const status = document.getElementById("status");
    status.className = "status bad";
    status.textContent = "ligerd is not answering: " + e;
  }
}

refresh();
setInterval(refresh, POLL_MS);

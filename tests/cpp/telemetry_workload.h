// A simulated node for the telemetry tests: two GPUs as NVML sees them (the one ligerd serves is
// NVML's 1 and CUDA's 0, so the UUID join is exercised), an open remote session, ops from a remote
// runner and from a local client's reports, sampled GPU times, errors, tuning runs, a job's
// training numbers and JIT statistics. telemetry_test.cc checks the numbers; the Python suite
// parses telemetry_exposition_main's output of the same workload with prometheus_client.
#pragma once

#include <unistd.h>

#include <memory>

#include "server/telemetry/node_telemetry.h"

namespace ligerd::testing {

inline constexpr uint64_t kGiB = uint64_t{1} << 30;

inline telemetry::NvmlSampler FakeNvml() {
  return []() -> absl::StatusOr<std::vector<telemetry::NvmlGpuSample>> {
    telemetry::NvmlGpuSample a;
    a.index = 0;
    a.uuid = "GPU-aaaaaaaa-0000-0000-0000-000000000000";
    a.name = "NVIDIA H100 80GB HBM3";
    a.total_bytes = 80 * kGiB;
    a.used_bytes = 1 * kGiB;
    a.peak_bandwidth_bytes_per_second = 3352000000000ULL;
    telemetry::NvmlGpuSample b = a;
    b.index = 1;
    b.uuid = "GPU-bbbbbbbb-0000-0000-0000-000000000000";
    b.used_bytes = 30 * kGiB;
    b.processes = {{getpid(), 20 * kGiB}, {999999, 2 * kGiB}};
    return std::vector<telemetry::NvmlGpuSample>{a, b};
  };
}

inline GpuInventory FakeInventory() {
  GpuInventory inventory;
  GpuDescription gpu;
  gpu.index = 0;
  gpu.name = "NVIDIA H100 80GB HBM3";
  gpu.uuid = "GPU-bbbbbbbb-0000-0000-0000-000000000000";
  gpu.total_memory_bytes = 80 * kGiB;
  inventory.gpus.push_back(gpu);
  return inventory;
}

inline std::vector<ligerd::v1::SessionStats> FakeSessions() {
  ligerd::v1::SessionStats s;
  s.set_session_id(7);
  s.set_pid(static_cast<uint32_t>(getpid()));
  s.set_job("train-llama");
  s.set_user("trainer");
  s.set_device(0);
  s.set_dispatch("remote");
  s.set_ring_pending_records(3);
  s.set_ring_capacity_records(1024);
  s.set_ipc_mapped_bytes(2 * kGiB);
  s.set_ipc_mappings(5);
  s.set_scratch_bytes(64 << 20);
  return {s};
}

inline telemetry::LiveSources FakeSources() {
  telemetry::LiveSources sources;
  sources.sessions = [] { return FakeSessions(); };
  sources.daemon_jit = []() -> std::optional<kernels::JitCacheStats> {
    kernels::JitCacheStats s;
    s.memory_hits = 40;
    s.disk_hits = 6;
    s.misses = 4;
    s.compiles = 3;
    s.compile_failures = 1;
    s.compile_seconds = 2.5;
    return s;
  };
  sources.draining = [] { return false; };
  sources.inventory = FakeInventory();
  sources.nvml = FakeNvml();
  sources.hostname = "node-1";
  sources.version = "0.1.0";
  return sources;
}

// What the runners, the RPCs and the tuner would have recorded.
inline void SimulateWorkload(telemetry::Store& store) {
  using telemetry::OpKey;
  using telemetry::OpTotals;
  store.AddOps(OpKey{"rms_norm_fwd", "forward", "bfloat16", "remote", "train-llama"}, OpTotals{1000, 2, 1000 * 3 * kGiB / 1024});
  store.AddOps(OpKey{"rms_norm_bwd", "backward", "bfloat16", "remote", "train-llama"}, OpTotals{1000, 0, 5000000});
  store.AddOps(OpKey{"swiglu_fwd", "forward", "bfloat16", "local", "eval-job"}, OpTotals{64, 0, 640000});
  store.ObserveGpuTime("rms_norm_fwd", "remote", 30e-6, 1 << 20);
  store.ObserveGpuTime("rms_norm_fwd", "remote", 150e-6, 1 << 20);
  store.ObserveGpuTime("swiglu_fwd", "local", 2e-3, 4 << 20);
  store.AddError("remote_op_invalid_argument", 2);
  store.AddError("open_session_resource_exhausted");
  store.AddTuningRun("rms_norm_fwd", "rms_norm_fwd bf16 16384x4096", true, true, 1.25);
  store.AddTuningRun("swiglu_fwd", "swiglu_fwd bf16 16384x14336", true, false, 1.0);
  store.AddTuningRun("swiglu_fwd", "", false, false, 0);
  telemetry::JobStats job;
  job.tokens = 65536;
  job.steps = 8;
  job.tokens_per_second = 12000.5;
  job.step_seconds = 0.68;
  job.loss = 2.75;
  job.has_loss = true;
  job.peak_allocated_bytes = 30 * kGiB;
  job.memory_saved_bytes = 4 * kGiB;
  store.ReportJob("train-llama", job, true);
  store.AddClientJit(telemetry::JitDelta{10, 2, 1, 1, 0, 0.75});
  telemetry::JobProcess p;
  p.pid = getpid();
  p.job = "train-llama";
  p.user = "trainer";
  p.command = "python3 train.py --model llama";
  p.dispatch = "local";
  store.NoteProcess(p);
  store.AddReport(true);
  store.AddReport(false);
}

}  // namespace ligerd::testing

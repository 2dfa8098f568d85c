// Telemetry: the store and the snapshot over a simulated workload, the Prometheus text, the
// --metrics_address parser, the remote runner's op tally, the HTTP server, and the Telemetry and
// Admin RPCs of an in-process daemon.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "client/control_client.h"
#include "ligerd/v1/admin.grpc.pb.h"
#include "ligerd/v1/sessions.grpc.pb.h"
#include "ligerd/v1/telemetry.grpc.pb.h"
#include "server/build_info.h"
#include "server/daemon.h"
#include "server/telemetry/exposition.h"
#include "server/telemetry/op_tally.h"
#include "server/telemetry_service.h"
#include "tests/cpp/fake_ipc.h"
#include "tests/cpp/telemetry_workload.h"
#include "tests/cpp/test_util.h"

namespace ligerd {
namespace {

namespace v1 = ::ligerd::v1;
using testing::kGiB;

bool Contains(const std::string& text, const std::string& line) { return text.find(line) != std::string::npos; }

// ---- The snapshot and its Prometheus text -----------------------------------------------------

class SimulatedNode : public ::testing::Test {
 protected:
  void SetUp() override {
    node_ = std::make_unique<telemetry::NodeTelemetry>(testing::FakeSources());
    testing::SimulateWorkload(node_->store());
    snapshot_ = node_->Snapshot();
    text_ = telemetry::PrometheusText(snapshot_, {"0.1.0", "abcdef", "13.0"});
  }
  std::unique_ptr<telemetry::NodeTelemetry> node_;
  v1::SnapshotResponse snapshot_;
  std::string text_;
};

TEST_F(SimulatedNode, OpsByOpDirectionDtypeDispatchAndJob) {
  EXPECT_TRUE(Contains(text_, "ligerd_ops_total{op=\"rms_norm_fwd\",direction=\"forward\",dtype=\"bfloat16\","
                              "dispatch=\"remote\",job=\"train-llama\"} 1000\n"))
      << text_;
  EXPECT_TRUE(Contains(text_, "ligerd_ops_total{op=\"swiglu_fwd\",direction=\"forward\",dtype=\"bfloat16\","
                              "dispatch=\"local\",job=\"eval-job\"} 64\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_op_errors_total{op=\"rms_norm_fwd\",direction=\"forward\",dtype=\"bfloat16\","
                              "dispatch=\"remote\",job=\"train-llama\"} 2\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_op_bytes_total{op=\"rms_norm_bwd\",direction=\"backward\",dtype=\"bfloat16\","
                              "dispatch=\"remote\",job=\"train-llama\"} 5000000\n"));
}

TEST_F(SimulatedNode, GpuTimeHistogramBucketsAreCumulative) {
  // 30 us and 150 us: the 5e-05 bucket holds one, the 0.0002 bucket both.
  EXPECT_TRUE(Contains(text_, "ligerd_op_gpu_seconds_bucket{op=\"rms_norm_fwd\",dispatch=\"remote\",le=\"2e-05\"} 0\n"))
      << text_;
  EXPECT_TRUE(Contains(text_, "ligerd_op_gpu_seconds_bucket{op=\"rms_norm_fwd\",dispatch=\"remote\",le=\"5e-05\"} 1\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_op_gpu_seconds_bucket{op=\"rms_norm_fwd\",dispatch=\"remote\",le=\"0.0002\"} 2\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_op_gpu_seconds_bucket{op=\"rms_norm_fwd\",dispatch=\"remote\",le=\"+Inf\"} 2\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_op_gpu_seconds_count{op=\"rms_norm_fwd\",dispatch=\"remote\"} 2\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_op_sampled_bytes_total{op=\"rms_norm_fwd\",dispatch=\"remote\"} 2097152\n"));
  ASSERT_EQ(snapshot_.gpu_time_size(), 2);
  EXPECT_NEAR(snapshot_.gpu_time(0).sum_seconds(), 180e-6, 1e-12);
}

TEST_F(SimulatedNode, GpuSeriesCarryDcgmLabelsJoinedByUuid) {
  const std::string b = "gpu=\"1\",UUID=\"GPU-bbbbbbbb-0000-0000-0000-000000000000\",modelName=\"NVIDIA H100 80GB HBM3\","
                        "Hostname=\"node-1\"";
  EXPECT_TRUE(Contains(text_, "ligerd_gpu_memory_used_bytes{" + b + "} " + std::to_string(30 * kGiB) + "\n")) << text_;
  EXPECT_TRUE(Contains(text_, "ligerd_gpu_memory_total_bytes{" + b + "} " + std::to_string(80 * kGiB) + "\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_gpu_process_memory_bytes{" + b + ",pid=\"" + std::to_string(getpid()) +
                                  "\",job=\"train-llama\"} " + std::to_string(20 * kGiB) + "\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_gpu_process_memory_bytes{" + b + ",pid=\"999999\",job=\"\"} "));
  // CUDA device 0 is NVML's GPU 1 (same UUID): the session's mappings and scratch are there.
  EXPECT_TRUE(Contains(text_, "ligerd_ipc_mapped_bytes{" + b + "} " + std::to_string(2 * kGiB) + "\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_ipc_mappings{" + b + "} 5\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_scratch_bytes{" + b + "} 67108864\n"));
  EXPECT_FALSE(Contains(text_, "ligerd_ipc_mapped_bytes{gpu=\"0\""));  // not served by this ligerd
  EXPECT_TRUE(Contains(text_, "ligerd_gpu_memory_bandwidth_bytes_per_second{gpu=\"0\""));
  EXPECT_TRUE(Contains(text_, "ligerd_nvml_available 1\n"));
}

TEST_F(SimulatedNode, SessionsJobsAndRings) {
  EXPECT_TRUE(Contains(text_, "ligerd_sessions{dispatch=\"remote\"} 1\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_sessions{dispatch=\"local\"} 0\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_ring_pending_records{job=\"train-llama\",session=\"7\"} 3\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_ring_capacity_records{job=\"train-llama\",session=\"7\"} 1024\n"));
  // The reporting process and the session's are the same pid: one info series, remote wins.
  EXPECT_TRUE(Contains(text_, "ligerd_job_process_info{job=\"train-llama\",pid=\"" + std::to_string(getpid()) +
                                  "\",user=\"trainer\",command=\"python3 train.py --model llama\",dispatch=\"remote\","
                                  "Hostname=\"node-1\"} 1\n"))
      << text_;
  EXPECT_TRUE(Contains(text_, "ligerd_job_tokens_total{job=\"train-llama\"} 65536\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_job_steps_total{job=\"train-llama\"} 8\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_job_tokens_per_second{job=\"train-llama\"} 12000.5\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_job_step_seconds{job=\"train-llama\"} 0.68\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_job_loss{job=\"train-llama\"} 2.75\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_job_peak_allocated_bytes{job=\"train-llama\"} " + std::to_string(30 * kGiB)));
  EXPECT_TRUE(Contains(text_, "ligerd_job_memory_saved_bytes{job=\"train-llama\"} " + std::to_string(4 * kGiB)));
}

TEST_F(SimulatedNode, JitTuningErrorsReports) {
  EXPECT_TRUE(Contains(text_, "ligerd_jit_cache_lookups_total{result=\"memory_hit\",source=\"daemon\"} 40\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_jit_cache_lookups_total{result=\"miss\",source=\"clients\"} 1\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_jit_compiles_total{source=\"daemon\"} 3\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_jit_compile_failures_total{source=\"daemon\"} 1\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_jit_compile_seconds_total{source=\"clients\"} 0.75\n"));
  EXPECT_EQ(snapshot_.jit_cache_hits_total(), 40u + 6 + 10 + 2);
  EXPECT_EQ(snapshot_.jit_compiles_total(), 4u);
  EXPECT_TRUE(Contains(text_, "ligerd_tuning_runs_total{op=\"rms_norm_fwd\",result=\"improved\"} 1\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_tuning_runs_total{op=\"swiglu_fwd\",result=\"kept_default\"} 1\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_tuning_runs_total{op=\"swiglu_fwd\",result=\"failed\"} 1\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_tuning_speedup_ratio{op=\"rms_norm_fwd\",bucket=\"rms_norm_fwd bf16 16384x4096\"} 1.25\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_errors_total{reason=\"remote_op_invalid_argument\"} 2\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_telemetry_reports_total{result=\"rejected\"} 1\n"));
  EXPECT_TRUE(Contains(text_, "ligerd_build_info{version=\"0.1.0\",git_sha=\"abcdef\",cuda=\"13.0\",Hostname=\"node-1\"} 1\n"));
}

TEST(NodeTelemetry, WithoutNvmlSaysWhyAndStillListsServedGpus) {
  telemetry::LiveSources sources = testing::FakeSources();
  sources.nvml = []() -> absl::StatusOr<std::vector<telemetry::NvmlGpuSample>> {
    return absl::UnavailableError("NVML not loaded: no driver");
  };
  telemetry::NodeTelemetry node(std::move(sources));
  const v1::SnapshotResponse s = node.Snapshot();
  EXPECT_EQ(s.nvml_status(), "NVML not loaded: no driver");
  ASSERT_EQ(s.gpus_size(), 1);
  EXPECT_EQ(s.gpus(0).gpu(), "0");  // the CUDA ordinal stands in
  EXPECT_FALSE(s.gpus(0).has_memory_used());
  const std::string text = telemetry::PrometheusText(s, {});
  EXPECT_TRUE(Contains(text, "ligerd_nvml_available 0\n"));
  EXPECT_FALSE(Contains(text, "ligerd_gpu_memory_used_bytes{"));
  EXPECT_TRUE(Contains(text, "ligerd_gpu_memory_total_bytes{gpu=\"0\""));
}

TEST(NodeTelemetry, ExitedProcessesAreForgotten) {
  telemetry::NodeTelemetry node(telemetry::LiveSources{});
  telemetry::JobProcess gone;
  gone.pid = 0x3ffffff0;  // beyond pid_max: never alive
  gone.job = "old";
  node.store().NoteProcess(gone);
  EXPECT_EQ(node.Snapshot().processes_size(), 0);
  EXPECT_EQ(node.Snapshot().jobs_size(), 1);  // the job's numbers stay (counters never go back)
}

// ---- Pieces ---------------------------------------------------------------------------------------

TEST(MetricsAddress, Parses) {
  auto a = telemetry::ParseMetricsAddress("127.0.0.1:9464");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 9464);
  a = telemetry::ParseMetricsAddress("localhost:0");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  a = telemetry::ParseMetricsAddress("[::1]:80");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->ipv6);
  for (const char* bad : {"nonsense", "9464", ":9464", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1",
                          "example.com:9464", "::1:9464", "[::1]9464", "1.2.3:80", "127.0.0.1:80x"}) {
    auto r = telemetry::ParseMetricsAddress(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    if (!r.ok()) EXPECT_NE(r.status().message().find("--metrics_address"), std::string::npos);
  }
}

TEST(OpTally, BatchesAndNamesDirectionAndDtype) {
  EXPECT_EQ(telemetry::DirectionOf("rms_norm_fwd"), "forward");
  EXPECT_EQ(telemetry::DirectionOf("cross_entropy_bwd"), "backward");
  EXPECT_EQ(telemetry::DirectionOf("gemm"), "other");
  int storage = 0;
  kernels::TensorView x{&storage, kernels::DType::kBFloat16, 2, {3, 5}, {5, 1}, 0};
  kernels::TensorView absent{};
  kernels::TensorView y{&storage, kernels::DType::kFloat32, 1, {3}, {1}, 0};
  EXPECT_EQ(telemetry::CallBytes({x, absent, y}), 3u * 5 * 2 + 3 * 4);
  EXPECT_STREQ(telemetry::CallDType({absent, y}), "float32");
  EXPECT_STREQ(telemetry::CallDType({absent}), "none");

  telemetry::Store store;
  const std::vector<std::string> names = {"rms_norm_fwd", "rms_norm_bwd"};
  {
    telemetry::OpTally tally(&store, "job", "remote", &names);
    for (uint64_t i = 0; i < telemetry::OpTally::kFlushOps - 1; ++i) {
      tally.Count(0, "bfloat16", 10, false);
      tally.MaybeFlush();
    }
    tally.Count(1, "float32", 7, true);
    tally.Count(5, "float32", 7, true);  // an op id past the catalogue: ignored
    EXPECT_TRUE(store.Read().ops.empty() || store.Read().ops.size() == 1);  // the interval may have passed
    tally.MaybeFlush();                                                      // the 256th op: flushed
    EXPECT_EQ(store.Read().ops.size(), 2u);
    tally.Count(0, "bfloat16", 10, false);
  }  // the destructor flushes the rest
  const auto ops = store.Read().ops;
  const auto fwd = ops.at({"rms_norm_fwd", "forward", "bfloat16", "remote", "job"});
  EXPECT_EQ(fwd.calls, telemetry::OpTally::kFlushOps);
  EXPECT_EQ(fwd.bytes, 10 * telemetry::OpTally::kFlushOps);
  const auto bwd = ops.at({"rms_norm_bwd", "backward", "float32", "remote", "job"});
  EXPECT_EQ(bwd.calls, 1u);
  EXPECT_EQ(bwd.errors, 1u);
}

// ---- HTTP ----------------------------------------------------------------------------------------

// GET `path` from 127.0.0.1:`port` (HTTP/1.0, so the server closes when done); the whole response.
std::string HttpGet(int port, const std::string& path, const std::string& method = "GET") {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = method + " " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
    if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buf[65536];
      ssize_t n;
      while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  return out;
}

TEST(HttpServer, ServesMetricsJsonDashboardAndRefusesTheRest) {
  telemetry::HttpHandlers handlers;
  handlers.metrics_text = [] { return std::string("ligerd_up 1\n"); };
  handlers.snapshot_json = [] { return std::string("{\"hostname\":\"x\"}"); };
  handlers.history_json = [] { return std::string("{\"points\":[]}"); };
  auto address = telemetry::ParseMetricsAddress("127.0.0.1:0");
  ASSERT_TRUE(address.ok());
  auto server = telemetry::HttpServer::Start(*address, handlers);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  ASSERT_GT(port, 0);
  EXPECT_EQ((*server)->url(), "http://127.0.0.1:" + std::to_string(port));

  std::string r = HttpGet(port, "/metrics");
  EXPECT_TRUE(Contains(r, "200 OK")) << r;
  EXPECT_TRUE(Contains(r, "text/plain; version=0.0.4"));
  EXPECT_TRUE(Contains(r, "\r\n\r\nligerd_up 1\n"));
  EXPECT_TRUE(Contains(HttpGet(port, "/api/v1/snapshot"), "{\"hostname\":\"x\"}"));
  EXPECT_TRUE(Contains(HttpGet(port, "/api/v1/history"), "{\"points\":[]}"));
  r = HttpGet(port, "/");
  EXPECT_TRUE(Contains(r, "200 OK"));
  EXPECT_TRUE(Contains(r, "text/html"));
  EXPECT_TRUE(Contains(r, "ligerd"));
  r = HttpGet(port, "/dygraph.min.js");
  EXPECT_TRUE(Contains(r, "text/javascript"));
  EXPECT_TRUE(Contains(r, "Dygraph"));  // the vendored library itself
  EXPECT_TRUE(Contains(HttpGet(port, "/nothing-here"), "404"));
  EXPECT_TRUE(Contains(HttpGet(port, "/../etc/passwd"), "404"));
  EXPECT_TRUE(Contains(HttpGet(port, "/metrics", "POST"), "405"));

  // The same port again: taken, and the error says where and why.
  telemetry::MetricsAddress same = *address;
  same.port = port;
  auto second = telemetry::HttpServer::Start(same, handlers);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(std::string(second.status().message()), std::to_string(port))) << second.status();
}

// ---- The RPCs of an in-process daemon -----------------------------------------------------------

class TelemetryDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.socket_path = tmp_.Join("run/ligerd.sock");
    config_.cache_dir = tmp_.Join("cache");
    config_.metrics_address = "127.0.0.1:0";
    facts_.socket_path = config_.socket_path;
    facts_.cache_dir = config_.cache_dir;
    auto daemon = Daemon::Start(config_, facts_, &opener_, SessionLimits{}, testing::FakeNvml());
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon);
    client_ = std::make_unique<ControlClient>(config_.socket_path);
    telemetry_ = v1::Telemetry::NewStub(client_->channel());
    admin_ = v1::Admin::NewStub(client_->channel());
  }
  std::unique_ptr<grpc::ClientContext> Context() {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return c;
  }
  v1::SnapshotResponse Snapshot() {
    v1::SnapshotResponse out;
    EXPECT_TRUE(telemetry_->Snapshot(Context().get(), {}, &out).ok());
    return out;
  }
  static v1::ReportRequest LocalReport() {
    v1::ReportRequest r;
    r.set_pid(static_cast<uint32_t>(getpid()));
    r.set_job("my-job");
    v1::OpStats* op = r.add_ops();
    op->set_op("rms_norm_fwd");
    op->set_dtype("bfloat16");
    op->set_calls_total(100);
    op->set_errors_total(1);
    op->set_bytes_moved_total(4096);
    op->add_gpu_seconds_samples(10e-6);
    op->add_gpu_seconds_samples(12e-6);
    op->set_sampled_bytes(80);
    r.mutable_job_stats()->set_tokens_total(2048);
    r.mutable_job_stats()->set_steps_total(1);
    r.mutable_job_stats()->set_loss(3.5);
    r.mutable_job_stats()->set_has_loss(true);
    r.mutable_job_stats()->set_tokens_per_second(1000);
    r.set_has_tokens_per_second(true);
    r.mutable_jit()->set_compiles_total(2);
    r.mutable_jit()->set_compile_seconds_total(1.5);
    return r;
  }

  testing::FakeIpcOpener opener_;
  testing::TempDir tmp_;
  DaemonConfig config_;
  DaemonFacts facts_;
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<ControlClient> client_;
  std::unique_ptr<v1::Telemetry::Stub> telemetry_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

TEST_F(TelemetryDaemonTest, ReportShowsInSnapshotAndMetricsAsLocalOps) {
  v1::ReportResponse none;
  ASSERT_TRUE(telemetry_->Report(Context().get(), LocalReport(), &none).ok());
  ASSERT_TRUE(telemetry_->Report(Context().get(), LocalReport(), &none).ok());  // deltas add up
  const v1::SnapshotResponse s = Snapshot();
  ASSERT_EQ(s.ops_size(), 1);
  EXPECT_EQ(s.ops(0).op(), "rms_norm_fwd");
  EXPECT_EQ(s.ops(0).direction(), "forward");
  EXPECT_EQ(s.ops(0).dispatch(), "local");
  EXPECT_EQ(s.ops(0).job(), "my-job");
  EXPECT_EQ(s.ops(0).calls_total(), 200u);
  EXPECT_EQ(s.ops(0).errors_total(), 2u);
  EXPECT_EQ(s.ops(0).bytes_moved_total(), 8192u);
  ASSERT_EQ(s.gpu_time_size(), 1);
  EXPECT_EQ(s.gpu_time(0).count(), 4u);
  EXPECT_EQ(s.gpu_time(0).sampled_bytes(), 160u);
  ASSERT_EQ(s.jobs_size(), 1);
  EXPECT_EQ(s.jobs(0).tokens_total(), 4096u);
  EXPECT_EQ(s.jobs(0).loss(), 3.5);
  ASSERT_EQ(s.processes_size(), 1);
  EXPECT_EQ(s.processes(0).pid(), static_cast<uint32_t>(getpid()));
  EXPECT_EQ(s.processes(0).dispatch(), "local");
  EXPECT_FALSE(s.processes(0).command().empty());  // this test binary's command line
  EXPECT_EQ(s.reports_accepted_total(), 2u);
  ASSERT_EQ(s.gpus_size(), 2);  // the fake NVML's

  ASSERT_FALSE(daemon_->metrics_url().empty());
  const int port = std::stoi(daemon_->metrics_url().substr(daemon_->metrics_url().rfind(':') + 1));
  const std::string text = HttpGet(port, "/metrics");
  EXPECT_TRUE(Contains(text, "ligerd_ops_total{op=\"rms_norm_fwd\",direction=\"forward\",dtype=\"bfloat16\","
                             "dispatch=\"local\",job=\"my-job\"} 200\n"))
      << text;
  EXPECT_TRUE(Contains(text, "ligerd_jit_compiles_total{source=\"clients\"} 4\n"));
  EXPECT_TRUE(Contains(HttpGet(port, "/api/v1/snapshot"), "\"job\":\"my-job\""));
  daemon_->SampleHistory();
  EXPECT_TRUE(Contains(HttpGet(port, "/api/v1/history"), "\"tokens_per_second\":1000"));
}

TEST_F(TelemetryDaemonTest, BadReportsAreRefusedAndCounted) {
  struct Case {
    const char* what;
    std::function<void(v1::ReportRequest&)> spoil;
  };
  const std::vector<Case> cases = {
      {"another pid", [](v1::ReportRequest& r) { r.set_pid(1); }},
      {"unknown op", [](v1::ReportRequest& r) { r.mutable_ops(0)->set_op("not_an_op"); }},
      {"unknown dtype", [](v1::ReportRequest& r) { r.mutable_ops(0)->set_dtype("complex128"); }},
      {"more errors than calls", [](v1::ReportRequest& r) { r.mutable_ops(0)->set_errors_total(101); }},
      {"negative sample", [](v1::ReportRequest& r) { r.mutable_ops(0)->add_gpu_seconds_samples(-1); }},
      {"NaN loss", [](v1::ReportRequest& r) { r.mutable_job_stats()->set_loss(std::nan("")); }},
      {"too many ops",
       [](v1::ReportRequest& r) {
         for (int i = 0; i < kMaxReportOps; ++i) *r.add_ops() = r.ops(0);
       }},
  };
  for (const Case& c : cases) {
    v1::ReportRequest r = LocalReport();
    c.spoil(r);
    v1::ReportResponse none;
    const grpc::Status status = telemetry_->Report(Context().get(), r, &none);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.what;
    EXPECT_NE(status.error_message().find("Telemetry/Report"), std::string::npos) << status.error_message();
  }
  // A session that does not exist.
  v1::ReportRequest r = LocalReport();
  r.set_session_id(12345);
  v1::ReportResponse none;
  EXPECT_EQ(telemetry_->Report(Context().get(), r, &none).error_code(), grpc::StatusCode::NOT_FOUND);
  const v1::SnapshotResponse s = Snapshot();
  EXPECT_EQ(s.ops_size(), 0);  // nothing of a refused report is recorded
  EXPECT_EQ(s.reports_rejected_total(), cases.size() + 1);
}

TEST_F(TelemetryDaemonTest, WatchStreamsSnapshots) {
  auto context = Context();
  v1::WatchRequest request;
  request.set_interval_ms(100);
  auto reader = telemetry_->Watch(context.get(), request);
  v1::SnapshotResponse a, b;
  ASSERT_TRUE(reader->Read(&a));
  ASSERT_TRUE(reader->Read(&b));
  EXPECT_GT(b.time_unix_seconds(), a.time_unix_seconds());
  context->TryCancel();
}

TEST_F(TelemetryDaemonTest, AdminSetLogLevel) {
  const LogLevel before = GetLogLevel();
  v1::SetLogLevelRequest request;
  request.set_level("debug");
  v1::SetLogLevelResponse response;
  ASSERT_TRUE(admin_->SetLogLevel(Context().get(), request, &response).ok());
  EXPECT_EQ(response.previous_level(), LogLevelName(before));
  EXPECT_EQ(GetLogLevel(), LogLevel::kDebug);
  request.set_level("loud");
  EXPECT_EQ(admin_->SetLogLevel(Context().get(), request, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  SetLogLevel(before);
}

TEST_F(TelemetryDaemonTest, AdminClearCacheRemovesKernelsAndOptionallyTheTuningDb) {
  namespace fs = std::filesystem;
  fs::create_directories(fs::path(config_.cache_dir) / "tuning");
  for (const char* name : {"rms_norm_fwd.bf16.sm_90.0123.cubin", "softmax_fwd.f32.sm_90.4567.ptx"}) {
    std::ofstream(fs::path(config_.cache_dir) / name) << "x";
  }
  std::ofstream(fs::path(config_.cache_dir) / "keep.txt") << "x";
  std::ofstream(fs::path(config_.cache_dir) / "tuning" / "H100.tunedb") << "x";
  v1::ClearCacheRequest request;
  v1::ClearCacheResponse response;
  ASSERT_TRUE(admin_->ClearCache(Context().get(), request, &response).ok());
  EXPECT_EQ(response.entries_removed(), 2u);
  EXPECT_TRUE(fs::exists(fs::path(config_.cache_dir) / "keep.txt"));
  EXPECT_TRUE(fs::exists(fs::path(config_.cache_dir) / "tuning" / "H100.tunedb"));
  request.set_include_tuning_db(true);
  ASSERT_TRUE(admin_->ClearCache(Context().get(), request, &response).ok());
  EXPECT_EQ(response.entries_removed(), 1u);
  EXPECT_FALSE(fs::exists(fs::path(config_.cache_dir) / "tuning" / "H100.tunedb"));
}

TEST_F(TelemetryDaemonTest, AdminDrainRefusesNewSessionsAndReportsNotServing) {
  v1::DrainRequest request;
  request.set_timeout_ms(100);
  v1::DrainResponse response;
  ASSERT_TRUE(admin_->Drain(Context().get(), request, &response).ok());
  EXPECT_EQ(response.sessions_left(), 0u);
  auto health = client_->Health();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  EXPECT_TRUE(Snapshot().draining());

  auto sessions = v1::Sessions::NewStub(client_->channel());
  v1::OpenSessionRequest open;
  open.set_protocol_version(kProtocolVersion);
  open.set_client_pid(static_cast<uint32_t>(getpid()));
  v1::OpenSessionResponse opened;
  const grpc::Status status = sessions->OpenSession(Context().get(), open, &opened);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(status.error_message().find("draining"), std::string::npos) << status.error_message();
}

}  // namespace
}  // namespace ligerd

#include "server/info_service.h"

#include <cuda.h>
#include <unistd.h>

#include "absl/strings/str_split.h"
#include "proto/ligerd/ring_layout.h"
#include "server/build_info.h"
#include "server/raw_unary.h"

namespace ligerd {

InfoService::InfoService(DaemonFacts facts, std::function<uint32_t()> active_sessions)
    : facts_(std::move(facts)), active_sessions_(std::move(active_sessions)) {}

grpc::ServerUnaryReactor* InfoService::GetInfo(grpc::CallbackServerContext* context,
                                               const grpc::ByteBuffer* request,
                                               grpc::ByteBuffer* response) {
  return ServeRawUnary<ligerd::v1::GetInfoRequest, ligerd::v1::GetInfoResponse>(
      context, request, response, "ligerd.v1.Info/GetInfo",
      [this](const ligerd::v1::GetInfoRequest& req, ligerd::v1::GetInfoResponse* resp) {
        Fill(req, resp);
        return absl::OkStatus();
      });
}

void InfoService::Fill(const ligerd::v1::GetInfoRequest& request,
                       ligerd::v1::GetInfoResponse* response) const {
  auto* build = response->mutable_build();
  build->set_version(kLigerdVersion);
  build->set_git_sha(kLigerdGitSha);
  build->set_cuda_toolkit_version(CudaVersionString(CUDA_VERSION));
  build->set_nvrtc_version(NvrtcVersionString());
  for (absl::string_view arch : absl::StrSplit(kLigerdCudaArchs, ';', absl::SkipEmpty())) {
    build->add_cuda_archs(absl::StrCat("sm_", arch));
  }
  build->set_build_type(kLigerdBuildType);
  response->set_protocol_version(kProtocolVersion);
  response->set_min_protocol_version(kMinProtocolVersion);
  for (const GpuDescription& gpu : facts_.inventory.gpus) {
    auto* out = response->add_gpus();
    out->set_index(gpu.index);
    out->set_name(gpu.name);
    out->set_uuid(gpu.uuid);
    out->set_total_memory_bytes(gpu.total_memory_bytes);
    out->set_multiprocessor_count(gpu.multiprocessor_count);
    out->set_compute_capability_major(gpu.cc_major);
    out->set_compute_capability_minor(gpu.cc_minor);
    out->set_pci_bus_id(gpu.pci_bus_id);
    out->set_mps_enabled(gpu.mps_enabled);
  }
  response->set_gpu_status(facts_.inventory.status);
  if (!request.omit_catalogue()) {
    for (const OpSummary& op : facts_.ops) {
      auto* out = response->add_ops();
      out->set_name(op.name);
      out->set_description(op.description);
      out->set_variant_count(op.variant_count);
    }
  }
  response->set_active_sessions(active_sessions_());
  response->set_socket_path(facts_.socket_path);
  response->set_cache_dir(facts_.cache_dir);
  response->set_uptime_seconds(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_).count());
  response->set_pid(getpid());
}

}  // namespace ligerd

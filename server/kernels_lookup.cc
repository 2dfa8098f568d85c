// Kernels/GetModule, GetLaunchConfig and Precompile (kernels_service.h): the node's JIT cache and
// tuning DB for clients that cannot read the cache dir themselves, and ahead-of-time compilation
// on request. Every call comes from an admitted connection (PeerTable), as for every RPC.
#include <grpcpp/impl/codegen/proto_utils.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/jit/cache_entry.h"
#include "kernels/precompile.h"
#include "kernels/tuning/tuning_db.h"
#include "server/kernels_service.h"
#include "server/logging.h"
#include "server/raw_unary.h"

namespace ligerd {

namespace v1 = ::ligerd::v1;

namespace {

// "sm_90" or "compute_90": what NVRTC and the cache's file names use.
bool ValidArch(const std::string& arch) {
  absl::string_view digits;
  if (absl::StartsWith(arch, "sm_")) digits = absl::string_view(arch).substr(3);
  else if (absl::StartsWith(arch, "compute_")) digits = absl::string_view(arch).substr(8);
  else return false;
  int n = 0;
  return digits.size() >= 2 && digits.size() <= 3 && absl::SimpleAtoi(digits, &n) && n >= 50;
}

absl::StatusOr<kernels::Digest256> ParseKey(const std::string& hex) {
  kernels::Digest256 key{};
  if (hex.size() != 2 * key.size()) {
    return absl::InvalidArgumentError(absl::StrCat("variant_key must be ", 2 * key.size(), " hex digits, got ",
                                                   hex.size()));
  }
  for (size_t i = 0; i < key.size(); ++i) {
    int v = 0;
    for (char c : hex.substr(2 * i, 2)) {
      const int d = absl::ascii_isdigit(c) ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
      if (d < 0) return absl::InvalidArgumentError("variant_key must be lowercase hex");
      v = v * 16 + d;
    }
    key[i] = static_cast<uint8_t>(v);
  }
  return key;
}

absl::Status PeerOk(const PeerTable* peers, grpc::CallbackServerContext* context) {
  return peers == nullptr ? absl::OkStatus() : peers->Lookup(context->peer()).status();
}

}  // namespace

grpc::ServerUnaryReactor* KernelsService::GetModule(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return ServeRawUnary<v1::GetModuleRequest, v1::GetModuleResponse>(
      context, request, response, "Kernels/GetModule",
      [&](const v1::GetModuleRequest& req, v1::GetModuleResponse* resp) -> absl::Status {
        if (absl::Status s = PeerOk(peers_, context); !s.ok()) return s;
        const char* m = "Kernels/GetModule: ";
        if (!ValidArch(req.arch())) {
          return absl::InvalidArgumentError(absl::StrCat(m, "arch '", req.arch(), "' is not sm_XY or compute_XY"));
        }
        absl::StatusOr<kernels::Digest256> key = ParseKey(req.variant_key());
        if (!key.ok()) return absl::InvalidArgumentError(absl::StrCat(m, key.status().message()));
        // Entries are <op>.<variant>.<arch>.<first 32 hex of the key>.<cubin|ptx> (jit_cache.h).
        const std::string tail = absl::StrCat(".", req.arch(), ".", req.variant_key().substr(0, 32), ".");
        namespace fs = std::filesystem;
        std::error_code ec;
        for (const fs::directory_entry& e : fs::directory_iterator(cache_dir_, ec)) {
          const std::string name = e.path().filename().string();
          if (name.find(tail) == std::string::npos || !e.is_regular_file(ec)) continue;
          if (!absl::EndsWith(name, ".cubin") && !absl::EndsWith(name, ".ptx")) continue;
          std::ifstream in(e.path(), std::ios::binary);
          const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
          absl::StatusOr<kernels::CompiledModule> module = kernels::DecodeCacheEntry(bytes, *key);
          if (!module.ok()) {
            return absl::DataLossError(absl::StrCat(m, e.path().string(), ": ", module.status().message()));
          }
          resp->set_cubin(module->image);
          resp->set_variant_key(req.variant_key());
          return absl::OkStatus();
        }
        if (ec) return absl::InternalError(absl::StrCat(m, "cannot list ", cache_dir_, ": ", ec.message()));
        return absl::NotFoundError(absl::StrCat(m, "no module ", req.variant_key(), " for ", req.arch(), " in ",
                                                cache_dir_, " (not compiled yet: Kernels/Precompile compiles them)"));
      });
}

grpc::ServerUnaryReactor* KernelsService::GetLaunchConfig(grpc::CallbackServerContext* context,
                                                          const grpc::ByteBuffer* request,
                                                          grpc::ByteBuffer* response) {
  return ServeRawUnary<v1::GetLaunchConfigRequest, v1::GetLaunchConfigResponse>(
      context, request, response, "Kernels/GetLaunchConfig",
      [&](const v1::GetLaunchConfigRequest& req, v1::GetLaunchConfigResponse* resp) -> absl::Status {
        if (absl::Status s = PeerOk(peers_, context); !s.ok()) return s;
        const char* m = "Kernels/GetLaunchConfig: ";
        absl::StatusOr<kernels::DType> dtype = kernels::ParseTuningDType(req.dtype());
        if (!dtype.ok()) return absl::InvalidArgumentError(absl::StrCat(m, dtype.status().message()));
        if (req.shape_size() != 2 || req.shape(0) <= 0 || req.shape(1) <= 0) {
          return absl::InvalidArgumentError(absl::StrCat(m, "shape must be [rows, cols], both positive"));
        }
        bool known_op = false;
        for (const kernels::OpSpec* op : kernels::AllOps()) known_op = known_op || op->name == req.op();
        if (!known_op) return absl::InvalidArgumentError(absl::StrCat(m, "unknown op '", req.op(), "'"));
        const GpuDescription* gpu = nullptr;
        for (const GpuDescription& g : inventory_.gpus) {
          if (req.gpu_model().empty() || g.name == req.gpu_model()) {
            gpu = &g;
            break;
          }
        }
        if (gpu == nullptr) {
          return absl::NotFoundError(absl::StrCat(m, "no GPU '", req.gpu_model(), "' on this node (",
                                                  inventory_.gpus.size(), " GPUs)"));
        }
        kernels::GpuIdentity identity{gpu->name, gpu->multiprocessor_count, gpu->cc_major * 10 + gpu->cc_minor};
        absl::StatusOr<std::shared_ptr<kernels::TuningDb>> db = kernels::TuningDb::Shared(cache_dir_, identity);
        if (!db.ok()) return absl::Status(db.status().code(), absl::StrCat(m, db.status().message()));
        const kernels::TuningKey key =
            kernels::MakeTuningKey(req.op(), kernels::TuningShape{*dtype, req.shape(0), req.shape(1)});
        std::optional<kernels::TuningEntry> entry = (*db)->Lookup(key);
        if (!entry.has_value()) {
          return absl::NotFoundError(absl::StrCat(m, "no tuned config for ", kernels::KeyString(key), " on ",
                                                  gpu->name, ": the op plans its default heuristic at launch"));
        }
        resp->set_config(kernels::FormatLaunchConfig(entry->config));
        resp->set_tuned(true);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* KernelsService::Precompile(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request_bytes,
                                                     grpc::ByteBuffer* response_bytes) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  v1::PrecompileRequest request;
  grpc::ByteBuffer copy(*request_bytes);
  auto finish = [&](const absl::Status& s) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  };
  if (!grpc::SerializationTraits<v1::PrecompileRequest>::Deserialize(&copy, &request).ok()) {
    return finish(absl::InvalidArgumentError("Kernels/Precompile: the request is not a valid PrecompileRequest"));
  }
  if (absl::Status s = PeerOk(peers_, context); !s.ok()) return finish(s);
  std::vector<std::string> archs(request.archs().begin(), request.archs().end());
  if (archs.empty()) {
    for (const GpuDescription& g : inventory_.gpus) {
      const std::string arch = absl::StrCat("sm_", g.cc_major, g.cc_minor);
      if (std::find(archs.begin(), archs.end(), arch) == archs.end()) archs.push_back(arch);
    }
    if (archs.empty()) {
      return finish(absl::FailedPreconditionError(
          "Kernels/Precompile: no GPU here to take the archs from; name them (e.g. archs: [\"sm_90\"])"));
    }
  }
  if (archs.size() > 8) return finish(absl::InvalidArgumentError("Kernels/Precompile: at most 8 archs"));
  for (const std::string& arch : archs) {
    if (!ValidArch(arch)) {
      return finish(absl::InvalidArgumentError(absl::StrCat("Kernels/Precompile: arch '", arch,
                                                            "' is not sm_XY or compute_XY")));
    }
  }
  absl::MutexLock lock(&precompile_mu_);
  if (precompiling_) {
    return finish(absl::UnavailableError("Kernels/Precompile: one is running; try again when it ends"));
  }
  if (precompile_thread_.joinable()) precompile_thread_.join();  // the previous one, finished
  precompiling_ = true;
  // Minutes of NVRTC: off gRPC's callback threads; the reactor is finished from there.
  precompile_thread_ = std::thread([this, reactor, response_bytes, archs] {
    v1::PrecompileResponse response;
    absl::Status status;
    for (const std::string& arch : archs) {
      absl::StatusOr<kernels::PrecompileReport> report = kernels::PrecompileAll(cache_dir_, arch);
      if (!report.ok()) {
        status = absl::Status(report.status().code(), absl::StrCat("Kernels/Precompile: ", arch, ": ",
                                                                   report.status().message()));
        break;
      }
      response.set_compiled(response.compiled() + static_cast<uint32_t>(report->compiled));
      response.set_cached(response.cached() + static_cast<uint32_t>(report->cached));
      for (const kernels::PrecompileFailure& f : report->failures) {
        response.add_failures(absl::StrCat(arch, " ", f.op, " ", f.variant, ": ", f.message.substr(0, 2000)));
      }
      LIGERD_LOG(kInfo) << "Kernels/Precompile " << arch << ": " << report->compiled << " compiled, "
                        << report->cached << " cached, " << report->failures.size() << " failed";
    }
    bool own = false;
    if (status.ok()) {
      reactor->Finish(grpc::SerializationTraits<v1::PrecompileResponse>::Serialize(response, response_bytes, &own));
    } else {
      reactor->Finish(ToGrpcStatus(status));
    }
    absl::MutexLock lock(&precompile_mu_);
    precompiling_ = false;
  });
  return reactor;
}

KernelsService::~KernelsService() {
  std::thread t;
  {
    absl::MutexLock lock(&precompile_mu_);
    t = std::move(precompile_thread_);
  }
  if (t.joinable()) t.join();
}

}  // namespace ligerd

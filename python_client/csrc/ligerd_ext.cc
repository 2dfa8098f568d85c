// ligerd._C: the LibTorch extension behind the Python package.
//
// Local dispatch: ops run in this process on torch's tensors through the same executor library
// (kernels/executor.h) that the daemon uses, on torch's current CUDA stream, with scratch memory
// from torch's caching allocator.
// Remote dispatch: a RemoteSession (client/remote_session.h) per (process, device) writes op
// records to the daemon's ring; the daemon runs them on our tensors, mapped by CUDA IPC, ordered
// against torch's current stream by flags on the GPU. The Python side (ligerd/_backend.py,
// _dispatch.py) decides which path an op takes and owns the session handles.
//
// Errors: an absl::Status from the executor becomes the matching ligerd.LigerdError subclass; the
// code -> class table lives in Python (ligerd/_errors.py: error_from_status) so that errors coming
// from the daemon map through the same table.

#include <torch/extension.h>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda.h>
#include <cuda_runtime_api.h>

#include <array>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "python_client/csrc/remote_client.h"  // not client/remote_session.h: see there
#include "kernels/executor.h"
#include "kernels/jit/jit_cache.h"
#include "kernels/tensor_view.h"
#include "kernels/tuning/tuning_db.h"

namespace py = pybind11;
namespace lk = ligerd::kernels;

namespace {

constexpr int kMaxDevices = 64;

// Raises the Python exception for a non-OK status (with the GIL held).
[[noreturn]] void RaiseStatus(const absl::Status& status, const std::string& op) {
  py::object errors = py::module_::import("ligerd._errors");
  py::object exc = errors.attr("error_from_status")(static_cast<int>(status.code()),
                                                    std::string(status.message()), op);
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
  throw py::error_already_set();
}

// Process-wide state. Deliberately leaked: destroying executors (CUDA modules) during interpreter
// teardown, after the CUDA runtime may already be gone, would crash at exit.
struct State {
  std::mutex mu;
  std::string cache_dir;
  // The node daemon's uid when cache_dir is its cache, read by a job of another user (read-only).
  std::optional<uid_t> trusted_cache_owner;
  std::array<std::unique_ptr<lk::Executor>, kMaxDevices> executors;
};

State& state() {
  static State* s = new State;
  return *s;
}

// The executor needs a current CUDA context for the device. torch uses the primary context but
// only binds it to a thread when the runtime needs it, and c10's device guard skips
// cudaSetDevice when the device index already matches, so a fresh thread (an autograd worker, a
// DataLoader thread) can have none. cudaSetDevice (CUDA >= 12) makes the primary context current
// on this thread; it is a cheap thread-local check when it already is. Using torch's runtime
// here, not the driver API, keeps this module free of a libcuda link (the kernels library loads
// the driver itself), so it imports on machines without a GPU driver.
absl::Status EnsureContext(int device) {
  const cudaError_t e = cudaSetDevice(device);
  if (e != cudaSuccess) {
    return absl::FailedPreconditionError(absl::StrCat("cannot make CUDA device ", device,
                                                      " current: ", cudaGetErrorString(e)));
  }
  return absl::OkStatus();
}

absl::StatusOr<lk::Executor*> GetExecutor(int device) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.executors[device]) return s.executors[device].get();
  lk::ExecutorOptions options;
  options.cache_dir = s.cache_dir;
  options.trusted_cache_owner = s.trusted_cache_owner;
  options.device = device;
  auto created = lk::Executor::Create(options);
  if (!created.ok()) return created.status();
  s.executors[device] = std::move(created).value();
  return s.executors[device].get();
}

absl::StatusOr<lk::DType> ToDType(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return lk::DType::kFloat32;
    case at::kHalf: return lk::DType::kFloat16;
    case at::kBFloat16: return lk::DType::kBFloat16;
    case at::kInt: return lk::DType::kInt32;
    case at::kLong: return lk::DType::kInt64;
    default: return absl::InvalidArgumentError(absl::StrCat("unsupported dtype ", c10::toString(t)));
  }
}

// Converts the positional tensor list; all present tensors must be CUDA tensors on one device.
// Returns that device (or -1 if no tensor is present).
absl::StatusOr<int> ToViews(const std::vector<std::optional<at::Tensor>>& tensors,
                            std::vector<lk::TensorView>& views) {
  int device = -1;
  views.resize(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    lk::TensorView& v = views[i];
    if (!tensors[i].has_value() || !tensors[i]->defined()) continue;  // optional, absent
    const at::Tensor& t = *tensors[i];
    const std::string which = absl::StrCat("tensor #", i);
    if (!t.is_cuda()) {
      return absl::InvalidArgumentError(absl::StrCat(which, " is on ", t.device().str(),
                                                     "; ligerd ops take CUDA tensors"));
    }
    if (t.dim() > lk::kMaxDims) {
      return absl::InvalidArgumentError(absl::StrCat(which, " has ", t.dim(), " dimensions; at most ",
                                                     lk::kMaxDims, " are supported"));
    }
    const int d = t.get_device();
    if (device == -1) {
      device = d;
    } else if (d != device) {
      return absl::InvalidArgumentError(absl::StrCat(which, " is on cuda:", d,
                                                     " but an earlier tensor is on cuda:", device));
    }
    auto dtype = ToDType(t.scalar_type());
    if (!dtype.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(which, ": ", dtype.status().message()));
    }
    v.dtype = *dtype;
    v.ndim = static_cast<int32_t>(t.dim());
    for (int k = 0; k < v.ndim; ++k) {
      v.sizes[k] = t.size(k);
      v.strides[k] = t.stride(k);
    }
    v.device = d;
    // A present tensor with no elements still needs a non-null pointer to count as present.
    v.data = t.numel() > 0 ? t.data_ptr() : reinterpret_cast<void*>(alignof(std::max_align_t));
  }
  if (device >= kMaxDevices) {
    return absl::InvalidArgumentError(absl::StrCat("device cuda:", device, " is beyond the ",
                                                   kMaxDevices, " devices ligerd supports"));
  }
  return device;
}

void SetCacheDir(const std::string& dir, int64_t trusted_owner) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.cache_dir = dir;
  s.trusted_cache_owner = trusted_owner >= 0 ? std::optional<uid_t>(static_cast<uid_t>(trusted_owner)) : std::nullopt;
}

std::string GetCacheDir() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.cache_dir;
}

// The JIT cache counters (kernels/jit/jit_cache.h) of this process's local executors: the shared
// cache of the current cache directory, which every executor opened (JitCache::Shared: one per
// directory and process). None before the first op made an executor, so that asking does not
// create a cache directory.
py::object JitStats() {
  State& s = state();
  std::string dir;
  std::optional<uid_t> owner;
  bool any = false;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    dir = s.cache_dir;
    owner = s.trusted_cache_owner;
    for (const auto& e : s.executors) any = any || e != nullptr;
  }
  if (!any || dir.empty()) return py::none();
  absl::StatusOr<std::shared_ptr<lk::JitCache>> cache = lk::JitCache::Shared(dir, owner);
  if (!cache.ok()) return py::none();
  const lk::JitCacheStats st = (*cache)->stats();
  py::dict d;
  d["memory_hits"] = st.memory_hits;
  d["disk_hits"] = st.disk_hits;
  d["misses"] = st.misses;
  d["compiles"] = st.compiles;
  d["compile_failures"] = st.compile_failures;
  d["corrupt_entries"] = st.corrupt_entries;
  d["write_failures"] = st.write_failures;
  d["memory_only"] = st.memory_only;
  d["compile_seconds"] = st.compile_seconds;
  return d;
}

// Runs `op` on the current stream of the tensors' device, asynchronously (like a kernel launch).
void Launch(const std::string& op, const std::vector<std::optional<at::Tensor>>& tensors,
            const std::vector<double>& scalars) {
  std::vector<lk::TensorView> views;
  auto device_or = ToViews(tensors, views);
  if (!device_or.ok()) RaiseStatus(device_or.status(), op);
  const int device = *device_or;
  if (device < 0) {
    RaiseStatus(absl::InvalidArgumentError("no CUDA tensor given, so no device to run on"), op);
  }
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  const CUstream stream =
      reinterpret_cast<CUstream>(at::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream());
  absl::Status status;
  {
    // The first launch of a kernel variant may JIT-compile it (NVRTC, up to seconds): let other
    // Python threads run meanwhile. Nothing below touches Python objects.
    py::gil_scoped_release no_gil;
    status = EnsureContext(device);
    lk::Executor* executor = nullptr;
    if (status.ok()) {
      auto ex = GetExecutor(device);
      if (ex.ok()) executor = *ex; else status = ex.status();
    }
    size_t workspace_bytes = 0;
    if (status.ok()) {
      auto ws = executor->WorkspaceBytes(op, views, scalars);
      if (ws.ok()) workspace_bytes = *ws; else status = ws.status();
    }
    if (status.ok()) {
      // Scratch from torch's caching allocator, on this stream: freed (returned to the cache) when
      // `workspace` goes out of scope, which is safe because later users of the block are ordered
      // after this launch on the same stream.
      at::Tensor workspace;
      void* ws_ptr = nullptr;
      if (workspace_bytes > 0) {
        workspace = at::empty({static_cast<int64_t>(workspace_bytes)},
                              at::TensorOptions().dtype(at::kByte).device(at::kCUDA, device));
        ws_ptr = workspace.data_ptr();
      }
      status = executor->Launch(op, views, scalars, ws_ptr, workspace_bytes, stream);
    }
  }
  if (!status.ok()) RaiseStatus(status, op);
}

// Bytes of scratch `op` would get for these arguments (for tests and memory accounting).
size_t WorkspaceBytes(const std::string& op, const std::vector<std::optional<at::Tensor>>& tensors,
                      const std::vector<double>& scalars) {
  std::vector<lk::TensorView> views;
  auto device_or = ToViews(tensors, views);
  if (!device_or.ok()) RaiseStatus(device_or.status(), op);
  const int device = *device_or;
  if (device < 0) RaiseStatus(absl::InvalidArgumentError("no CUDA tensor given"), op);
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  absl::StatusOr<size_t> result;
  {
    py::gil_scoped_release no_gil;
    absl::Status st = EnsureContext(device);
    if (!st.ok()) {
      result = st;
    } else {
      auto ex = GetExecutor(device);
      result = ex.ok() ? (*ex)->WorkspaceBytes(op, views, scalars) : absl::StatusOr<size_t>(ex.status());
    }
  }
  if (!result.ok()) RaiseStatus(result.status(), op);
  return *result;
}

// What Launch would run for these arguments (nothing is launched): the launch config, whether it
// came from the node's tuning DB, and the kernels with their grids and blocks. For tests and
// debugging ("did my process pick up `ligerctl tune`?").
py::dict PlanInfo(const std::string& op, const std::vector<std::optional<at::Tensor>>& tensors,
                  const std::vector<double>& scalars) {
  std::vector<lk::TensorView> views;
  auto device_or = ToViews(tensors, views);
  if (!device_or.ok()) RaiseStatus(device_or.status(), op);
  const int device = *device_or;
  if (device < 0) RaiseStatus(absl::InvalidArgumentError("no CUDA tensor given"), op);
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  absl::StatusOr<lk::OpPlan> plan;
  std::string db_file;
  {
    py::gil_scoped_release no_gil;
    absl::Status st = EnsureContext(device);
    if (!st.ok()) {
      plan = st;
    } else {
      auto ex = GetExecutor(device);
      if (!ex.ok()) {
        plan = ex.status();
      } else {
        plan = (*ex)->Plan(op, views, scalars, nullptr, 0, {.check_workspace = false});
        if ((*ex)->tuning_db() != nullptr) db_file = (*ex)->tuning_db()->file().string();
      }
    }
  }
  if (!plan.ok()) RaiseStatus(plan.status(), op);
  py::dict config;
  config["threads_per_row"] = plan->config.threads_per_row;
  config["rows_per_block"] = plan->config.rows_per_block;
  config["iters"] = plan->config.iters;
  config["vectorized"] = plan->config.vectorized;
  config["grid"] = plan->config.grid;
  py::list launches;
  for (const lk::KernelLaunch& k : plan->launches) {
    py::dict l;
    l["kernel"] = k.kernel;
    l["grid"] = py::make_tuple(k.grid[0], k.grid[1], k.grid[2]);
    l["block"] = py::make_tuple(k.block[0], k.block[1], k.block[2]);
    launches.append(l);
  }
  py::dict out;
  out["config"] = config;
  out["config_text"] = lk::FormatLaunchConfig(plan->config);
  out["tuned"] = plan->tuned;
  out["variant"] = plan->variant.tag;
  out["launches"] = launches;
  out["workspace_bytes"] = plan->workspace_bytes;
  out["tuning_db"] = db_file;
  return out;
}

// Creates the device's executor now (loads the driver, opens the cache), to surface setup
// errors early rather than at the first op.
void InitDevice(int device) {
  if (device < 0 || device >= kMaxDevices) {
    RaiseStatus(absl::InvalidArgumentError(absl::StrCat("bad device ordinal ", device)), "init");
  }
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  absl::Status st;
  {
    py::gil_scoped_release no_gil;
    st = EnsureContext(device);
    if (st.ok()) st = GetExecutor(device).status();
  }
  if (!st.ok()) RaiseStatus(st, "init");
}

// ---------------------------------------------------------------------------------------------
// Remote dispatch.

// EnsureContext changes this thread's current device, which is torch's current device too: put
// it back where no c10::cuda::CUDAGuard does (a guard cannot even be built without a GPU driver,
// and open_session must fail with a ligerd error there).
struct DeviceRestorer {
  int previous = -1;
  DeviceRestorer() {
    if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
  }
  ~DeviceRestorer() {
    int now = -1;
    if (previous >= 0 && cudaGetDevice(&now) == cudaSuccess && now != previous) cudaSetDevice(previous);
  }
};

// A Python-owned RemoteSession. The mutex serialises submits: RemoteSession is thread-compatible
// and we drop the GIL around its gRPC calls (buffer registration), so two Python threads (e.g. an
// autograd worker and the main thread) could otherwise be inside it at once. Always take the
// mutex *after* releasing the GIL, never the other way round (lock-order inversion).
struct SessionHandle {
  std::mutex mu;
  std::unique_ptr<ligerd::RemoteClient> session;
  int device = 0;
  bool remote = false;
  std::string reason;
  uint64_t session_id = 0;

  // Ends the session: CloseSession (the daemon drains our ops first), releases any stream waits,
  // frees the flag page. Blocks up to an RPC deadline, so never with the GIL held.
  void Close() {
    std::unique_ptr<ligerd::RemoteClient> doomed;
    {
      std::lock_guard<std::mutex> lock(mu);
      doomed = std::move(session);
    }
    if (doomed) {
      DeviceRestorer restore;
      (void)EnsureContext(device);  // the destructor frees CUDA memory of torch's primary context
      doomed.reset();
    }
  }
  ~SessionHandle() {
    if (!session) return;
    if (Py_IsInitialized() && PyGILState_Check()) {
      py::gil_scoped_release no_gil;
      Close();
    } else {
      Close();
    }
  }
};

// Opens this process's session for `device` (torch's ordinal; the daemon is assumed to see the
// same devices in the same order, i.e. the same CUDA_VISIBLE_DEVICES). The daemon picks the mode.
std::shared_ptr<SessionHandle> OpenSession(const std::string& socket_path, int device,
                                           const std::string& requested_mode, const std::string& client_name) {
  if (device < 0 || device >= kMaxDevices) {
    RaiseStatus(absl::InvalidArgumentError(absl::StrCat("bad device ordinal ", device)), "open_session");
  }
  if (requested_mode != "local" && requested_mode != "remote" && requested_mode != "auto") {
    RaiseStatus(absl::InvalidArgumentError(absl::StrCat("requested mode must be local, remote or auto; got '",
                                                        requested_mode, "'")), "open_session");
  }
  auto handle = std::make_shared<SessionHandle>();
  handle->device = device;
  absl::Status status;
  {
    py::gil_scoped_release no_gil;  // GetInfo + OpenSession (+ AttachStreamFlags) RPCs
    DeviceRestorer restore;
    status = EnsureContext(device);  // the session's flag page lives in the device's context
    if (status.ok()) {
      auto opened = ligerd::RemoteClient::Open(socket_path, device, requested_mode, client_name);
      if (opened.ok()) handle->session = std::move(opened).value(); else status = opened.status();
    }
  }
  if (!status.ok()) RaiseStatus(status, "open_session");
  handle->remote = handle->session->remote();
  handle->reason = handle->session->reason();
  handle->session_id = handle->session->session_id();
  return handle;
}

// The op an asynchronous error belongs to: the daemon's message starts with "<op>: ".
std::string FailedOp(const absl::Status& status) {
  const std::string message(status.message());
  const size_t colon = message.find(": ");
  if (colon == std::string::npos || message.find(' ') < colon) return "";
  return message.substr(0, colon);
}

// Raises the daemon's recorded error (naming the op that failed), or DaemonUnavailableError once
// the daemon is gone; returns otherwise. Reads shared memory and an atomic: cheap, GIL held.
void SessionCheck(SessionHandle& handle) {
  absl::Status status;
  {
    std::lock_guard<std::mutex> lock(handle.mu);
    if (!handle.session) {
      status = absl::FailedPreconditionError("remote session is closed");
    } else {
      status = handle.session->Check();
    }
  }
  if (!status.ok()) RaiseStatus(status, FailedOp(status));
}

// Enqueues `op` for the daemon on torch's current stream of the tensors' device; asynchronous like
// a kernel launch. Raises an error recorded for an earlier op before submitting, and one already
// recorded right after (so a failure surfaces at the next op at the latest).
void RemoteLaunch(SessionHandle& handle, const std::string& op,
                  const std::vector<std::optional<at::Tensor>>& tensors, const std::vector<double>& scalars) {
  SessionCheck(handle);
  std::vector<lk::TensorView> views;
  auto device_or = ToViews(tensors, views);
  if (!device_or.ok()) RaiseStatus(device_or.status(), op);
  const int device = *device_or;
  if (device < 0) RaiseStatus(absl::InvalidArgumentError("no CUDA tensor given, so no device to run on"), op);
  if (device != handle.device) {
    RaiseStatus(absl::InvalidArgumentError(absl::StrCat("tensors are on cuda:", device, " but the session is for cuda:",
                                                        handle.device)), op);
  }
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  const CUstream stream =
      reinterpret_cast<CUstream>(at::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream());
  absl::Status status;
  {
    // Registering a new allocation is a gRPC round trip; a full ring waits for the daemon.
    py::gil_scoped_release no_gil;
    status = EnsureContext(device);
    if (status.ok()) {
      std::lock_guard<std::mutex> lock(handle.mu);
      status = handle.session ? handle.session->Submit(op, views, scalars, stream)
                              : absl::FailedPreconditionError("remote session is closed");
    }
  }
  if (!status.ok()) {
    // Submit reports a recorded asynchronous error too; that one names the op that failed.
    const std::string failed = FailedOp(status);
    RaiseStatus(status, failed.empty() ? op : failed);
  }
  SessionCheck(handle);
}

void CloseSession(SessionHandle& handle) {
  py::gil_scoped_release no_gil;
  handle.Close();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ligerd local executor (LibTorch extension)";
  m.def("set_cache_dir", &SetCacheDir, py::arg("path"), py::arg("trusted_owner") = -1,
        "Directory of the shared NVRTC JIT cache; takes effect for executors created afterwards. "
        "trusted_owner: the uid of the node daemon whose cache this is (used read-only); -1: none.");
  m.def("cache_dir", &GetCacheDir);
  m.def("jit_stats", &JitStats,
        "The NVRTC JIT cache's counters in this process (memory/disk hits, misses, compiles, "
        "compile_seconds, ...) as a dict; None before the first local op.");
  m.def("launch", &Launch, py::arg("op"), py::arg("tensors"), py::arg("scalars"),
        "Run a catalogue op on torch's current stream. tensors: positional, None for an absent "
        "optional tensor; scalars: positional floats.");
  m.def("workspace_bytes", &WorkspaceBytes, py::arg("op"), py::arg("tensors"), py::arg("scalars"));
  m.def("init_device", &InitDevice, py::arg("device"));
  m.def("plan_info", &PlanInfo, py::arg("op"), py::arg("tensors"), py::arg("scalars"),
        "What launch() would run for these arguments, without launching: {'config', 'config_text', "
        "'tuned' (config from the node's tuning DB), 'variant', 'launches', 'workspace_bytes', 'tuning_db'}.");
  m.attr("max_devices") = kMaxDevices;

  py::class_<SessionHandle, std::shared_ptr<SessionHandle>>(m, "RemoteSession",
      "A session with ligerd for one device (from open_session).")
      .def_readonly("device", &SessionHandle::device)
      .def_readonly("session_id", &SessionHandle::session_id)
      .def_readonly("reason", &SessionHandle::reason, "why the daemon chose this mode")
      .def_property_readonly("mode", [](const SessionHandle& h) { return h.remote ? "remote" : "local"; })
      .def_property_readonly("closed", [](SessionHandle& h) {
        std::lock_guard<std::mutex> lock(h.mu);
        return !h.session;
      });
  m.def("open_session", &OpenSession, py::arg("socket_path"), py::arg("device"), py::arg("requested_mode"),
        py::arg("client_name"),
        "Open a session with the daemon on socket_path for a CUDA device; requested_mode is "
        "'local', 'remote' or 'auto'. The handle's mode/reason say what the daemon chose.");
  m.def("remote_launch", &RemoteLaunch, py::arg("handle"), py::arg("op"), py::arg("tensors"), py::arg("scalars"),
        "Like launch(), but the daemon runs the op (the session must be remote).");
  m.def("session_check", &SessionCheck, py::arg("handle"),
        "Raise the daemon's recorded asynchronous error, or DaemonUnavailableError if it is gone.");
  m.def("close_session", &CloseSession, py::arg("handle"));
#ifdef LIGERD_VERSION
  m.attr("version") = LIGERD_VERSION;
#endif
}

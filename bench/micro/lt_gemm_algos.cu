// The fused linear cross-entropy's three GEMMs per token chunk (bf16, fp32 accumulation), timed
// for every algorithm cuBLASLt's heuristic offers, to settle how kernels/blas/lt_gemm.cc picks
// one (heuristic top-1 or timed top-N), the workspace size, and whether the d input and dW GEMMs
// gain from running side by side on split SMs (CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET). Standalone;
// its H100 results: docs/perf/fused_linear_cross_entropy.md.
//   nvcc -O3 -arch=sm_90 -std=c++17 bench/micro/lt_gemm_algos.cu -lcublasLt -o /tmp/lt_gemm_algos
//   /tmp/lt_gemm_algos [chunk ...]          (default chunks: 640 768 1024; hidden 4096, vocab 128256)
//   /tmp/lt_gemm_algos --search [chunk ...] (also: beyond the heuristic's offers, every tile x
//                                            stages x cluster shape x swizzle of the algorithm
//                                            ids it offered, for the 32 MiB workspace)
//
// Row-major (as the client sees them) -> cuBLASLt's column-major, with x [c, D], W [V, D],
// G = d logits [c, V] (all row-major):
//   logits[c,V] = x W^T      col-major logits'[V,c] = op_T(W'[D,V]) x'[D,c]     m=V n=c k=D
//   dx[c,D]     = G W        col-major dx'[D,c]     = W'[D,V] G'[V,c]           m=D n=c k=V
//   dW[V,D]    += G^T x      col-major dW'[D,V]     = x'[D,c] op_T(G'[V,c])     m=D n=V k=c, beta=1
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#define CK(x)                                                                              \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                               \
      std::printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));      \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)
#define LT(x)                                                                              \
  do {                                                                                     \
    cublasStatus_t s_ = (x);                                                               \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                     \
      std::printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cublasLtGetStatusName(s_));    \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)

namespace {

constexpr long long kHidden = 4096, kVocab = 128256;
constexpr int kMaxAlgos = 48;  // the heuristic rarely offers more for one geometry
constexpr int kIters = 10;

struct Gemm {
  const char* name;
  cublasOperation_t ta, tb;
  long long m, n, k, lda, ldb, ldd;
  const void *a, *b;
  void* d;
  float beta;
  int sm_target = 0;  // 0: all SMs
};

struct Lt {
  cublasLtHandle_t h;
  void* ws;
  size_t ws_bytes;
};

struct Desc {
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t a, b, d;
};

Desc MakeDesc(const Gemm& g) {
  Desc x;
  LT(cublasLtMatmulDescCreate(&x.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  LT(cublasLtMatmulDescSetAttribute(x.op, CUBLASLT_MATMUL_DESC_TRANSA, &g.ta, sizeof(g.ta)));
  LT(cublasLtMatmulDescSetAttribute(x.op, CUBLASLT_MATMUL_DESC_TRANSB, &g.tb, sizeof(g.tb)));
  if (g.sm_target > 0)
    LT(cublasLtMatmulDescSetAttribute(x.op, CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET, &g.sm_target,
                                      sizeof(g.sm_target)));
  const bool at = g.ta == CUBLAS_OP_T, bt = g.tb == CUBLAS_OP_T;
  LT(cublasLtMatrixLayoutCreate(&x.a, CUDA_R_16BF, at ? g.k : g.m, at ? g.m : g.k, g.lda));
  LT(cublasLtMatrixLayoutCreate(&x.b, CUDA_R_16BF, bt ? g.n : g.k, bt ? g.k : g.n, g.ldb));
  LT(cublasLtMatrixLayoutCreate(&x.d, CUDA_R_16BF, g.m, g.n, g.ldd));
  return x;
}

void FreeDesc(Desc& x) {
  cublasLtMatmulDescDestroy(x.op);
  cublasLtMatrixLayoutDestroy(x.a);
  cublasLtMatrixLayoutDestroy(x.b);
  cublasLtMatrixLayoutDestroy(x.d);
}

std::vector<cublasLtMatmulHeuristicResult_t> Heuristics(const Lt& lt, const Desc& x, int want) {
  cublasLtMatmulPreference_t pref;
  LT(cublasLtMatmulPreferenceCreate(&pref));
  LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &lt.ws_bytes,
                                          sizeof(lt.ws_bytes)));
  std::vector<cublasLtMatmulHeuristicResult_t> r(want);
  int got = 0;
  LT(cublasLtMatmulAlgoGetHeuristic(lt.h, x.op, x.a, x.b, x.d, x.d, pref, want, r.data(), &got));
  cublasLtMatmulPreferenceDestroy(pref);
  r.resize(got);
  return r;
}

void Run(const Lt& lt, const Gemm& g, const Desc& x, const cublasLtMatmulAlgo_t& algo, cudaStream_t s) {
  const float alpha = 1.f;
  LT(cublasLtMatmul(lt.h, x.op, &alpha, g.a, x.a, g.b, x.b, &g.beta, g.d, x.d, g.d, x.d, &algo, lt.ws,
                    lt.ws_bytes, s));
}

// Mean ms of `iters` back-to-back launches of fn on stream s (after two warm-ups).
template <class F>
float TimeMs(F fn, cudaStream_t s, int iters = kIters) {
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  fn();
  fn();
  CK(cudaEventRecord(e0, s));
  for (int i = 0; i < iters; ++i) fn();
  CK(cudaEventRecord(e1, s));
  CK(cudaEventSynchronize(e1));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, e0, e1));
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return ms / iters;
}

void Describe(const cublasLtMatmulAlgo_t& a, char* out, size_t n) {
  int tile = 0, stages = 0, splitk = 0, swizzle = 0, red = 0;
  uint16_t cluster = 0;
  size_t w = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof(stages), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof(splitk), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &swizzle, sizeof(swizzle), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof(red), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster, sizeof(cluster), &w);
  std::snprintf(out, n, "tile=%d stages=%d splitk=%d swz=%d red=%d cluster=%d", tile, stages, splitk, swizzle,
                red, cluster);
}

// Every algorithm the heuristic offers for g, timed; returns the best (and prints all).
cublasLtMatmulAlgo_t Sweep(const Lt& lt, const Gemm& g, cudaStream_t s, float* best_ms, float* top1_ms) {
  Desc x = MakeDesc(g);
  auto hs = Heuristics(lt, x, kMaxAlgos);
  const double flop = 2.0 * g.m * g.n * g.k;
  std::printf("  %s m=%lld n=%lld k=%lld beta=%g: %zu algorithms\n", g.name, g.m, g.n, g.k, g.beta, hs.size());
  int best = 0;
  std::vector<float> ms(hs.size());
  for (size_t i = 0; i < hs.size(); ++i) {
    ms[i] = TimeMs([&] { Run(lt, g, x, hs[i].algo, s); }, s);
    if (ms[i] < ms[best]) best = static_cast<int>(i);
  }
  for (size_t i = 0; i < hs.size(); ++i) {
    char d[160];
    Describe(hs[i].algo, d, sizeof d);
    if (i < 8 || static_cast<int>(i) == best)
      std::printf("    #%-2zu %7.3f ms %6.1f TF/s ws=%7zu KiB %s%s\n", i, ms[i], flop / ms[i] * 1e-9,
                  hs[i].workspaceSize >> 10, d, static_cast<int>(i) == best ? "  <- fastest" : "");
  }
  *best_ms = ms[best];
  *top1_ms = ms[0];
  cublasLtMatmulAlgo_t a = hs[best].algo;
  FreeDesc(x);
  return a;
}

// The configurations the heuristic does not offer: for each algorithm id among its offers, every
// tile id the algorithm reports, with the stages ids the heuristic used for that algorithm,
// crossed with cluster shapes (auto, 1x1, 2x1, 1x2, 2x2) and CTA swizzling on/off, split-K off;
// each is checked by cuBLASLt, screened with 3 launches, and the 10 fastest re-timed as the
// heuristic's were. Prints the five fastest beside the heuristic's best; the daemon can only use
// such a config if one wins by a margin worth persisting (a cublasLtMatmulAlgo_t is 64 plain bytes).
constexpr int kMaxSearch = 1500;  // configurations screened per GEMM, at most (~5 launches each)
void Search(const Lt& lt, const Gemm& g, cudaStream_t s, float heuristic_best_ms) {
  Desc x = MakeDesc(g);
  auto hs = Heuristics(lt, x, kMaxAlgos);
  std::vector<int> ids;
  std::vector<std::vector<uint32_t>> stages_of;  // per id: the stages ids the heuristic used
  for (const auto& h : hs) {
    int id = 0;
    uint32_t stage = 0;
    size_t w = 0;
    cublasLtMatmulAlgoConfigGetAttribute(&h.algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof(id), &w);
    cublasLtMatmulAlgoConfigGetAttribute(&h.algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stage, sizeof(stage), &w);
    const size_t at = std::find(ids.begin(), ids.end(), id) - ids.begin();
    if (at == ids.size()) {
      ids.push_back(id);
      stages_of.emplace_back();
    }
    auto& st = stages_of[at];
    if (std::find(st.begin(), st.end(), stage) == st.end()) st.push_back(stage);
  }
  struct Timed {
    float ms;
    cublasLtMatmulAlgo_t algo;
  };
  std::vector<Timed> all;
  int checked = 0, refused = 0;
  const double flop = 2.0 * g.m * g.n * g.k;
  for (size_t k = 0; k < ids.size(); ++k) {
    const int id = ids[k];
    cublasLtMatmulAlgo_t base;
    if (cublasLtMatmulAlgoInit(lt.h, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF,
                               id, &base) != CUBLAS_STATUS_SUCCESS)
      continue;
    size_t n_tiles = 0;
    cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_TILE_IDS, nullptr, 0, &n_tiles);
    std::vector<uint32_t> tiles(std::max<size_t>(n_tiles / 4, 1), 0);
    const std::vector<uint32_t>& stages = stages_of[k];
    size_t w = 0;
    if (n_tiles) cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_TILE_IDS, tiles.data(), n_tiles, &w);
    int swz_ok = 0;
    cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_CTA_SWIZZLING_SUPPORT, &swz_ok, sizeof(swz_ok), &w);
    for (uint32_t tile : tiles)
      for (uint32_t stage : stages)
        for (uint16_t cluster : {0, 2, 3, 5, 6})
          for (int swz = 0; swz <= (swz_ok ? 1 : 0); ++swz) {
            if (static_cast<int>(all.size()) >= kMaxSearch) break;
            cublasLtMatmulAlgo_t a = base;
            const int splitk = 1;
            cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile));
            cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stage, sizeof(stage));
            cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster, sizeof(cluster));
            cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &swz, sizeof(swz));
            cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof(splitk));
            cublasLtMatmulHeuristicResult_t r{};
            ++checked;
            if (cublasLtMatmulAlgoCheck(lt.h, x.op, x.a, x.b, x.d, x.d, &a, &r) != CUBLAS_STATUS_SUCCESS ||
                r.workspaceSize > lt.ws_bytes) {
              ++refused;
              continue;
            }
            all.push_back({TimeMs([&] { Run(lt, g, x, a, s); }, s, 3), a});
          }
  }
  auto by_ms = [](const Timed& a, const Timed& b) { return a.ms < b.ms; };
  std::sort(all.begin(), all.end(), by_ms);
  if (all.size() > 10) all.resize(10);
  for (Timed& t : all) t.ms = TimeMs([&] { Run(lt, g, x, t.algo, s); }, s);
  std::sort(all.begin(), all.end(), by_ms);
  std::printf("  search %s: %zu algorithm ids, %d configs checked, %d refused; heuristic best %.3f ms\n", g.name,
              ids.size(), checked, refused, heuristic_best_ms);
  for (size_t i = 0; i < all.size() && i < 5; ++i) {
    char d[160];
    Describe(all[i].algo, d, sizeof d);
    int id = 0;
    size_t w = 0;
    cublasLtMatmulAlgoConfigGetAttribute(&all[i].algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof(id), &w);
    std::printf("    %7.3f ms %6.1f TF/s (%+.1f%% vs heuristic best) id=%d %s\n", all[i].ms, flop / all[i].ms * 1e-9,
                100.0 * (heuristic_best_ms / all[i].ms - 1.0), id, d);
  }
  FreeDesc(x);
}

// n bf16 values uniform in [-scale, scale) from a per-element hash (no cuRAND dependency).
__global__ void FillKernel(__nv_bfloat16* p, long long n, float scale, unsigned seed) {
  for (long long i = blockIdx.x * 256LL + threadIdx.x; i < n; i += 256LL * gridDim.x) {
    unsigned h = static_cast<unsigned>(i) * 2654435761u ^ (seed * 0x9E3779B9u) ^ static_cast<unsigned>(i >> 32);
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = __float2bfloat16(scale * (static_cast<float>(h & 0xffffff) / 8388608.0f - 1.0f));
  }
}

void FillRandom(__nv_bfloat16* p, long long n, float scale, unsigned seed) {
  FillKernel<<<1024, 256>>>(p, n, scale, seed);
  CK(cudaGetLastError());
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<long long> chunks;
  bool search = false;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--search") search = true;
    else chunks.push_back(std::atoll(argv[i]));
  }
  if (chunks.empty()) chunks = {640, 768, 1024};
  const long long cmax = *std::max_element(chunks.begin(), chunks.end());
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));

  __nv_bfloat16 *x, *W, *G, *dx, *dW;
  CK(cudaMalloc(&x, cmax * kHidden * 2));
  CK(cudaMalloc(&W, kVocab * kHidden * 2));
  CK(cudaMalloc(&G, cmax * kVocab * 2));
  CK(cudaMalloc(&dx, cmax * kHidden * 2));
  CK(cudaMalloc(&dW, kVocab * kHidden * 2));
  // Random values: a GEMM's speed depends on its data (the tensor cores' power, hence clocks).
  // A constant fill made every kernel ~20% faster than on real data and misled the first version
  // of this sweep (docs/perf/fused_linear_cross_entropy.md).
  FillRandom(x, cmax * kHidden, 0.5f, 1);
  FillRandom(W, kVocab * kHidden, 0.02f, 2);
  FillRandom(G, cmax * kVocab, 1e-5f, 3);
  CK(cudaDeviceSynchronize());
  CK(cudaMemset(dW, 0, kVocab * kHidden * 2));

  cudaStream_t s0, s1;
  CK(cudaStreamCreateWithFlags(&s0, cudaStreamNonBlocking));
  CK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  cublasLtHandle_t h;
  LT(cublasLtCreate(&h));

  for (size_t ws_mib : {32, 4}) {
    Lt lt{h, nullptr, ws_mib << 20};
    CK(cudaMalloc(&lt.ws, lt.ws_bytes));
    std::printf("== workspace %zu MiB, %d SMs\n", ws_mib, sms);
    for (long long c : chunks) {
      const double gemm_flop = 2.0 * c * kHidden * kVocab;
      Gemm fwd{"logits", CUBLAS_OP_T, CUBLAS_OP_N, kVocab, c, kHidden, kHidden, kHidden, kVocab, W, x, G, 0.f};
      Gemm dxg{"dx", CUBLAS_OP_N, CUBLAS_OP_N, kHidden, c, kVocab, kHidden, kVocab, kHidden, W, G, dx, 0.f};
      Gemm dwg{"dW", CUBLAS_OP_N, CUBLAS_OP_T, kHidden, kVocab, c, kHidden, kVocab, kHidden, x, G, dW, 1.f};
      std::printf(" chunk %lld (one GEMM at 759 TF/s: %.3f ms)\n", c, gemm_flop / 759e9);
      float b[3], t1[3];
      cublasLtMatmulAlgo_t fa = Sweep(lt, fwd, s0, &b[0], &t1[0]);
      cublasLtMatmulAlgo_t xa = Sweep(lt, dxg, s0, &b[1], &t1[1]);
      cublasLtMatmulAlgo_t wa = Sweep(lt, dwg, s0, &b[2], &t1[2]);
      (void)fa;
      if (search && ws_mib == 32) {
        Search(lt, fwd, s0, b[0]);
        Search(lt, dxg, s0, b[1]);
        Search(lt, dwg, s0, b[2]);
      }
      const double chunks_per_step = 8192.0 / c;
      std::printf("  per 8192-token step: heuristic top-1 %.2f ms, fastest %.2f ms (GEMMs only)\n",
                  (t1[0] + t1[1] + t1[2]) * chunks_per_step, (b[0] + b[1] + b[2]) * chunks_per_step);

      // d input and dW side by side: each on its own stream, with SM targets that split the GPU.
      // Two workspaces: concurrent GEMMs must not share one.
      Lt lt2{h, nullptr, lt.ws_bytes};
      CK(cudaMalloc(&lt2.ws, lt2.ws_bytes));
      cudaEvent_t fork, join;
      CK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
      CK(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
      for (int dx_sms : {0, 16, 24, 32, 44, 66}) {
        Gemm gx = dxg, gw = dwg;
        gx.sm_target = dx_sms;
        gw.sm_target = dx_sms > 0 ? sms - dx_sms : 0;
        Desc dxd = MakeDesc(gx), dwd = MakeDesc(gw);
        // Re-pick the heuristic's top-1 under the SM target (the timed best above was for all SMs).
        auto hx = Heuristics(lt, dxd, 1), hw = Heuristics(lt2, dwd, 1);
        const cublasLtMatmulAlgo_t ax = dx_sms > 0 ? hx[0].algo : xa, aw = dx_sms > 0 ? hw[0].algo : wa;
        const float pair = TimeMs(
            [&] {
              CK(cudaEventRecord(fork, s0));
              CK(cudaStreamWaitEvent(s1, fork, 0));
              Run(lt2, gw, dwd, aw, s1);
              Run(lt, gx, dxd, ax, s0);
              CK(cudaEventRecord(join, s1));
              CK(cudaStreamWaitEvent(s0, join, 0));
            },
            s0);
        std::printf("  dx || dW on two streams, dx SM target %2d, dW %3d: %.3f ms per chunk (sequential fastest %.3f)\n",
                    dx_sms, gw.sm_target, pair, b[1] + b[2]);
        FreeDesc(dxd);
        FreeDesc(dwd);
      }
      CK(cudaFree(lt2.ws));
    }
    CK(cudaFree(lt.ws));
  }
  std::printf("done\n");
  return 0;
}

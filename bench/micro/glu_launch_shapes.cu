// SwiGLU forward launch-shape sweep (bf16, 16384 x 14336, three rotating buffer sets so reads are
// cold): persistent grid-stride vs one-shot contiguous chunks, 1/2/4 vectors per thread, block
// 128-1024, with and without streaming cache hints. Standalone, to settle kernels/ops/glu.cuh's
// launch shape; its H100 results: docs/perf/glu.md.
//   nvcc -O3 -arch=sm_90 -std=c++17 bench/micro/glu_launch_shapes.cu -o /tmp/glu_launch_shapes
#include <cstdio>
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#define CK(x) do{cudaError_t e=(x); if(e){printf("%s:%d %s\n",__FILE__,__LINE__,cudaGetErrorString(e)); return 1;}}while(0)
__device__ __forceinline__ float silu(float x){ return __fdividef(x, 1.f+__expf(-x)); }
template<int U>
__global__ void k_stride(const uint4* a, const uint4* b, uint4* c, long long n){
  long long step=(long long)gridDim.x*blockDim.x;
  for(long long i0=(long long)blockIdx.x*blockDim.x+threadIdx.x;i0<n;i0+=U*step){
    uint4 av[U], bv[U];
#pragma unroll
    for(int u=0;u<U;++u){ long long i=i0+u*step; if(i<n){av[u]=a[i];bv[u]=b[i];} }
#pragma unroll
    for(int u=0;u<U;++u){ long long i=i0+u*step; if(i<n){
      const __nv_bfloat162* ah=(const __nv_bfloat162*)&av[u]; const __nv_bfloat162* bh=(const __nv_bfloat162*)&bv[u];
      uint4 o; __nv_bfloat162* oh=(__nv_bfloat162*)&o;
#pragma unroll
      for(int k=0;k<4;++k){ float2 x=__bfloat1622float2(ah[k]), y=__bfloat1622float2(bh[k]);
        oh[k]=__floats2bfloat162_rn(silu(x.x)*y.x, silu(x.y)*y.y);} c[i]=o; } }
  }
}
// contiguous chunk per thread-block: block handles U*blockDim consecutive vectors
template<int U>
__global__ void k_chunk(const uint4* a, const uint4* b, uint4* c, long long n){
  long long base=(long long)blockIdx.x*blockDim.x*U+threadIdx.x;
  uint4 av[U], bv[U];
#pragma unroll
  for(int u=0;u<U;++u){ long long i=base+u*blockDim.x; if(i<n){av[u]=__ldcs(a+i);bv[u]=__ldcs(b+i);} }
#pragma unroll
  for(int u=0;u<U;++u){ long long i=base+u*blockDim.x; if(i<n){
      const __nv_bfloat162* ah=(const __nv_bfloat162*)&av[u]; const __nv_bfloat162* bh=(const __nv_bfloat162*)&bv[u];
      uint4 o; __nv_bfloat162* oh=(__nv_bfloat162*)&o;
#pragma unroll
      for(int k=0;k<4;++k){ float2 x=__bfloat1622float2(ah[k]), y=__bfloat1622float2(bh[k]);
        oh[k]=__floats2bfloat162_rn(silu(x.x)*y.x, silu(x.y)*y.y);} c[i]=o; } }
}
template<int U>
__global__ void k_chunk_nohint(const uint4* a, const uint4* b, uint4* c, long long n){
  long long base=(long long)blockIdx.x*blockDim.x*U+threadIdx.x;
  uint4 av[U], bv[U];
#pragma unroll
  for(int u=0;u<U;++u){ long long i=base+u*blockDim.x; if(i<n){av[u]=a[i];bv[u]=b[i];} }
#pragma unroll
  for(int u=0;u<U;++u){ long long i=base+u*blockDim.x; if(i<n){
      const __nv_bfloat162* ah=(const __nv_bfloat162*)&av[u]; const __nv_bfloat162* bh=(const __nv_bfloat162*)&bv[u];
      uint4 o; __nv_bfloat162* oh=(__nv_bfloat162*)&o;
#pragma unroll
      for(int k=0;k<4;++k){ float2 x=__bfloat1622float2(ah[k]), y=__bfloat1622float2(bh[k]);
        oh[k]=__floats2bfloat162_rn(silu(x.x)*y.x, silu(x.y)*y.y);} c[i]=o; } }
}
__global__ void k_copy(const uint4* a, uint4* c, long long n){ long long i=(long long)blockIdx.x*blockDim.x+threadIdx.x; if(i<n) c[i]=a[i]; }
int main(){
  const long long M=16384,F=14336, n=M*F/8; const int NB=3; // rotate 3 buffer sets
  uint4 *a[NB],*b[NB],*c[NB];
  for(int s=0;s<NB;++s){CK(cudaMalloc(&a[s],n*16));CK(cudaMalloc(&b[s],n*16));CK(cudaMalloc(&c[s],n*16));
    CK(cudaMemset(a[s],0x3c,n*16));CK(cudaMemset(b[s],0x3c,n*16));}
  int sms; cudaDeviceGetAttribute(&sms,cudaDevAttrMultiProcessorCount,0);
  cudaEvent_t e0,e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
  double bytes=3.0*n*16;
  auto timeit=[&](const char* name, auto launch){
    for(int w=0;w<3;++w) launch(w%NB);
    cudaEventRecord(e0); const int R=30; for(int r=0;r<R;++r) launch(r%NB); cudaEventRecord(e1); cudaEventSynchronize(e1);
    float ms; cudaEventElapsedTime(&ms,e0,e1); ms/=R; printf("%-28s %.4f ms %6.0f GB/s\n",name,ms,bytes/ms/1e6);
    cudaError_t err=cudaGetLastError(); if(err) printf("err %s\n",cudaGetErrorString(err)); };
  // copy reference: 2n*16 bytes
  { for(int w=0;w<3;++w) k_copy<<<(n+255)/256,256>>>(a[0],c[0],n);
    cudaEventRecord(e0); for(int r=0;r<30;++r) k_copy<<<(n+255)/256,256>>>(a[r%NB],c[r%NB],n); cudaEventRecord(e1); cudaEventSynchronize(e1);
    float ms; cudaEventElapsedTime(&ms,e0,e1); ms/=30; printf("%-28s %.4f ms %6.0f GB/s\n","copy uint4",ms,2.0*n*16/ms/1e6);
    printf("memcpy: "); for(int w=0;w<2;++w) cudaMemcpyAsync(c[0],a[0],n*16,cudaMemcpyDeviceToDevice);
    cudaEventRecord(e0); for(int r=0;r<30;++r) cudaMemcpyAsync(c[r%NB],a[r%NB],n*16,cudaMemcpyDeviceToDevice); cudaEventRecord(e1); cudaEventSynchronize(e1);
    cudaEventElapsedTime(&ms,e0,e1); ms/=30; printf("%.4f ms %6.0f GB/s\n",ms,2.0*n*16/ms/1e6);}
  char nm[64];
  for(int bs: {128,256,512,1024}){
    int per; cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per,k_stride<2>,bs,0);
    for(int mult: {1,2,4}){
      snprintf(nm,64,"stride U2 b%d g=%dxres",bs,mult); long long g=(long long)sms*per*mult;
      timeit(nm,[&](int s){k_stride<2><<<g,bs>>>(a[s],b[s],c[s],n);}); }
    snprintf(nm,64,"stride U1 b%d g=res",bs); cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per,k_stride<1>,bs,0);
    { long long g=(long long)sms*per; timeit(nm,[&](int s){k_stride<1><<<g,bs>>>(a[s],b[s],c[s],n);}); }
    snprintf(nm,64,"stride U4 b%d g=res",bs); cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per,k_stride<4>,bs,0);
    { long long g=(long long)sms*per; timeit(nm,[&](int s){k_stride<4><<<g,bs>>>(a[s],b[s],c[s],n);}); }
    for(int U: {1,2,4}){
      snprintf(nm,64,"chunk U%d b%d",U,bs); long long g=(n+(long long)bs*U-1)/((long long)bs*U);
      if(U==1) timeit(nm,[&](int s){k_chunk<1><<<g,bs>>>(a[s],b[s],c[s],n);});
      if(U==2) timeit(nm,[&](int s){k_chunk<2><<<g,bs>>>(a[s],b[s],c[s],n);});
      if(U==4) timeit(nm,[&](int s){k_chunk<4><<<g,bs>>>(a[s],b[s],c[s],n);});
      snprintf(nm,64,"chunk-nohint U%d b%d",U,bs);
      if(U==1) timeit(nm,[&](int s){k_chunk_nohint<1><<<g,bs>>>(a[s],b[s],c[s],n);});
      if(U==2) timeit(nm,[&](int s){k_chunk_nohint<2><<<g,bs>>>(a[s],b[s],c[s],n);});
      if(U==4) timeit(nm,[&](int s){k_chunk_nohint<4><<<g,bs>>>(a[s],b[s],c[s],n);});
    }
  }
  return 0;
}

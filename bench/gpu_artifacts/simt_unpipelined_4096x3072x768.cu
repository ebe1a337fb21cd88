
#ifdef __CUDACC_RTC__
  #include <cuda/std/cstdint>
  using cuda::std::uint8_t;
  using cuda::std::uint16_t;
  using cuda::std::uint32_t;
  using cuda::std::uint64_t;
  using cuda::std::int8_t;
  using cuda::std::int16_t;
  using cuda::std::int32_t;
  using cuda::std::int64_t;

  #include <cuda/std/type_traits>
  namespace std {
    using cuda::std::is_same;
    using cuda::std::is_same_v;
    using cuda::std::is_integral;
    using cuda::std::is_signed;
    using cuda::std::is_unsigned;
    using cuda::std::is_floating_point;
    using cuda::std::enable_if;
    using cuda::std::conditional;
  }

  // NVRTC uses asm/volatile instead of __asm__/__volatile__ (gcc extension).
  #ifndef __asm__
  #define __asm__ asm
  #endif
  #ifndef __volatile__
  #define __volatile__ volatile
  #endif
#else
  #include <cstdint>
  #include <type_traits>
  #include <cuda.h>
#endif

#if (((__CUDACC_VER_MAJOR__ == 11) && (__CUDACC_VER_MINOR__ >= 4)) || \
     (__CUDACC_VER_MAJOR__ > 11))
#define TVM_ENABLE_L2_PREFETCH 1
#else
#define TVM_ENABLE_L2_PREFETCH 0
#endif

#ifdef _WIN32
  using uint = unsigned int;
  using uchar = unsigned char;
  using ushort = unsigned short;
  using int64_t = long long;
  using uint64_t = unsigned long long;
#else
  #define uint unsigned int
  #define uchar unsigned char
  #define ushort unsigned short
#endif
extern "C" __global__ void __launch_bounds__(128) main_kernel(float* __restrict__ A_ptr, float* __restrict__ B_ptr, float* __restrict__ C_ptr);
extern "C" __global__ void __launch_bounds__(128) main_kernel(float* __restrict__ A_ptr, float* __restrict__ B_ptr, float* __restrict__ C_ptr) {
  alignas(64) float C_local_ptr[64];
  __shared__ alignas(64) float A_shared_ptr[4096];
  __shared__ alignas(64) float B_shared_ptr[2048];
  alignas(64) float A_shared_local_ptr[16];
  alignas(64) float B_shared_local_ptr[4];
  for (int i_2_init = 0; i_2_init < 16; ++i_2_init) {
    for (int j_2_init = 0; j_2_init < 4; ++j_2_init) {
      C_local_ptr[((i_2_init * 4) + j_2_init)] = 0x0p+0f/*0.000000e+00*/;
    }
  }
  int cse_v2 = (((int)threadIdx.x) * 4);
  int cse_v3 = (((int)blockIdx.x) * 64);
  for (int k_0 = 0; k_0 < 24; ++k_0) {
    int cse_v1 = (((int)threadIdx.y) * 64);
    __syncthreads();
    for (int ax0_ax1_fused_0 = 0; ax0_ax1_fused_0 < 8; ++ax0_ax1_fused_0) {
      *(float4*)(A_shared_ptr + (((ax0_ax1_fused_0 * 512) + (((int)threadIdx.y) * 64)) + (((int)threadIdx.x) * 4))) = *(float4*)(A_ptr + ((((((((int)blockIdx.y) * 98304) + (ax0_ax1_fused_0 * 12288)) + (((int)threadIdx.y) * 1536)) + ((((int)threadIdx.x) >> 3) * 768)) + (k_0 * 32)) + ((((int)threadIdx.x) & 7) * 4)));
    }
    for (int ax0_ax1_fused_0_1 = 0; ax0_ax1_fused_0_1 < 4; ++ax0_ax1_fused_0_1) {
      *(float4*)(B_shared_ptr + (((ax0_ax1_fused_0_1 * 512) + (((int)threadIdx.y) * 64)) + (((int)threadIdx.x) * 4))) = *(float4*)(B_ptr + (((((k_0 * 98304) + (ax0_ax1_fused_0_1 * 24576)) + (((int)threadIdx.y) * 3072)) + (((int)blockIdx.x) * 64)) + (((int)threadIdx.x) * 4)));
    }
    __syncthreads();
    for (int k_1 = 0; k_1 < 32; ++k_1) {
      for (int ax0 = 0; ax0 < 16; ++ax0) {
        A_shared_local_ptr[ax0] = A_shared_ptr[(((((int)threadIdx.y) * 512) + (ax0 * 32)) + k_1)];
      }
      for (int ax0_1 = 0; ax0_1 < 4; ++ax0_1) {
        B_shared_local_ptr[ax0_1] = B_shared_ptr[(((k_1 * 64) + (((int)threadIdx.x) * 4)) + ax0_1)];
      }
      for (int i_2 = 0; i_2 < 16; ++i_2) {
        for (int j_2 = 0; j_2 < 4; ++j_2) {
          int cse_v4 = ((i_2 * 4) + j_2);
          C_local_ptr[((i_2 * 4) + j_2)] = (C_local_ptr[((i_2 * 4) + j_2)] + (A_shared_local_ptr[i_2] * B_shared_local_ptr[j_2]));
        }
      }
    }
  }
  for (int ax0_2 = 0; ax0_2 < 16; ++ax0_2) {
    for (int ax1 = 0; ax1 < 4; ++ax1) {
      C_ptr[((((((((int)blockIdx.y) * 393216) + (((int)threadIdx.y) * 49152)) + (ax0_2 * 3072)) + (((int)blockIdx.x) * 64)) + (((int)threadIdx.x) * 4)) + ax1)] = C_local_ptr[((ax0_2 * 4) + ax1)];
    }
  }
}


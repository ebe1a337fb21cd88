
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
__forceinline__ __device__ void tvm_builtin_ptx_cp_async_wait_group_async_wait_group_0() {
  asm volatile("cp.async.wait_group 0;" :  :  : "memory");
}
__forceinline__ __device__ void tvm_builtin_ptx_cp_async_wait_group_async_wait_group_1() {
  asm volatile("cp.async.wait_group 1;" :  :  : "memory");
}
__forceinline__ __device__ void tvm_builtin_ptx_cp_async_wait_group_async_wait_group_2() {
  asm volatile("cp.async.wait_group 2;" :  :  : "memory");
}
__forceinline__ __device__ void tvm_builtin_ptx_cp_async_commit_group_async_commit_group() {
  asm volatile("cp.async.commit_group;" :  : );
}

__forceinline__ __device__ void ptx_cp_async_legacy_cg_16_4_4(void* dst, int dst_off, void* src, int src_off) {
  uint8_t* dst_p = (uint8_t*)dst + dst_off * 4;
  uint8_t* src_p = (uint8_t*)src + src_off * 4;
  unsigned int dst_addr = __cvta_generic_to_shared(dst_p);
  asm volatile("cp.async.cg.shared.global [%0], [%1], %2;"
    :: "r"(dst_addr), "l"(src_p), "n"(16));
}
extern "C" __global__ void __launch_bounds__(128) main_kernel(float* __restrict__ A_ptr, float* __restrict__ B_ptr, float* __restrict__ C_ptr);
extern "C" __global__ void __launch_bounds__(128) main_kernel(float* __restrict__ A_ptr, float* __restrict__ B_ptr, float* __restrict__ C_ptr) {
  extern __shared__ __align__(64) uchar buf_dyn_shmem_ptr[];
  alignas(64) float C_local_ptr[64];
  alignas(64) float A_shared_dyn_local_ptr[32];
  alignas(64) float B_shared_dyn_local_ptr[8];
  for (int i_2_init = 0; i_2_init < 16; ++i_2_init) {
    for (int j_2_init = 0; j_2_init < 4; ++j_2_init) {
      C_local_ptr[((i_2_init * 4) + j_2_init)] = 0x0p+0f/*0.000000e+00*/;
    }
  }
  int cse_v1 = (((int)blockIdx.y) * 98304);
  int cse_v2 = (((int)threadIdx.y) * 1536);
  int cse_v3 = (((int)threadIdx.y) * 64);
  int cse_v4 = (((int)threadIdx.x) * 4);
  int cse_v5 = (((int)threadIdx.y) * 768);
  int cse_v6 = (((int)blockIdx.x) * 64);
  int cse_v12 = ((((int)threadIdx.x) >> 3) * 768);
  int cse_v13 = ((((int)threadIdx.x) & 7) * 4);
  for (int ax0_ax1_fused_0 = 0; ax0_ax1_fused_0 < 8; ++ax0_ax1_fused_0) {
    ptx_cp_async_legacy_cg_16_4_4(buf_dyn_shmem_ptr, ((((ax0_ax1_fused_0 * 512) + (((int)threadIdx.y) * 64)) + (((int)threadIdx.x) * 4)) + 6144), A_ptr, (((((((int)blockIdx.y) * 98304) + (ax0_ax1_fused_0 * 12288)) + (((int)threadIdx.y) * 1536)) + ((((int)threadIdx.x) >> 3) * 768)) + ((((int)threadIdx.x) & 7) * 4)));
  }
  for (int ax0_ax1_fused_0_1 = 0; ax0_ax1_fused_0_1 < 4; ++ax0_ax1_fused_0_1) {
    ptx_cp_async_legacy_cg_16_4_4(buf_dyn_shmem_ptr, (((ax0_ax1_fused_0_1 * 512) + (((int)threadIdx.y) * 64)) + (((int)threadIdx.x) * 4)), B_ptr, ((((ax0_ax1_fused_0_1 * 6144) + (((int)threadIdx.y) * 768)) + (((int)blockIdx.x) * 64)) + (((int)threadIdx.x) * 4)));
  }
  tvm_builtin_ptx_cp_async_commit_group_async_commit_group();
  for (int ax0_ax1_fused_0_2 = 0; ax0_ax1_fused_0_2 < 8; ++ax0_ax1_fused_0_2) {
    ptx_cp_async_legacy_cg_16_4_4(buf_dyn_shmem_ptr, ((((ax0_ax1_fused_0_2 * 512) + (((int)threadIdx.y) * 64)) + (((int)threadIdx.x) * 4)) + 10240), A_ptr, ((((((((int)blockIdx.y) * 98304) + (ax0_ax1_fused_0_2 * 12288)) + (((int)threadIdx.y) * 1536)) + ((((int)threadIdx.x) >> 3) * 768)) + ((((int)threadIdx.x) & 7) * 4)) + 32));
  }
  for (int ax0_ax1_fused_0_3 = 0; ax0_ax1_fused_0_3 < 4; ++ax0_ax1_fused_0_3) {
    ptx_cp_async_legacy_cg_16_4_4(buf_dyn_shmem_ptr, ((((ax0_ax1_fused_0_3 * 512) + (((int)threadIdx.y) * 64)) + (((int)threadIdx.x) * 4)) + 2048), B_ptr, (((((ax0_ax1_fused_0_3 * 6144) + (((int)threadIdx.y) * 768)) + (((int)blockIdx.x) * 64)) + (((int)threadIdx.x) * 4)) + 24576));
  }
  tvm_builtin_ptx_cp_async_commit_group_async_commit_group();
  int cse_v8 = (((int)threadIdx.y) * 512);
  for (int k_0 = 0; k_0 < 22; ++k_0) {
    int cse_v14 = ((k_0 + 2) % 3);
    __syncthreads();
    for (int ax0_ax1_fused_0_4 = 0; ax0_ax1_fused_0_4 < 8; ++ax0_ax1_fused_0_4) {
      ptx_cp_async_legacy_cg_16_4_4(buf_dyn_shmem_ptr, (((((((k_0 + 2) % 3) * 4096) + (ax0_ax1_fused_0_4 * 512)) + (((int)threadIdx.y) * 64)) + (((int)threadIdx.x) * 4)) + 6144), A_ptr, (((((((((int)blockIdx.y) * 98304) + (ax0_ax1_fused_0_4 * 12288)) + (((int)threadIdx.y) * 1536)) + ((((int)threadIdx.x) >> 3) * 768)) + (k_0 * 32)) + ((((int)threadIdx.x) & 7) * 4)) + 64));
    }
    for (int ax0_ax1_fused_0_5 = 0; ax0_ax1_fused_0_5 < 4; ++ax0_ax1_fused_0_5) {
      ptx_cp_async_legacy_cg_16_4_4(buf_dyn_shmem_ptr, ((((((k_0 + 2) % 3) * 2048) + (ax0_ax1_fused_0_5 * 512)) + (((int)threadIdx.y) * 64)) + (((int)threadIdx.x) * 4)), B_ptr, ((((((k_0 * 24576) + (ax0_ax1_fused_0_5 * 6144)) + (((int)threadIdx.y) * 768)) + (((int)blockIdx.x) * 64)) + (((int)threadIdx.x) * 4)) + 49152));
    }
    tvm_builtin_ptx_cp_async_commit_group_async_commit_group();
    int cse_v7 = (k_0 % 3);
    int cse_v15 = ((k_0 % 3) * 2048);
    int cse_v25 = (((k_0 % 3) * 4096) + (((int)threadIdx.y) * 512));
    tvm_builtin_ptx_cp_async_wait_group_async_wait_group_2();
    __syncthreads();
    for (int ax0 = 0; ax0 < 16; ++ax0) {
      A_shared_dyn_local_ptr[ax0] = ((float*)buf_dyn_shmem_ptr)[(((((k_0 % 3) * 4096) + (((int)threadIdx.y) * 512)) + (ax0 * 32)) + 6144)];
    }
    for (int ax0_1 = 0; ax0_1 < 4; ++ax0_1) {
      B_shared_dyn_local_ptr[ax0_1] = ((float*)buf_dyn_shmem_ptr)[((((k_0 % 3) * 2048) + (((int)threadIdx.x) * 4)) + ax0_1)];
    }
    for (int k_1 = 0; k_1 < 31; ++k_1) {
      int cse_v16 = ((k_1 + 1) & 1);
      for (int ax0_2 = 0; ax0_2 < 16; ++ax0_2) {
        A_shared_dyn_local_ptr[((((k_1 + 1) & 1) * 16) + ax0_2)] = ((float*)buf_dyn_shmem_ptr)[((((((k_0 % 3) * 4096) + (((int)threadIdx.y) * 512)) + (ax0_2 * 32)) + k_1) + 6145)];
      }
      for (int ax0_3 = 0; ax0_3 < 4; ++ax0_3) {
        B_shared_dyn_local_ptr[((((k_1 + 1) & 1) * 4) + ax0_3)] = ((float*)buf_dyn_shmem_ptr)[((((((k_0 % 3) * 2048) + (k_1 * 64)) + (((int)threadIdx.x) * 4)) + ax0_3) + 64)];
      }
      for (int i_2 = 0; i_2 < 16; ++i_2) {
        for (int j_2 = 0; j_2 < 4; ++j_2) {
          int cse_v9 = (k_1 & 1);
          int cse_v17 = ((i_2 * 4) + j_2);
          C_local_ptr[((i_2 * 4) + j_2)] = (C_local_ptr[((i_2 * 4) + j_2)] + (A_shared_dyn_local_ptr[(((k_1 & 1) * 16) + i_2)] * B_shared_dyn_local_ptr[(((k_1 & 1) * 4) + j_2)]));
        }
      }
    }
    for (int i_2_1 = 0; i_2_1 < 16; ++i_2_1) {
      for (int j_2_1 = 0; j_2_1 < 4; ++j_2_1) {
        int cse_v18 = ((i_2_1 * 4) + j_2_1);
        C_local_ptr[((i_2_1 * 4) + j_2_1)] = (C_local_ptr[((i_2_1 * 4) + j_2_1)] + (A_shared_dyn_local_ptr[(i_2_1 + 16)] * B_shared_dyn_local_ptr[(j_2_1 + 4)]));
      }
    }
  }
  tvm_builtin_ptx_cp_async_wait_group_async_wait_group_1();
  __syncthreads();
  for (int ax0_4 = 0; ax0_4 < 16; ++ax0_4) {
    A_shared_dyn_local_ptr[ax0_4] = ((float*)buf_dyn_shmem_ptr)[(((((int)threadIdx.y) * 512) + (ax0_4 * 32)) + 10240)];
  }
  for (int ax0_5 = 0; ax0_5 < 4; ++ax0_5) {
    B_shared_dyn_local_ptr[ax0_5] = ((float*)buf_dyn_shmem_ptr)[(((((int)threadIdx.x) * 4) + ax0_5) + 2048)];
  }
  for (int k_1_1 = 0; k_1_1 < 31; ++k_1_1) {
    int cse_v19 = ((k_1_1 + 1) & 1);
    for (int ax0_6 = 0; ax0_6 < 16; ++ax0_6) {
      A_shared_dyn_local_ptr[((((k_1_1 + 1) & 1) * 16) + ax0_6)] = ((float*)buf_dyn_shmem_ptr)[((((((int)threadIdx.y) * 512) + (ax0_6 * 32)) + k_1_1) + 10241)];
    }
    for (int ax0_7 = 0; ax0_7 < 4; ++ax0_7) {
      B_shared_dyn_local_ptr[((((k_1_1 + 1) & 1) * 4) + ax0_7)] = ((float*)buf_dyn_shmem_ptr)[((((k_1_1 * 64) + (((int)threadIdx.x) * 4)) + ax0_7) + 2112)];
    }
    for (int i_2_2 = 0; i_2_2 < 16; ++i_2_2) {
      for (int j_2_2 = 0; j_2_2 < 4; ++j_2_2) {
        int cse_v10 = (k_1_1 & 1);
        int cse_v20 = ((i_2_2 * 4) + j_2_2);
        C_local_ptr[((i_2_2 * 4) + j_2_2)] = (C_local_ptr[((i_2_2 * 4) + j_2_2)] + (A_shared_dyn_local_ptr[(((k_1_1 & 1) * 16) + i_2_2)] * B_shared_dyn_local_ptr[(((k_1_1 & 1) * 4) + j_2_2)]));
      }
    }
  }
  for (int i_2_3 = 0; i_2_3 < 16; ++i_2_3) {
    for (int j_2_3 = 0; j_2_3 < 4; ++j_2_3) {
      int cse_v21 = ((i_2_3 * 4) + j_2_3);
      C_local_ptr[((i_2_3 * 4) + j_2_3)] = (C_local_ptr[((i_2_3 * 4) + j_2_3)] + (A_shared_dyn_local_ptr[(i_2_3 + 16)] * B_shared_dyn_local_ptr[(j_2_3 + 4)]));
    }
  }
  tvm_builtin_ptx_cp_async_wait_group_async_wait_group_0();
  __syncthreads();
  for (int ax0_8 = 0; ax0_8 < 16; ++ax0_8) {
    A_shared_dyn_local_ptr[ax0_8] = ((float*)buf_dyn_shmem_ptr)[(((((int)threadIdx.y) * 512) + (ax0_8 * 32)) + 14336)];
  }
  for (int ax0_9 = 0; ax0_9 < 4; ++ax0_9) {
    B_shared_dyn_local_ptr[ax0_9] = ((float*)buf_dyn_shmem_ptr)[(((((int)threadIdx.x) * 4) + ax0_9) + 4096)];
  }
  for (int k_1_2 = 0; k_1_2 < 31; ++k_1_2) {
    int cse_v22 = ((k_1_2 + 1) & 1);
    for (int ax0_10 = 0; ax0_10 < 16; ++ax0_10) {
      A_shared_dyn_local_ptr[((((k_1_2 + 1) & 1) * 16) + ax0_10)] = ((float*)buf_dyn_shmem_ptr)[((((((int)threadIdx.y) * 512) + (ax0_10 * 32)) + k_1_2) + 14337)];
    }
    for (int ax0_11 = 0; ax0_11 < 4; ++ax0_11) {
      B_shared_dyn_local_ptr[((((k_1_2 + 1) & 1) * 4) + ax0_11)] = ((float*)buf_dyn_shmem_ptr)[((((k_1_2 * 64) + (((int)threadIdx.x) * 4)) + ax0_11) + 4160)];
    }
    for (int i_2_4 = 0; i_2_4 < 16; ++i_2_4) {
      for (int j_2_4 = 0; j_2_4 < 4; ++j_2_4) {
        int cse_v11 = (k_1_2 & 1);
        int cse_v23 = ((i_2_4 * 4) + j_2_4);
        C_local_ptr[((i_2_4 * 4) + j_2_4)] = (C_local_ptr[((i_2_4 * 4) + j_2_4)] + (A_shared_dyn_local_ptr[(((k_1_2 & 1) * 16) + i_2_4)] * B_shared_dyn_local_ptr[(((k_1_2 & 1) * 4) + j_2_4)]));
      }
    }
  }
  for (int i_2_5 = 0; i_2_5 < 16; ++i_2_5) {
    for (int j_2_5 = 0; j_2_5 < 4; ++j_2_5) {
      int cse_v24 = ((i_2_5 * 4) + j_2_5);
      C_local_ptr[((i_2_5 * 4) + j_2_5)] = (C_local_ptr[((i_2_5 * 4) + j_2_5)] + (A_shared_dyn_local_ptr[(i_2_5 + 16)] * B_shared_dyn_local_ptr[(j_2_5 + 4)]));
    }
  }
  for (int ax0_12 = 0; ax0_12 < 16; ++ax0_12) {
    for (int ax1 = 0; ax1 < 4; ++ax1) {
      C_ptr[((((((((int)blockIdx.y) * 98304) + (((int)threadIdx.y) * 12288)) + (ax0_12 * 768)) + (((int)blockIdx.x) * 64)) + (((int)threadIdx.x) * 4)) + ax1)] = C_local_ptr[((ax0_12 * 4) + ax1)];
    }
  }
}


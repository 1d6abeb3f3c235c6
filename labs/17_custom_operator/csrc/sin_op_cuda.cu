// The CUDA kernels of labops: the article's custom_kernel, fixed. Built only where torch has
// CUDA and nvcc is installed; sin_op.cpp declares the operators, this file adds their CUDA
// implementations (TORCH_LIBRARY_IMPL may appear in any number of files).
//
// What changed from the article's version, and why:
//   * the index is int64_t, in a grid-stride loop: `int n` overflows past 2^31 - 1 elements, and
//     a capped grid covers any n;
//   * n is numel(), not size(0): the article's kernel only touched the first row of a 2-D tensor;
//   * TORCH_CHECKs on device, dtype, and .contiguous(): data_ptr walks memory, not the view;
//   * the launch goes on PyTorch's current stream, not the default stream, so it is ordered with
//     the work around it, and C10_CUDA_KERNEL_LAUNCH_CHECK reports a failed launch at once;
//   * float32 and float64 both (gradcheck needs float64), through AT_DISPATCH_FLOATING_TYPES.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>    // at::cuda::getCurrentCUDAStream
#include <c10/cuda/CUDAException.h>   // C10_CUDA_KERNEL_LAUNCH_CHECK
#include <c10/cuda/CUDAGuard.h>       // CUDAGuard: launch on the tensor's GPU
#include <torch/library.h>

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;  // the grid-stride loop covers the rest

template <typename T>
__device__ __forceinline__ T device_sin(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return sinf(v);
  } else {
    return sin(v);
  }
}

template <typename T>
__global__ void sin_kernel(const T* __restrict__ input, T* __restrict__ output, int64_t n) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    output[i] = device_sin(input[i]);
  }
}

template <typename T>
__global__ void sin_mul_add_kernel(const T* __restrict__ x, const T* __restrict__ y,
                                   const T* __restrict__ z, T* __restrict__ out, int64_t n) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    out[i] = device_sin(x[i]) * y[i] + z[i];
  }
}

int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

void check_cuda_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "labops: ", name, " must be a CUDA tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "labops: ", name, " must be float32 or float64, got ", t.scalar_type());
}

at::Tensor sin_cuda(const at::Tensor& x) {
  check_cuda_float(x, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor input = x.contiguous();
  at::Tensor output = at::empty(input.sizes(), input.options());
  const int64_t n = input.numel();
  if (n == 0) return output;  // a grid of 0 blocks is an invalid launch
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "labops::sin (CUDA)", [&] {
    sin_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
        input.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), n);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return output;
}

at::Tensor sin_mul_add_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& z) {
  check_cuda_float(x, "x");
  check_cuda_float(y, "y");
  check_cuda_float(z, "z");
  TORCH_CHECK(y.scalar_type() == x.scalar_type() && z.scalar_type() == x.scalar_type(),
              "labops::sin_mul_add: x, y and z must have one dtype");
  TORCH_CHECK(y.sizes() == x.sizes() && z.sizes() == x.sizes(),
              "labops::sin_mul_add: x, y and z must have one shape (no broadcasting)");
  TORCH_CHECK(y.device() == x.device() && z.device() == x.device(),
              "labops::sin_mul_add: x, y and z must be on one GPU");
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous(), yc = y.contiguous(), zc = z.contiguous();
  at::Tensor out = at::empty(xc.sizes(), xc.options());
  const int64_t n = xc.numel();
  if (n == 0) return out;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "labops::sin_mul_add (CUDA)", [&] {
    sin_mul_add_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
        xc.data_ptr<scalar_t>(), yc.data_ptr<scalar_t>(), zc.data_ptr<scalar_t>(),
        out.data_ptr<scalar_t>(), n);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(labops, CUDA, m) {
  m.impl("sin", &sin_cuda);
  m.impl("sin_mul_add", &sin_mul_add_cuda);
}

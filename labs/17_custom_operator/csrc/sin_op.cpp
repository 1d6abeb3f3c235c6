// labops: the article's sin kernel as a real PyTorch operator, and a fused sin(x) * y + z.
//
// TORCH_LIBRARY declares the operators (their schemas) once; TORCH_LIBRARY_IMPL gives each a
// kernel per device. Python finds them as torch.ops.labops.sin and torch.ops.labops.sin_mul_add:
// no pybind11 module is needed, which is also why the narrow headers below are enough.
#include <cmath>
#include <cstdint>

#include <ATen/ATen.h>       // at::Tensor, at::empty, AT_DISPATCH_FLOATING_TYPES
#include <ATen/Parallel.h>   // at::parallel_for: ATen's own thread pool
#include <torch/library.h>   // TORCH_LIBRARY, TORCH_LIBRARY_IMPL

namespace {

// Tasks of at least this many elements: a small tensor stays on one thread.
constexpr int64_t kGrain = 32768;

void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "labops: ", name, " must be float32 or float64, got ", t.scalar_type());
}

// The article's kernel on the CPU: one sin per element. Each task of the thread pool takes a
// range [begin, end), as each CUDA block takes 256 elements. The index is int64_t: the
// article's `int n` overflows past 2^31 - 1 elements.
template <typename T>
void sin_loop(const T* in, T* out, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) out[i] = std::sin(in[i]);
}

// The fused op: one pass over memory where eager PyTorch makes three (sin, mul, add), each
// writing a temporary tensor. `omp simd` asks the compiler to vectorise this loop; with
// -ffast-math, GCC calls glibc's vector sin (libmvec) for it.
template <typename T>
void sin_mul_add_loop(const T* x, const T* y, const T* z, T* out, int64_t begin, int64_t end) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) out[i] = std::sin(x[i]) * y[i] + z[i];
}

at::Tensor sin_cpu(const at::Tensor& x) {
  check_float(x, "x");
  const at::Tensor in = x.contiguous();  // the loop walks memory in order: a transposed view would not be
  // a fresh, contiguous result of x's shape: the fake kernel (in Python) must promise exactly this
  at::Tensor out = at::empty(in.sizes(), in.options());
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "labops::sin", [&] {
    const scalar_t* src = in.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    at::parallel_for(0, in.numel(), kGrain,
                     [&](int64_t begin, int64_t end) { sin_loop(src, dst, begin, end); });
  });
  return out;
}

at::Tensor sin_mul_add_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& z) {
  check_float(x, "x");
  TORCH_CHECK(y.scalar_type() == x.scalar_type() && z.scalar_type() == x.scalar_type(),
              "labops::sin_mul_add: x, y and z must have one dtype, got ", x.scalar_type(), ", ",
              y.scalar_type(), ", ", z.scalar_type());
  TORCH_CHECK(y.sizes() == x.sizes() && z.sizes() == x.sizes(),
              "labops::sin_mul_add: x, y and z must have one shape (no broadcasting), got ",
              x.sizes(), ", ", y.sizes(), ", ", z.sizes());
  TORCH_CHECK(y.device().is_cpu() && z.device().is_cpu(),
              "labops::sin_mul_add: x, y and z must all be on the CPU");
  const at::Tensor xc = x.contiguous(), yc = y.contiguous(), zc = z.contiguous();
  at::Tensor out = at::empty(xc.sizes(), xc.options());
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "labops::sin_mul_add", [&] {
    const scalar_t* a = xc.data_ptr<scalar_t>();
    const scalar_t* b = yc.data_ptr<scalar_t>();
    const scalar_t* c = zc.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    at::parallel_for(0, xc.numel(), kGrain, [&](int64_t begin, int64_t end) {
      sin_mul_add_loop(a, b, c, dst, begin, end);
    });
  });
  return out;
}

}  // namespace

// The schemas: what the operators take and return. "Tensor" (no "(a!)") promises that no
// input is modified and the result is new memory; torch.library.opcheck tests that promise.
TORCH_LIBRARY(labops, m) {
  m.def("sin(Tensor x) -> Tensor");
  m.def("sin_mul_add(Tensor x, Tensor y, Tensor z) -> Tensor");
}

TORCH_LIBRARY_IMPL(labops, CPU, m) {
  m.impl("sin", &sin_cpu);
  m.impl("sin_mul_add", &sin_mul_add_cpu);
}

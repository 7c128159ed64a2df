// Training-mode batch normalisation fused with its residual add and ReLU, forward and
// backward, for XLA:CPU through the XLA FFI (float32, channels last).
//
//   y = relu?((x - mean) / sqrt(var + eps) * scale + bias + residual?)
//
// statistics over all positions of each of `groups` consecutive slices of the batch (ghost
// batches; 1 = the whole batch). XLA:CPU fuses the same arithmetic into elementwise loops, but
// it recomputes a residual stream's whole chain of adds in every block (each fusion re-reads
// the earlier blocks' convolution outputs) and runs the per-channel reductions as separate
// passes; here each direction is two or three passes over the tensor, as in PyTorch.
//
// Sums run over blocks of rows in float and across blocks in double, split over OpenMP
// threads in a fixed order: results do not depend on timing.
//
// Built into the same library as onednn_conv.cc by `python -m cnn_history.onednn`.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <omp.h>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// The tensor is walked as a flat array in tiles of kTile channels-last rows' worth of values
// (a multiple of C, at least 256 floats): per-channel constants are tiled to that width once,
// and every inner loop is a long contiguous one the compiler vectorises, whatever C is.
int64_t TileWidth(int64_t c) { return c * ((255 + c) / c); }
constexpr int64_t kTilesPerBlock = 16;  // float partial sums span at most this many tiles

// Hot loops, compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CNN_HISTORY_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CNN_HISTORY_CLONES
#endif

CNN_HISTORY_CLONES void AddTile(const float* __restrict x, float* __restrict acc, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
}

CNN_HISTORY_CLONES void AddSquaredDeviationTile(const float* __restrict x,
                                                const float* __restrict mu,
                                                float* __restrict acc, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float d = x[i] - mu[i];
    acc[i] += d * d;
  }
}

CNN_HISTORY_CLONES void NormaliseTile(const float* __restrict x, const float* __restrict a,
                                      const float* __restrict b, const float* __restrict r,
                                      float* __restrict y, int64_t n, bool relu) {
  if (r) {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * a[i] + b[i] + r[i];
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * a[i] + b[i];
  }
  if (relu) {
    for (int64_t i = 0; i < n; ++i) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
  }
}

// The gradient g at the normalised output (dy where y > 0 with ReLU) and g * (x - mean).
CNN_HISTORY_CLONES void GradientSumsTile(const float* __restrict dy, const float* __restrict y,
                                         const float* __restrict x,
                                         const float* __restrict mu, float* __restrict acc_g,
                                         float* __restrict acc_gx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = (y == nullptr || y[i] > 0.0f) ? dy[i] : 0.0f;
    acc_g[i] += g;
    acc_gx[i] += g * (x[i] - mu[i]);
  }
}

// dx = k_g * g - k_mean - k_x * (x - mean); the residual's gradient is g.
CNN_HISTORY_CLONES void InputGradientTile(const float* __restrict dy, const float* __restrict y,
                                          const float* __restrict x,
                                          const float* __restrict mu,
                                          const float* __restrict k_g,
                                          const float* __restrict k_mean,
                                          const float* __restrict k_x, float* __restrict dx,
                                          float* __restrict dr, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = (y == nullptr || y[i] > 0.0f) ? dy[i] : 0.0f;
    dx[i] = k_g[i] * g - k_mean[i] - k_x[i] * (x[i] - mu[i]);
  }
  if (dr) {
    for (int64_t i = 0; i < n; ++i) dr[i] = (y == nullptr || y[i] > 0.0f) ? dy[i] : 0.0f;
  }
}

// Per-channel constants repeated to the tile width.
std::vector<float> Tiled(const std::vector<float>& per_channel, int64_t width) {
  std::vector<float> out(width);
  const int64_t c = per_channel.size();
  for (int64_t i = 0; i < width; ++i) out[i] = per_channel[i % c];
  return out;
}

// Sums over a flat array of n values (a multiple of c) into K per-channel totals (K*c doubles):
// `add_tile(offset, length, acc)` adds the tile at `offset` into K accumulators of the tile
// width (acc, acc + width, ...). Partial sums are float within a block of tiles and double
// across blocks; threads take fixed blocks and are combined in order (deterministic).
template <int K, typename AddTileFn>
void ChannelSums(int64_t n, int64_t c, AddTileFn add_tile, double* out) {
  const int64_t width = TileWidth(c);
  const int64_t tiles = (n + width - 1) / width;
  const int64_t blocks = (tiles + kTilesPerBlock - 1) / kTilesPerBlock;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(
      omp_get_max_threads(), blocks)));
  std::vector<double> partial(static_cast<size_t>(threads) * K * width, 0.0);
#pragma omp parallel num_threads(threads)
  {
    double* mine = partial.data() + static_cast<size_t>(omp_get_thread_num()) * K * width;
    std::vector<float> block(K * width);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      std::fill(block.begin(), block.end(), 0.0f);
      const int64_t first = b * kTilesPerBlock * width;
      const int64_t last = std::min(n, first + kTilesPerBlock * width);
      for (int64_t at = first; at < last; at += width) {
        add_tile(at, std::min(width, last - at), block.data());
      }
      for (int64_t j = 0; j < K * width; ++j) mine[j] += block[j];
    }
  }
  std::fill(out, out + K * c, 0.0);
  for (int t = 0; t < threads; ++t) {
    for (int k = 0; k < K; ++k) {
      const double* p = partial.data() + (static_cast<size_t>(t) * K + k) * width;
      for (int64_t i = 0; i < width; ++i) out[k * c + i % c] += p[i];
    }
  }
}

// Runs `tile(offset, length)` over the tiles of a flat array of n values, split over threads.
template <typename TileFn>
void ForEachTile(int64_t n, int64_t c, TileFn tile) {
  const int64_t width = TileWidth(c);
  const int64_t tiles = (n + width - 1) / width;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tiles; ++t) tile(t * width, std::min(width, n - t * width));
}

struct Geometry {
  int64_t groups, m, c;  // groups of m rows of c channels
};

ffi::Error Check(const char* pass, ffi::Span<const int64_t> dims, int64_t groups,
                 Geometry* g) {
  if (dims.size() < 2 || groups < 1 || dims[0] % groups) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      std::string("cnn_history batch norm ") + pass +
                          ": the batch does not split into the given groups");
  }
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < dims.size(); ++i) rows *= dims[i];
  *g = {groups, rows / groups, dims.back()};
  return ffi::Error::Success();
}

// x, scale, bias, residual (empty: none) -> y, mean [groups, c], var [groups, c] (biased).
ffi::Error ForwardImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale,
                       ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> residual,
                       ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::F32> mean_out,
                       ffi::ResultBuffer<ffi::F32> var_out, int64_t groups, float epsilon,
                       int64_t relu) {
  Geometry g;
  if (auto e = Check("forward", x.dimensions(), groups, &g); !e.success()) return e;
  const int64_t c = g.c, n = g.m * c;
  const bool has_residual = residual.element_count() != 0;
  if (has_residual && residual.element_count() != x.element_count()) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "cnn_history batch norm forward: the residual's shape differs from x's");
  }
  std::vector<double> sums(c);
  std::vector<float> mu(c), a(c), b(c);
  for (int64_t group = 0; group < g.groups; ++group) {
    const float* xs = x.typed_data() + group * n;
    const float* rs = has_residual ? residual.typed_data() + group * n : nullptr;
    float* ys = y->typed_data() + group * n;
    ChannelSums<1>(n, c, [&](int64_t at, int64_t len, float* acc) {
      AddTile(xs + at, acc, len);
    }, sums.data());
    for (int64_t j = 0; j < c; ++j) mu[j] = static_cast<float>(sums[j] / g.m);
    const std::vector<float> mu_t = Tiled(mu, TileWidth(c));
    ChannelSums<1>(n, c, [&](int64_t at, int64_t len, float* acc) {
      AddSquaredDeviationTile(xs + at, mu_t.data(), acc, len);
    }, sums.data());
    for (int64_t j = 0; j < c; ++j) {
      const float var = static_cast<float>(sums[j] / g.m);
      mean_out->typed_data()[group * c + j] = mu[j];
      var_out->typed_data()[group * c + j] = var;
      a[j] = scale.typed_data()[j] / std::sqrt(var + epsilon);
      b[j] = bias.typed_data()[j] - mu[j] * a[j];
    }
    const std::vector<float> a_t = Tiled(a, TileWidth(c)), b_t = Tiled(b, TileWidth(c));
    ForEachTile(n, c, [&](int64_t at, int64_t len) {
      NormaliseTile(xs + at, a_t.data(), b_t.data(), rs ? rs + at : nullptr, ys + at, len,
                    relu != 0);
    });
  }
  return ffi::Error::Success();
}

// dy, x, y (read for the ReLU's mask; empty without ReLU), mean, var, scale -> dx, dscale,
// dbias, dresidual (empty without a residual: the gradient reaching the add).
ffi::Error BackwardImpl(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> x,
                        ffi::Buffer<ffi::F32> y, ffi::Buffer<ffi::F32> mean,
                        ffi::Buffer<ffi::F32> var, ffi::Buffer<ffi::F32> scale,
                        ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> dscale,
                        ffi::ResultBuffer<ffi::F32> dbias,
                        ffi::ResultBuffer<ffi::F32> dresidual, int64_t groups, float epsilon,
                        int64_t relu) {
  Geometry g;
  if (auto e = Check("backward", x.dimensions(), groups, &g); !e.success()) return e;
  const int64_t c = g.c, n = g.m * c, width = TileWidth(c);
  const bool has_residual = dresidual->element_count() != 0;
  if ((has_residual && dresidual->element_count() != x.element_count()) ||
      dy.element_count() != x.element_count()) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "cnn_history batch norm backward: inconsistent shapes");
  }
  if (relu && y.element_count() != x.element_count()) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "cnn_history batch norm backward: the ReLU needs the forward output");
  }
  std::vector<double> sums(2 * c), dscale_sum(c, 0.0), dbias_sum(c, 0.0);
  std::vector<float> mu(c), k_g(c), k_mean(c), k_x(c);
  for (int64_t group = 0; group < g.groups; ++group) {
    const int64_t base = group * n;
    const float* dys = dy.typed_data() + base;
    const float* xs = x.typed_data() + base;
    const float* ys = relu ? y.typed_data() + base : nullptr;
    float* dxs = dx->typed_data() + base;
    float* drs = has_residual ? dresidual->typed_data() + base : nullptr;
    std::vector<float> rstd(c);
    for (int64_t j = 0; j < c; ++j) {
      mu[j] = mean.typed_data()[group * c + j];
      rstd[j] = 1.0f / std::sqrt(var.typed_data()[group * c + j] + epsilon);
    }
    const std::vector<float> mu_t = Tiled(mu, width);
    // sums[j]: the gradient at the normalised output; sums[c + j]: it times (x - mean).
    ChannelSums<2>(n, c, [&](int64_t at, int64_t len, float* acc) {
      GradientSumsTile(dys + at, ys ? ys + at : nullptr, xs + at, mu_t.data(), acc,
                       acc + width, len);
    }, sums.data());
    // dx = scale * rstd * (g - mean(g) - (x - mean) * rstd^2 * mean(g * (x - mean)))
    for (int64_t j = 0; j < c; ++j) {
      dbias_sum[j] += sums[j];
      dscale_sum[j] += sums[c + j] * rstd[j];
      k_g[j] = scale.typed_data()[j] * rstd[j];
      k_x[j] = static_cast<float>(k_g[j] * rstd[j] * rstd[j] * sums[c + j] / g.m);
      k_mean[j] = static_cast<float>(k_g[j] * sums[j] / g.m);
    }
    const std::vector<float> kg_t = Tiled(k_g, width), km_t = Tiled(k_mean, width),
                             kx_t = Tiled(k_x, width);
    ForEachTile(n, c, [&](int64_t at, int64_t len) {
      InputGradientTile(dys + at, ys ? ys + at : nullptr, xs + at, mu_t.data(), kg_t.data(),
                        km_t.data(), kx_t.data(), dxs + at, drs ? drs + at : nullptr, len);
    });
  }
  for (int64_t j = 0; j < c; ++j) {
    dscale->typed_data()[j] = static_cast<float>(dscale_sum[j]);
    dbias->typed_data()[j] = static_cast<float>(dbias_sum[j]);
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnHistoryBatchNormForward, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("groups")
                                  .Attr<float>("epsilon")
                                  .Attr<int64_t>("relu"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnHistoryBatchNormBackward, BackwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("groups")
                                  .Attr<float>("epsilon")
                                  .Attr<int64_t>("relu"));

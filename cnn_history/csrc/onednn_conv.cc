// The two gradients of a 2-D convolution (NHWC activations, HWIO kernel, float32) as oneDNN
// primitives, exposed to XLA:CPU through the XLA FFI. XLA:CPU's own lowering of these
// gradients is its slowest part of training (results/benchmarks/README.md); oneDNN is what
// PyTorch's CPU convolutions use. The forward pass stays XLA's (it fuses and is fast).
//
// Geometry attributes (all int64): strides (sh, sw), padding (pt, pb, pl, pr; non-negative),
// kernel dilation (dh, dw; 1 = none). The input and kernel shapes come from the buffers.
//
// Built by `python -m cnn_history.onednn` (scripts/setup.sh runs it); see that module.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dims = dnnl::memory::dims;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Shapes and geometry of one convolution: N, H, W, I, Ho, Wo, O, KH, KW, sh, sw, pt, pb, pl,
// pr, dh, dw.
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t>;

struct Descs {
  dnnl::memory::desc src, weights_user, dst;
  dims strides, dilates, pad_l, pad_r;
  dnnl::convolution_forward::primitive_desc forward;
};

Descs MakeDescs(const Key& k) {
  auto [n, h, w, i, ho, wo, o, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw] = k;
  Descs d;
  d.src = dnnl::memory::desc({n, i, h, w}, dt::f32, tag::nhwc);
  d.weights_user = dnnl::memory::desc({o, i, kh, kw}, dt::f32, tag::hwio);
  d.dst = dnnl::memory::desc({n, o, ho, wo}, dt::f32, tag::nhwc);
  d.strides = {sh, sw};
  d.dilates = {dh - 1, dw - 1};
  d.pad_l = {pt, pl};
  d.pad_r = {pb, pr};
  dnnl::memory::desc weights_any({o, i, kh, kw}, dt::f32, tag::any);
  d.forward = dnnl::convolution_forward::primitive_desc(
      dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                      dnnl::algorithm::convolution_direct, d.src, weights_any,
                                      d.dst, d.strides, d.dilates, d.pad_l, d.pad_r),
      Engine());
  return d;
}

struct Forward {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward primitive;
  dnnl::memory::desc weights_user;
  bool reorder_weights;
};

struct BackwardData {
  dnnl::convolution_backward_data::primitive_desc pd;
  dnnl::convolution_backward_data primitive;
  dnnl::memory::desc weights_user;
  bool reorder_weights;
};

struct BackwardWeights {
  dnnl::convolution_backward_weights::primitive_desc pd;
  dnnl::convolution_backward_weights primitive;
  dnnl::memory::desc weights_user;
  bool reorder_weights;
};

template <typename T>
class Cache {
 public:
  template <typename Make>
  std::shared_ptr<T> Get(const Key& key, Make make) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(key);
    if (it != entries_.end()) return it->second;
    auto made = std::make_shared<T>(make(key));
    entries_.emplace(key, made);
    return made;
  }

 private:
  std::mutex mu_;
  std::map<Key, std::shared_ptr<T>> entries_;
};

Forward MakeForward(const Key& key) {
  Descs d = MakeDescs(key);
  return {d.forward, dnnl::convolution_forward(d.forward), d.weights_user,
          d.forward.weights_desc() != d.weights_user};
}

BackwardData MakeBackwardData(const Key& key) {
  Descs d = MakeDescs(key);
  dnnl::memory::desc weights_any(d.weights_user.dims(), dt::f32, tag::any);
  auto pd = dnnl::convolution_backward_data::primitive_desc(
      dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_direct, d.src,
                                            weights_any, d.dst, d.strides, d.dilates, d.pad_l,
                                            d.pad_r),
      Engine(), d.forward);
  return {pd, dnnl::convolution_backward_data(pd), d.weights_user,
          pd.weights_desc() != d.weights_user};
}

BackwardWeights MakeBackwardWeights(const Key& key) {
  Descs d = MakeDescs(key);
  dnnl::memory::desc weights_any(d.weights_user.dims(), dt::f32, tag::any);
  auto pd = dnnl::convolution_backward_weights::primitive_desc(
      dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, d.src,
                                               weights_any, d.dst, d.strides, d.dilates,
                                               d.pad_l, d.pad_r),
      Engine(), d.forward);
  return {pd, dnnl::convolution_backward_weights(pd), d.weights_user,
          pd.diff_weights_desc() != d.weights_user};
}

Cache<Forward>& ForwardCache() {
  static auto* cache = new Cache<Forward>();
  return *cache;
}

Cache<BackwardData>& DataCache() {
  static auto* cache = new Cache<BackwardData>();
  return *cache;
}

Cache<BackwardWeights>& WeightsCache() {
  static auto* cache = new Cache<BackwardWeights>();
  return *cache;
}

ffi::Error Check(bool ok, const char* what) {
  return ok ? ffi::Error::Success() : ffi::Error(ffi::ErrorCode::kInvalidArgument, what);
}

// y[N,Ho,Wo,O] from x[N,H,W,I] and w[KH,KW,I,O].
ffi::Error ForwardImpl(ffi::Buffer<ffi::F32> x_buf, ffi::Buffer<ffi::F32> w,
                       ffi::ResultBuffer<ffi::F32> y_buf, int64_t sh, int64_t sw, int64_t pt,
                       int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw) {
  auto x = x_buf.dimensions(), k = w.dimensions(), y = y_buf->dimensions();
  if (auto e = Check(y.size() == 4 && k.size() == 4 && x.size() == 4 && k[3] == y[3] &&
                         k[2] == x[3] && x[0] == y[0],
                     "cnn_history oneDNN forward: inconsistent shapes");
      e.failure())
    return e;
  try {
    Key key{x[0], x[1], x[2], x[3], y[1], y[2], y[3], k[0], k[1], sh, sw, pt, pb, pl, pr, dh,
            dw};
    auto conv = ForwardCache().Get(key, MakeForward);
    auto& engine = Engine();
    dnnl::stream stream(engine);
    dnnl::memory weights(conv->weights_user, engine, w.typed_data());
    dnnl::memory src(conv->pd.src_desc(), engine, x_buf.typed_data());
    dnnl::memory dst(conv->pd.dst_desc(), engine, y_buf->typed_data());
    if (conv->reorder_weights) {
      dnnl::memory blocked(conv->pd.weights_desc(), engine);
      dnnl::reorder(weights, blocked).execute(stream, weights, blocked);
      weights = blocked;
    }
    conv->primitive.execute(stream, {{DNNL_ARG_SRC, src},
                                     {DNNL_ARG_WEIGHTS, weights},
                                     {DNNL_ARG_DST, dst}});
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      std::string("cnn_history oneDNN forward: ") + e.what());
  }
  return ffi::Error::Success();
}

// dx[N,H,W,I] from dy[N,Ho,Wo,O] and w[KH,KW,I,O].
ffi::Error BackwardDataImpl(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                            ffi::ResultBuffer<ffi::F32> dx, int64_t sh, int64_t sw, int64_t pt,
                            int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw) {
  auto y = dy.dimensions(), k = w.dimensions(), x = dx->dimensions();
  if (auto e = Check(y.size() == 4 && k.size() == 4 && x.size() == 4 && k[3] == y[3] &&
                         k[2] == x[3] && x[0] == y[0],
                     "cnn_history oneDNN backward-data: inconsistent shapes");
      e.failure())
    return e;
  try {
    Key key{x[0], x[1], x[2], x[3], y[1], y[2], y[3], k[0], k[1], sh, sw, pt, pb, pl, pr, dh,
            dw};
    auto conv = DataCache().Get(key, MakeBackwardData);
    auto& engine = Engine();
    dnnl::stream stream(engine);
    dnnl::memory weights(conv->weights_user, engine, w.typed_data());
    dnnl::memory diff_dst(conv->pd.diff_dst_desc(), engine, dy.typed_data());
    dnnl::memory diff_src(conv->pd.diff_src_desc(), engine, dx->typed_data());
    if (conv->reorder_weights) {
      dnnl::memory blocked(conv->pd.weights_desc(), engine);
      dnnl::reorder(weights, blocked).execute(stream, weights, blocked);
      weights = blocked;
    }
    conv->primitive.execute(stream, {{DNNL_ARG_DIFF_DST, diff_dst},
                                     {DNNL_ARG_WEIGHTS, weights},
                                     {DNNL_ARG_DIFF_SRC, diff_src}});
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      std::string("cnn_history oneDNN backward-data: ") + e.what());
  }
  return ffi::Error::Success();
}

// dw[KH,KW,I,O] from x[N,H,W,I] and dy[N,Ho,Wo,O].
ffi::Error BackwardWeightsImpl(ffi::Buffer<ffi::F32> x_buf, ffi::Buffer<ffi::F32> dy,
                               ffi::ResultBuffer<ffi::F32> dw_buf, int64_t sh, int64_t sw,
                               int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t dh,
                               int64_t dw) {
  auto x = x_buf.dimensions(), y = dy.dimensions(), k = dw_buf->dimensions();
  if (auto e = Check(y.size() == 4 && k.size() == 4 && x.size() == 4 && k[3] == y[3] &&
                         k[2] == x[3] && x[0] == y[0],
                     "cnn_history oneDNN backward-weights: inconsistent shapes");
      e.failure())
    return e;
  try {
    Key key{x[0], x[1], x[2], x[3], y[1], y[2], y[3], k[0], k[1], sh, sw, pt, pb, pl, pr, dh,
            dw};
    auto conv = WeightsCache().Get(key, MakeBackwardWeights);
    auto& engine = Engine();
    dnnl::stream stream(engine);
    dnnl::memory src(conv->pd.src_desc(), engine, x_buf.typed_data());
    dnnl::memory diff_dst(conv->pd.diff_dst_desc(), engine, dy.typed_data());
    dnnl::memory diff_weights(conv->weights_user, engine, dw_buf->typed_data());
    dnnl::memory target = diff_weights;
    if (conv->reorder_weights) target = dnnl::memory(conv->pd.diff_weights_desc(), engine);
    conv->primitive.execute(stream, {{DNNL_ARG_SRC, src},
                                     {DNNL_ARG_DIFF_DST, diff_dst},
                                     {DNNL_ARG_DIFF_WEIGHTS, target}});
    if (conv->reorder_weights)
      dnnl::reorder(target, diff_weights).execute(stream, target, diff_weights);
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      std::string("cnn_history oneDNN backward-weights: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

#define GEOMETRY_ATTRS                                                                    \
  .Attr<int64_t>("sh").Attr<int64_t>("sw").Attr<int64_t>("pt").Attr<int64_t>("pb")      \
      .Attr<int64_t>("pl").Attr<int64_t>("pr").Attr<int64_t>("dh").Attr<int64_t>("dw")

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnHistoryConvForward, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() GEOMETRY_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnHistoryConvBackwardData, BackwardDataImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() GEOMETRY_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnHistoryConvBackwardWeights, BackwardWeightsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() GEOMETRY_ATTRS);

// Which oneDNN implementation a backward pass would use (for the benchmarks' records).
extern "C" const char* CnnHistoryConvImplementation(int64_t which, const int64_t* g) {
  static thread_local std::string info;
  Key key{g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11], g[12],
          g[13], g[14], g[15], g[16]};
  try {
    if (which == 0) info = DataCache().Get(key, MakeBackwardData)->pd.impl_info_str();
    else if (which == 1) info = WeightsCache().Get(key, MakeBackwardWeights)->pd.impl_info_str();
    else info = ForwardCache().Get(key, MakeForward)->pd.impl_info_str();
  } catch (const dnnl::error& e) {
    info = std::string("error: ") + e.what();
  }
  return info.c_str();
}

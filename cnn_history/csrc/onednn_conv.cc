// A 2-D convolution (NHWC activations, HWIO kernel, float32) and its two gradients as oneDNN
// primitives, exposed to XLA:CPU through the XLA FFI. XLA:CPU's own lowering of the gradients
// was its slowest part of training, and its forward pass is slow at few channels
// (results/benchmarks/README.md); oneDNN is what PyTorch's CPU convolutions use.
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

// A primitive ready to run, with the user's kernel layout (HWIO) it reads or writes.
template <typename Primitive>
struct Prepared {
  typename Primitive::primitive_desc pd;
  Primitive primitive;
  dnnl::memory::desc weights_user;
};

using Forward = Prepared<dnnl::convolution_forward>;
using BackwardData = Prepared<dnnl::convolution_backward_data>;
using BackwardWeights = Prepared<dnnl::convolution_backward_weights>;

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
  return {d.forward, dnnl::convolution_forward(d.forward), d.weights_user};
}

BackwardData MakeBackwardData(const Key& key) {
  Descs d = MakeDescs(key);
  dnnl::memory::desc weights_any(d.weights_user.dims(), dt::f32, tag::any);
  auto pd = dnnl::convolution_backward_data::primitive_desc(
      dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_direct, d.src,
                                            weights_any, d.dst, d.strides, d.dilates, d.pad_l,
                                            d.pad_r),
      Engine(), d.forward);
  return {pd, dnnl::convolution_backward_data(pd), d.weights_user};
}

BackwardWeights MakeBackwardWeights(const Key& key) {
  Descs d = MakeDescs(key);
  dnnl::memory::desc weights_any(d.weights_user.dims(), dt::f32, tag::any);
  auto pd = dnnl::convolution_backward_weights::primitive_desc(
      dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, d.src,
                                               weights_any, d.dst, d.strides, d.dilates,
                                               d.pad_l, d.pad_r),
      Engine(), d.forward);
  return {pd, dnnl::convolution_backward_weights(pd), d.weights_user};
}

// The prepared primitives, one per convolution geometry (built on first use).
template <typename T>
Cache<T>& CacheOf() {
  static auto* cache = new Cache<T>();
  return *cache;
}

Cache<Forward>& ForwardCache() { return CacheOf<Forward>(); }
Cache<BackwardData>& DataCache() { return CacheOf<BackwardData>(); }
Cache<BackwardWeights>& WeightsCache() { return CacheOf<BackwardWeights>(); }

// Which buffer is which: activations x [N,H,W,I], outputs y [N,Ho,Wo,O], kernel k [KH,KW,I,O].
struct Shapes {
  ffi::Span<const int64_t> x, y, k;
};

// Checks the shapes, then runs `body` with the cache key of this convolution; oneDNN's errors
// come back to XLA as errors that name the pass.
template <typename Body>
ffi::Error Run(const char* pass, Shapes s, int64_t sh, int64_t sw, int64_t pt, int64_t pb,
               int64_t pl, int64_t pr, int64_t dh, int64_t dw, Body body) {
  if (s.x.size() != 4 || s.y.size() != 4 || s.k.size() != 4 || s.k[3] != s.y[3] ||
      s.k[2] != s.x[3] || s.x[0] != s.y[0]) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      std::string("cnn_history oneDNN ") + pass + ": inconsistent shapes");
  }
  try {
    body(Key{s.x[0], s.x[1], s.x[2], s.x[3], s.y[1], s.y[2], s.y[3], s.k[0], s.k[1], sh, sw, pt,
             pb, pl, pr, dh, dw});
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      std::string("cnn_history oneDNN ") + pass + ": " + e.what());
  }
  return ffi::Error::Success();
}

// The user's HWIO kernel in the layout the primitive wants (a reorder when they differ).
dnnl::memory KernelFor(const dnnl::memory::desc& wanted, const dnnl::memory::desc& user,
                       void* data, dnnl::stream& stream) {
  dnnl::memory given(user, Engine(), data);
  if (wanted == user) return given;
  dnnl::memory blocked(wanted, Engine());
  dnnl::reorder(given, blocked).execute(stream, given, blocked);
  return blocked;
}

#define GEOMETRY_ARGS                                                                     \
  int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t dh,     \
      int64_t dw
#define GEOMETRY sh, sw, pt, pb, pl, pr, dh, dw

// y from x and k.
ffi::Error ForwardImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                       ffi::ResultBuffer<ffi::F32> y, GEOMETRY_ARGS) {
  return Run("forward", {x.dimensions(), y->dimensions(), k.dimensions()}, GEOMETRY,
             [&](const Key& key) {
               auto conv = ForwardCache().Get(key, MakeForward);
               dnnl::stream stream(Engine());
               dnnl::memory kernel =
                   KernelFor(conv->pd.weights_desc(), conv->weights_user, k.typed_data(), stream);
               conv->primitive.execute(
                   stream, {{DNNL_ARG_SRC, {conv->pd.src_desc(), Engine(), x.typed_data()}},
                            {DNNL_ARG_WEIGHTS, kernel},
                            {DNNL_ARG_DST, {conv->pd.dst_desc(), Engine(), y->typed_data()}}});
               stream.wait();
             });
}

// dx from dy and k.
ffi::Error BackwardDataImpl(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> k,
                            ffi::ResultBuffer<ffi::F32> dx, GEOMETRY_ARGS) {
  return Run("backward-data", {dx->dimensions(), dy.dimensions(), k.dimensions()}, GEOMETRY,
             [&](const Key& key) {
               auto conv = DataCache().Get(key, MakeBackwardData);
               dnnl::stream stream(Engine());
               dnnl::memory kernel =
                   KernelFor(conv->pd.weights_desc(), conv->weights_user, k.typed_data(), stream);
               conv->primitive.execute(
                   stream,
                   {{DNNL_ARG_DIFF_DST, {conv->pd.diff_dst_desc(), Engine(), dy.typed_data()}},
                    {DNNL_ARG_WEIGHTS, kernel},
                    {DNNL_ARG_DIFF_SRC, {conv->pd.diff_src_desc(), Engine(), dx->typed_data()}}});
               stream.wait();
             });
}

// dk from x and dy.
ffi::Error BackwardWeightsImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                               ffi::ResultBuffer<ffi::F32> dk, GEOMETRY_ARGS) {
  return Run("backward-weights", {x.dimensions(), dy.dimensions(), dk->dimensions()}, GEOMETRY,
             [&](const Key& key) {
               auto conv = WeightsCache().Get(key, MakeBackwardWeights);
               dnnl::stream stream(Engine());
               dnnl::memory user(conv->weights_user, Engine(), dk->typed_data());
               bool reorder = conv->pd.diff_weights_desc() != conv->weights_user;
               dnnl::memory target =
                   reorder ? dnnl::memory(conv->pd.diff_weights_desc(), Engine()) : user;
               conv->primitive.execute(
                   stream,
                   {{DNNL_ARG_SRC, {conv->pd.src_desc(), Engine(), x.typed_data()}},
                    {DNNL_ARG_DIFF_DST, {conv->pd.diff_dst_desc(), Engine(), dy.typed_data()}},
                    {DNNL_ARG_DIFF_WEIGHTS, target}});
               if (reorder) dnnl::reorder(target, user).execute(stream, target, user);
               stream.wait();
             });
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

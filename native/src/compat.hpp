// Everything that differs between oneDNN 2.x and 3.x lives here, so the rest of the addon is
// version independent. 2.x builds primitive descriptors from an operation descriptor
// (`convolution_forward::desc` + engine); 3.x removed operation descriptors and takes the engine
// and all parameters in the primitive descriptor constructor. Memory descriptors expose their
// blocking through the C struct (`md.data`) in 2.x and through getters in 3.x.
//
// Only 2.6 is compiled here (what Debian ships); the 3.x branch follows the 3.x headers'
// documented signatures.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <cstdint>
#include <vector>

namespace tq {

using dnnl::memory;

/** The blocking structure of a memory descriptor, version independent. */
struct Blocking {
  bool blocked = false;  // format_kind == blocked (plain and blocked layouts)
  memory::dims dims;
  memory::dims paddedDims;
  memory::dims strides;       // strides of the outer blocks, in elements
  memory::dims innerBlocks;   // e.g. {16} for nChw16c
  memory::dims innerIndices;  // e.g. {1} for nChw16c (the channel dimension)
};

/** Convolution geometry shared by the forward and backward descriptors (spatial dims only). */
struct ConvGeometry {
  memory::dims strides;
  memory::dims padLeft;
  memory::dims padRight;
};

/** Pooling geometry (spatial dims only). */
struct PoolGeometry {
  memory::dims strides;
  memory::dims kernel;
  memory::dims padLeft;
  memory::dims padRight;
};

#if DNNL_VERSION_MAJOR >= 3

inline Blocking blockingOf(const memory::desc& md) {
  Blocking b;
  b.blocked = md.get_format_kind() == memory::format_kind::blocked;
  b.dims = md.get_dims();
  b.paddedDims = md.get_padded_dims();
  if (b.blocked) {
    b.strides = md.get_strides();
    b.innerBlocks = md.get_inner_blks();
    b.innerIndices = md.get_inner_idxs();
    b.innerBlocks.resize(md.get_inner_nblks());
    b.innerIndices.resize(md.get_inner_nblks());
  }
  return b;
}

inline dnnl::convolution_forward::primitive_desc makeConvForwardPd(const dnnl::engine& eng,
    dnnl::algorithm alg, const memory::desc& src, const memory::desc& weights, const memory::desc* bias,
    const memory::desc& dst, const ConvGeometry& g, const dnnl::primitive_attr& attr) {
  const auto prop = dnnl::prop_kind::forward_training;
  if (bias) {
    return dnnl::convolution_forward::primitive_desc(
        eng, prop, alg, src, weights, *bias, dst, g.strides, g.padLeft, g.padRight, attr);
  }
  return dnnl::convolution_forward::primitive_desc(
      eng, prop, alg, src, weights, dst, g.strides, g.padLeft, g.padRight, attr);
}

inline dnnl::convolution_backward_data::primitive_desc makeConvBackwardDataPd(
    const dnnl::engine& eng, dnnl::algorithm alg, const memory::desc& diffSrc, const memory::desc& weights,
    const memory::desc& diffDst, const ConvGeometry& g,
    const dnnl::convolution_forward::primitive_desc& hint, const dnnl::primitive_attr& attr) {
  return dnnl::convolution_backward_data::primitive_desc(eng, alg,
      diffSrc, weights, diffDst, g.strides, g.padLeft, g.padRight, hint, attr);
}

inline dnnl::convolution_backward_weights::primitive_desc makeConvBackwardWeightsPd(
    const dnnl::engine& eng, dnnl::algorithm alg, const memory::desc& src, const memory::desc& diffWeights,
    const memory::desc* diffBias, const memory::desc& diffDst, const ConvGeometry& g,
    const dnnl::convolution_forward::primitive_desc& hint, const dnnl::primitive_attr& attr) {
  if (diffBias) {
    return dnnl::convolution_backward_weights::primitive_desc(
        eng, alg, src, diffWeights, *diffBias, diffDst, g.strides, g.padLeft, g.padRight, hint, attr);
  }
  return dnnl::convolution_backward_weights::primitive_desc(
      eng, alg, src, diffWeights, diffDst, g.strides, g.padLeft, g.padRight, hint, attr);
}

inline dnnl::batch_normalization_forward::primitive_desc makeBatchNormForwardPd(
    const dnnl::engine& eng, dnnl::prop_kind prop, const memory::desc& data, float eps,
    dnnl::normalization_flags flags, const dnnl::primitive_attr& attr) {
  return dnnl::batch_normalization_forward::primitive_desc(eng, prop, data, data, eps, flags, attr);
}

inline dnnl::batch_normalization_backward::primitive_desc makeBatchNormBackwardPd(
    const dnnl::engine& eng, const memory::desc& data, float eps, dnnl::normalization_flags flags,
    const dnnl::batch_normalization_forward::primitive_desc& hint,
    const dnnl::primitive_attr& attr) {
  return dnnl::batch_normalization_backward::primitive_desc(eng, dnnl::prop_kind::backward, data,
      data, data, eps, flags, hint, attr);
}

inline dnnl::pooling_forward::primitive_desc makeAvgPoolForwardPd(const dnnl::engine& eng,
    const memory::desc& src, const memory::desc& dst, const PoolGeometry& g,
    const dnnl::primitive_attr& attr) {
  const memory::dims noDilation(g.kernel.size(), 0);
  return dnnl::pooling_forward::primitive_desc(eng, dnnl::prop_kind::forward_training,
      dnnl::algorithm::pooling_avg_include_padding, src, dst, g.strides, g.kernel, noDilation,
      g.padLeft, g.padRight, attr);
}

inline dnnl::pooling_backward::primitive_desc makeAvgPoolBackwardPd(const dnnl::engine& eng,
    const memory::desc& diffSrc, const memory::desc& diffDst, const PoolGeometry& g,
    const dnnl::pooling_forward::primitive_desc& hint, const dnnl::primitive_attr& attr) {
  const memory::dims noDilation(g.kernel.size(), 0);
  return dnnl::pooling_backward::primitive_desc(eng,
      dnnl::algorithm::pooling_avg_include_padding, diffSrc, diffDst, g.strides, g.kernel,
      noDilation, g.padLeft, g.padRight, hint, attr);
}

inline dnnl::matmul::primitive_desc makeMatmulPd(const dnnl::engine& eng, const memory::desc& src,
    const memory::desc& weights, const memory::desc* bias, const memory::desc& dst,
    const dnnl::primitive_attr& attr) {
  if (bias) return dnnl::matmul::primitive_desc(eng, src, weights, *bias, dst, attr);
  return dnnl::matmul::primitive_desc(eng, src, weights, dst, attr);
}

#else  // oneDNN 2.x

inline Blocking blockingOf(const memory::desc& md) {
  const dnnl_memory_desc_t& c = md.data;
  Blocking b;
  b.blocked = c.format_kind == dnnl_blocked;
  b.dims.assign(c.dims, c.dims + c.ndims);
  b.paddedDims.assign(c.padded_dims, c.padded_dims + c.ndims);
  if (b.blocked) {
    const dnnl_blocking_desc_t& bd = c.format_desc.blocking;
    b.strides.assign(bd.strides, bd.strides + c.ndims);
    b.innerBlocks.assign(bd.inner_blks, bd.inner_blks + bd.inner_nblks);
    b.innerIndices.assign(bd.inner_idxs, bd.inner_idxs + bd.inner_nblks);
  }
  return b;
}

inline dnnl::convolution_forward::primitive_desc makeConvForwardPd(const dnnl::engine& eng,
    dnnl::algorithm alg, const memory::desc& src, const memory::desc& weights, const memory::desc* bias,
    const memory::desc& dst, const ConvGeometry& g, const dnnl::primitive_attr& attr) {
  const auto prop = dnnl::prop_kind::forward_training;
  if (bias) {
    const dnnl::convolution_forward::desc d(
        prop, alg, src, weights, *bias, dst, g.strides, g.padLeft, g.padRight);
    return {d, attr, eng};
  }
  const dnnl::convolution_forward::desc d(
      prop, alg, src, weights, dst, g.strides, g.padLeft, g.padRight);
  return {d, attr, eng};
}

inline dnnl::convolution_backward_data::primitive_desc makeConvBackwardDataPd(
    const dnnl::engine& eng, dnnl::algorithm alg, const memory::desc& diffSrc, const memory::desc& weights,
    const memory::desc& diffDst, const ConvGeometry& g,
    const dnnl::convolution_forward::primitive_desc& hint, const dnnl::primitive_attr& attr) {
  const dnnl::convolution_backward_data::desc d(alg, diffSrc,
      weights, diffDst, g.strides, g.padLeft, g.padRight);
  return {d, attr, eng, hint};
}

inline dnnl::convolution_backward_weights::primitive_desc makeConvBackwardWeightsPd(
    const dnnl::engine& eng, dnnl::algorithm alg, const memory::desc& src, const memory::desc& diffWeights,
    const memory::desc* diffBias, const memory::desc& diffDst, const ConvGeometry& g,
    const dnnl::convolution_forward::primitive_desc& hint, const dnnl::primitive_attr& attr) {
  if (diffBias) {
    const dnnl::convolution_backward_weights::desc d(
        alg, src, diffWeights, *diffBias, diffDst, g.strides, g.padLeft, g.padRight);
    return {d, attr, eng, hint};
  }
  const dnnl::convolution_backward_weights::desc d(
      alg, src, diffWeights, diffDst, g.strides, g.padLeft, g.padRight);
  return {d, attr, eng, hint};
}

inline dnnl::batch_normalization_forward::primitive_desc makeBatchNormForwardPd(
    const dnnl::engine& eng, dnnl::prop_kind prop, const memory::desc& data, float eps,
    dnnl::normalization_flags flags, const dnnl::primitive_attr& attr) {
  const dnnl::batch_normalization_forward::desc d(prop, data, eps, flags);
  return {d, attr, eng};
}

inline dnnl::batch_normalization_backward::primitive_desc makeBatchNormBackwardPd(
    const dnnl::engine& eng, const memory::desc& data, float eps, dnnl::normalization_flags flags,
    const dnnl::batch_normalization_forward::primitive_desc& hint,
    const dnnl::primitive_attr& attr) {
  const dnnl::batch_normalization_backward::desc d(dnnl::prop_kind::backward, data, data, eps, flags);
  return {d, attr, eng, hint};
}

inline dnnl::pooling_forward::primitive_desc makeAvgPoolForwardPd(const dnnl::engine& eng,
    const memory::desc& src, const memory::desc& dst, const PoolGeometry& g,
    const dnnl::primitive_attr& attr) {
  const dnnl::pooling_forward::desc d(dnnl::prop_kind::forward_training,
      dnnl::algorithm::pooling_avg_include_padding, src, dst, g.strides, g.kernel, g.padLeft,
      g.padRight);
  return {d, attr, eng};
}

inline dnnl::pooling_backward::primitive_desc makeAvgPoolBackwardPd(const dnnl::engine& eng,
    const memory::desc& diffSrc, const memory::desc& diffDst, const PoolGeometry& g,
    const dnnl::pooling_forward::primitive_desc& hint, const dnnl::primitive_attr& attr) {
  const dnnl::pooling_backward::desc d(dnnl::algorithm::pooling_avg_include_padding, diffSrc,
      diffDst, g.strides, g.kernel, g.padLeft, g.padRight);
  return {d, attr, eng, hint};
}

inline dnnl::matmul::primitive_desc makeMatmulPd(const dnnl::engine& eng, const memory::desc& src,
    const memory::desc& weights, const memory::desc* bias, const memory::desc& dst,
    const dnnl::primitive_attr& attr) {
  if (bias) return {dnnl::matmul::desc(src, weights, *bias, dst), attr, eng};
  return {dnnl::matmul::desc(src, weights, dst), attr, eng};
}

#endif

}  // namespace tq

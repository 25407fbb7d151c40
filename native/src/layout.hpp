// Physical layouts: plain row-major versus oneDNN's blocked layouts (e.g. nChw16c, where the
// channels are split in blocks of 16 stored innermost), and the reorders between them.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "runtime.hpp"

namespace tq {

/** Row-major layout of a logical shape (rank 0 is stored as {1}). */
memory::desc plainDesc(const Shape& shape);

/** Row-major and unblocked (the layout `download` returns). */
bool isPlain(const memory::desc& md);

/** Whether a blocked layout pads some dimension (e.g. 10 channels stored as 16). */
bool hasPadding(const memory::desc& md);

/**
 * For a 2-D (N, C) or 4-D (N, C, H, W) layout that is N, channel blocks, H, W with an optional
 * innermost channel block: the block size (1 = plain). 0 for any other layout.
 */
int channelBlock(const memory::desc& md);

/** (N, C[, H, W]) stored as N, C/block, H, W, block (block 1 = plain). */
memory::desc activationDesc(const Shape& shape, int block);

/** The channel block a convolution picks for `channels` output channels (1 if it would pad). */
int preferredBlock(int64_t channels);

/** Whether each index of dimension 0 owns one contiguous, unpadded run of the buffer. */
bool dim0Contiguous(const memory::desc& md);

/** oneDNN-style layout name: "abcd" is plain NCHW, "aBcd16b" is nChw16c. */
std::string layoutName(const memory::desc& md);

/** Append an exact description of a layout to a cache key. */
void appendLayoutKey(std::vector<int64_t>& key, const memory::desc& md);

/** Copy between two layouts of the same logical shape (cached reorder primitive). */
void reorder(const dnnl::memory& src, const dnnl::memory& dst);

/** A copy of x in layout md. */
Tensor reordered(const Tensor& x, const memory::desc& md);

/** x itself if its layout is md, else a reordered copy owned by `holder`. */
const Tensor& inLayout(const Tensor& x, const memory::desc& md, std::optional<Tensor>& holder);

/** x itself if it is plain, else a plain copy owned by `holder`. */
const Tensor& asPlain(const Tensor& x, std::optional<Tensor>& holder);

/**
 * x itself if its layout has no padding (so elementwise kernels may run over the raw buffer),
 * else a plain copy owned by `holder`.
 */
const Tensor& asDense(const Tensor& x, std::optional<Tensor>& holder);

}  // namespace tq

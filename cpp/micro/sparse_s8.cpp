#include "sparse_s8.h"

tlm_status tlm_sparse_s8_check(const uint8_t* data, uint64_t available, int32_t rows, int32_t cols,
                               uint32_t* bytes, tlm_sparse_s8* view) {
  if (rows < 1 || cols < 1 || cols > TLM_SPARSE_MAX_COLS || available < 4)
    return TLM_ERR_BAD_TENSOR;
  const uint32_t n = uint32_t(data[0]) | uint32_t(data[1]) << 8 | uint32_t(data[2]) << 16 |
                     uint32_t(data[3]) << 24;
  // At most one entry per position of every row (positions strictly increase).
  if (uint64_t{n} > uint64_t(rows) * uint64_t(cols)) return TLM_ERR_BAD_TENSOR;
  const uint64_t total = tlm_sparse_s8_bytes(uint64_t(rows), n);
  if (total > available) return TLM_ERR_BAD_TENSOR;
  const tlm_sparse_s8 s = tlm_sparse_s8_view(data, rows, cols);
  uint64_t seen = 0;
  for (int32_t r = 0; r < rows; ++r) {
    const uint32_t c = s.counts[r];
    if (c > uint32_t(cols) || seen + c > n) return TLM_ERR_BAD_TENSOR;
    int64_t pos = -1;
    for (uint32_t j = 0; j < c; ++j) pos += int64_t{s.steps[seen + j]} + 1;
    if (pos >= cols) return TLM_ERR_BAD_TENSOR;
    seen += c;
  }
  if (seen != n) return TLM_ERR_BAD_TENSOR;
  if (bytes) *bytes = static_cast<uint32_t>(total);
  if (view) *view = s;
  return TLM_OK;
}

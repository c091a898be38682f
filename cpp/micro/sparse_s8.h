// Sparse int8 weights (format.h, TLM_TYPE_INT8_SPARSE): the encoding's sections and its check.
#ifndef TINYLEARN_MICRO_SPARSE_S8_H
#define TINYLEARN_MICRO_SPARSE_S8_H

#include <stddef.h>
#include <stdint.h>

#include "tinylearn/micro/micro.h"

// Largest row (weights per output channel) the u16 counts can describe.
#define TLM_SPARSE_MAX_COLS 65535

// An encoding's sections, read in place: row r's entries follow those of rows 0..r-1.
typedef struct tlm_sparse_s8 {
  int32_t rows, cols;
  uint32_t entries;         // n
  const uint16_t* counts;   // [rows]
  const uint8_t* steps;     // [n]
  const int8_t* values;     // [n]
} tlm_sparse_s8;

// Bytes of an encoding of `rows` rows and `entries` entries (format.h).
inline uint64_t tlm_sparse_s8_bytes(uint64_t rows, uint64_t entries) {
  return 4 + ((2 * rows + 3) & ~uint64_t{3}) + 2 * ((entries + 3) & ~uint64_t{3});
}

// Checks the encoding at `data` (4-byte aligned), of which `available` bytes may be read, for a
// rows x cols tensor: TLM_OK and its byte count in *bytes and its sections in *view (either may
// be null), or TLM_ERR_BAD_TENSOR (outside `available`, counts not adding up to n, a position
// reaching cols, cols outside [1, TLM_SPARSE_MAX_COLS]). Reads nothing past `available`.
tlm_status tlm_sparse_s8_check(const uint8_t* data, uint64_t available, int32_t rows, int32_t cols,
                               uint32_t* bytes, tlm_sparse_s8* view);

// The sections of an encoding tlm_sparse_s8_check accepted.
inline tlm_sparse_s8 tlm_sparse_s8_view(const uint8_t* data, int32_t rows, int32_t cols) {
  tlm_sparse_s8 s;
  s.rows = rows;
  s.cols = cols;
  s.entries = uint32_t(data[0]) | uint32_t(data[1]) << 8 | uint32_t(data[2]) << 16 |
              uint32_t(data[3]) << 24;
  s.counts = reinterpret_cast<const uint16_t*>(data + 4);
  s.steps = data + 4 + ((2 * uint32_t(rows) + 3) & ~3u);
  s.values = reinterpret_cast<const int8_t*>(s.steps + ((s.entries + 3) & ~3u));
  return s;
}

#endif  // TINYLEARN_MICRO_SPARSE_S8_H

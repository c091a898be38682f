// tinylearn firmware harness: runs the model in tl_model.h over every sample of the host file
// `input.bin` (read through semihosting) and prints one line per sample on USART1.
//
// Output protocol (one line each, '\n'-terminated):
//   O <output tensor bytes, 2 lowercase hex digits each> <instructions executed in tlm_invoke>
//   ERR invoke <status>        instead of the O line when tlm_invoke fails (the run goes on)
//   DONE <number of samples>   after the last sample; then exit status 0 (1 if any invoke failed)
// Fatal errors (exit status 1, nothing after them):
//   ERR init <status>          tlm_model_init rejected the blob
//   ERR arena <bytes needed>   TL_MODEL_ARENA_BYTES is smaller than the model's arena
//   ERR open                   input.bin cannot be opened on the host
//   ERR input <file length>    the length is not a multiple of the input tensor size
//   ERR read <sample index>    short read
#include <stddef.h>
#include <stdint.h>

#include "board.h"
#include "tinylearn/micro/micro.h"
#include "tl_model.h"

namespace {

alignas(4) uint8_t arena[TL_MODEL_ARENA_BYTES > 0 ? TL_MODEL_ARENA_BYTES : 4];

void put_dec(uint32_t v) {
  char buf[11];
  char* p = buf + sizeof buf;
  *--p = '\0';
  do {
    *--p = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  board_puts(p);
}

__attribute__((noinline)) void put_hex(uint32_t v) {
  v &= 15u;
  board_putc(static_cast<char>(v < 10 ? '0' + v : 'a' - 10 + v));
}

[[noreturn]] void fail(const char* tail) {
  board_puts(tail);
  board_exit(0);
}

[[noreturn]] void fail_n(const char* head, uint32_t value) {
  board_puts(head);
  put_dec(value);
  fail("\n");
}

}  // namespace

int main() {
  board_init();

  tlm_model model;
  const tlm_status init = tlm_model_init(&model, tl_model, tl_model_len);
  if (init != TLM_OK) fail_n("ERR init ", init);
  const uint32_t need = tlm_arena_bytes(&model);
  if (need > sizeof arena) fail_n("ERR arena ", need);

  tlm_tensor_info info;
  tlm_tensor(&model, model.output_tensor, &info);
  const uint32_t out_bytes = info.bytes;
  tlm_tensor(&model, model.input_tensor, &info);
  const uint32_t in_bytes = info.bytes;

  static const char kInput[] = "input.bin";
  const int32_t fd = board_open(kInput, sizeof kInput - 1);
  if (fd < 0) fail("ERR open\n");
  const int32_t len = board_flen(fd);
  if (len < 0 || in_bytes == 0 || static_cast<uint32_t>(len) % in_bytes != 0) {
    fail_n("ERR input ", static_cast<uint32_t>(len));
  }
  const uint32_t n = static_cast<uint32_t>(len) / in_bytes;

  int ok = 1;
  int8_t* const input = tlm_input(&model, arena);
  const uint8_t* const output = reinterpret_cast<const uint8_t*>(tlm_output(&model, arena));
  for (uint32_t i = 0; i < n; ++i) {
    if (board_read(fd, input, in_bytes) != 0) fail_n("ERR read ", i);
    const uint64_t r = board_count_call(reinterpret_cast<uintptr_t>(&model),
                                        reinterpret_cast<uintptr_t>(arena), sizeof arena,
                                        reinterpret_cast<uintptr_t>(&tlm_invoke));
    const uint32_t status = static_cast<uint8_t>(r);
    if (status != TLM_OK) {
      ok = 0;
      board_puts("ERR invoke ");
      put_dec(status);
    } else {
      board_puts("O ");
      for (uint32_t k = 0; k < out_bytes; ++k) {
        put_hex(output[k] >> 4);
        put_hex(output[k]);
      }
      board_putc(' ');
      put_dec(static_cast<uint32_t>(r >> 32));
    }
    board_putc('\n');
  }
  board_close(fd);

  board_puts("DONE ");
  put_dec(n);
  board_putc('\n');
  return ok ? 0 : 1;
}

// tinylearn_calib: checks board_count_call() against functions whose executed instruction count
// is known exactly (hand-written Thumb-2 below). Prints one line per case:
//   CAL <name> <expected> <measured>
// then `CAL OK` and exit status 0 when every case matches, `CAL MISMATCH` and status 1 otherwise.
// Run it exactly like tinylearn_fw (same QEMU command line, -icount shift=0); no input file.
#include <stdint.h>

#include "board.h"

// Executed instructions, arguments in r0, r1 (board_count_call passes them through).
extern "C" {
void cal_ret();     // 1
void cal_loop();    // r0 = n >= 1: 2n + 1
void cal_mem();     // r0 = n >= 1, r1 = 8-byte RAM buffer: 4n + 1
void cal_mixed();   // r1 != 0: 6 (FPU ops, udiv, nop)
void cal_it();      // 4 (cmp, it, moveq, bx), condition true or false
void cal_nested();  // 4 (push, bl, cal_ret's bx, pop)
}

__asm__(R"(
  .syntax unified
  .thumb
  .section .text.cal_functions, "ax", %progbits
  .p2align 2

  .global cal_ret
  .thumb_func
cal_ret:
  bx    lr

  .global cal_loop
  .thumb_func
cal_loop:
1:subs  r0, #1
  bne   1b
  bx    lr

  .global cal_mem
  .thumb_func
cal_mem:
1:ldr   r2, [r1]
  str   r2, [r1, #4]
  subs  r0, #1
  bne   1b
  bx    lr

  .global cal_mixed
  .thumb_func
cal_mixed:
  vmov      s0, r0
  vadd.f32  s0, s0, s0
  vmov      r0, s0
  udiv      r0, r0, r1
  nop
  bx        lr

  .global cal_it
  .thumb_func
cal_it:
  cmp   r0, #0
  it    eq
  moveq r0, #1
  bx    lr

  .global cal_nested
  .thumb_func
cal_nested:
  push  {r4, lr}
  bl    cal_ret
  pop   {r4, pc}
  .text
)");

namespace {

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

uint32_t g_buf[2];
int g_ok = 1;

void check(const char* name, uint32_t expected, void (*fn)(), uint32_t a0, uint32_t a1) {
  const uint64_t r = board_count_call(a0, a1, 0, reinterpret_cast<uintptr_t>(fn));
  const uint32_t measured = static_cast<uint32_t>(r >> 32);
  board_puts("CAL ");
  board_puts(name);
  board_putc(' ');
  put_dec(expected);
  board_putc(' ');
  put_dec(measured);
  board_putc('\n');
  if (measured != expected) g_ok = 0;
}

}  // namespace

int main() {
  board_init();

  // Raw: two back-to-back counter reads differ by exactly 1 (the second read itself).
  const uint32_t t0 = board_counter();
  const uint32_t t1 = board_counter();
  board_puts("CAL raw-back-to-back 1 ");
  put_dec(t1 - t0);
  board_putc('\n');
  if (t1 - t0 != 1) g_ok = 0;

  check("ret", 1, cal_ret, 0, 0);
  static const uint32_t loops[] = {1, 2, 3, 10, 100, 1000, 65535, 65536, 1000000};
  for (uint32_t n : loops) check("loop", 2 * n + 1, cal_loop, n, 0);
  check("mem", 4 * 1000 + 1, cal_mem, 1000, reinterpret_cast<uintptr_t>(g_buf));
  check("mixed", 6, cal_mixed, 3, 2);
  check("it-taken", 4, cal_it, 0, 0);
  check("it-skipped", 4, cal_it, 1, 0);
  check("nested", 4, cal_nested, 0, 0);

  board_puts(g_ok ? "CAL OK\n" : "CAL MISMATCH\n");
  return g_ok ? 0 : 1;
}

// Board support for the Netduino Plus 2 (STM32F405RG), as emulated by QEMU's `netduinoplus2`.
//
// Own minimal register definitions (no vendor HAL/CMSIS). Provides: USART1 text output,
// ARM semihosting (host files + exit), and an exact instruction counter for QEMU -icount.
#ifndef TINYLEARN_FIRMWARE_BOARD_H
#define TINYLEARN_FIRMWARE_BOARD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Clocks USART1 (115200 8N1 on PA9 at the 16 MHz reset clock) and starts the counter (TIM2).
void board_init(void);

void board_putc(char c);
void board_puts(const char* s);

// ---- ARM semihosting (bkpt 0xAB); the host is QEMU with -semihosting-config enable=on ----
enum {
  BOARD_SYS_OPEN = 0x01,
  BOARD_SYS_CLOSE = 0x02,
  BOARD_SYS_READ = 0x06,
  BOARD_SYS_FLEN = 0x0C,
  BOARD_SYS_EXIT = 0x18,
};
enum {
  BOARD_ADP_APPLICATION_EXIT = 0x20026,  // QEMU exits with status 0
  BOARD_ADP_RUNTIME_ERROR = 0x20023,     // QEMU exits with status 1
};

// Generic call: op in r0, pointer to the argument block in r1, result in r0.
static inline int32_t board_semihost(uint32_t op, const void* args) {
  register uint32_t r0 __asm__("r0") = op;
  register const void* r1 __asm__("r1") = args;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return (int32_t)r0;
}

// Opens a host file read-only, binary ("rb"). `path` is relative to QEMU's working directory.
// Returns a handle, or -1.
static inline int32_t board_open(const char* path, uint32_t path_len) {
  const uint32_t args[3] = {(uint32_t)path, 1u /* "rb" */, path_len};
  return board_semihost(BOARD_SYS_OPEN, args);
}
// Length of an open host file in bytes, or -1.
static inline int32_t board_flen(int32_t handle) {
  return board_semihost(BOARD_SYS_FLEN, &handle);
}
// Reads n bytes; returns the number of bytes NOT read (0 = all read).
static inline uint32_t board_read(int32_t handle, void* buf, uint32_t n) {
  const uint32_t args[3] = {(uint32_t)handle, (uint32_t)buf, n};
  return (uint32_t)board_semihost(BOARD_SYS_READ, args);
}
static inline void board_close(int32_t handle) { board_semihost(BOARD_SYS_CLOSE, &handle); }
// Ends the emulation: QEMU exits with status 0 if ok, else 1. Flushes the USART first.
void board_exit(int ok) __attribute__((noreturn));

// ---- Instruction counter ----
// Raw counter: TIM2_CNT. Under `qemu-system-arm -icount shift=0` it advances by exactly 1 per
// guest instruction (see board.c for the method and the calibration).
static inline uint32_t board_counter(void) { return *(volatile uint32_t*)0x40000024u; }

// Calls fn(a0, a1, a2) and counts the guest instructions it executes, from its first instruction
// through its return instruction inclusive (the call and counter reads are subtracted).
// Returns fn's 32-bit result in the low word and the instruction count in the high word.
uint64_t board_count_call(uintptr_t a0, uintptr_t a1, uintptr_t a2, uintptr_t fn);

#ifdef __cplusplus
}
#endif

#endif  // TINYLEARN_FIRMWARE_BOARD_H

// Board support for the Netduino Plus 2 (STM32F405RG) / QEMU `netduinoplus2`. See board.h.
#include "board.h"

#include <stddef.h>

// Register blocks (RM0090). Only the registers used here are named; accesses go through one base
// pointer per block, which keeps the code small (one literal per block).
typedef volatile uint32_t reg32;
typedef struct {
  reg32 CR, PLLCFGR, CFGR, CIR, AHB1RSTR, AHB2RSTR, AHB3RSTR, rsvd0, APB1RSTR, APB2RSTR, rsvd1[2];
  reg32 AHB1ENR, AHB2ENR, AHB3ENR, rsvd2, APB1ENR, APB2ENR;
} rcc_regs;
typedef struct {
  reg32 MODER, OTYPER, OSPEEDR, PUPDR, IDR, ODR, BSRR, LCKR, AFRL, AFRH;
} gpio_regs;
typedef struct {
  reg32 SR, DR, BRR, CR1, CR2, CR3, GTPR;
} usart_regs;
typedef struct {
  reg32 CR1, CR2, SMCR, DIER, SR, EGR, CCMR1, CCMR2, CCER, CNT, PSC, ARR;
} tim_regs;

#define RCC ((rcc_regs*)0x40023800u)
#define GPIOA ((gpio_regs*)0x40020000u)
#define USART1 ((usart_regs*)0x40011000u)
#define TIM2 ((tim_regs*)0x40000000u)

#define RCC_AHB1ENR_RESET 0x00100000u  // CCMDATARAMEN
#define RCC_AHB1ENR_GPIOAEN (1u << 0)
#define RCC_APB1ENR_TIM2EN (1u << 0)
#define RCC_APB2ENR_USART1EN (1u << 4)
#define GPIOA_MODER_RESET 0xA8000000u  // PA13..PA15: debug port (alternate function)
#define USART_SR_TC (1u << 6)
#define USART_SR_TXE (1u << 7)
#define USART_CR1_TE (1u << 3)
#define USART_CR1_UE (1u << 13)
#define TIM_CR1_CEN (1u << 0)
#define TIM_EGR_UG (1u << 0)

#define BOARD_RESET_HZ 16000000u  // HSI: the clock after reset; nothing here changes it
#define BOARD_BAUD 115200u

_Static_assert(offsetof(tim_regs, CNT) == 0x24, "TIM CNT offset");
_Static_assert(offsetof(rcc_regs, APB2ENR) == 0x44, "RCC APB2ENR offset");
_Static_assert(offsetof(gpio_regs, AFRH) == 0x24, "GPIO AFRH offset");

// Runs once, right after reset: registers still hold their reset values, so plain writes (no
// read-modify-write) are enough.
void board_init(void) {
  RCC->AHB1ENR = RCC_AHB1ENR_RESET | RCC_AHB1ENR_GPIOAEN;
  RCC->APB1ENR = RCC_APB1ENR_TIM2EN;
  RCC->APB2ENR = RCC_APB2ENR_USART1EN;
  (void)RCC->APB2ENR;  // read back: a peripheral is usable 2 cycles after its clock enable

  // PA9 = USART1_TX, alternate function 7.
  GPIOA->AFRH = 7u << 4;
  GPIOA->MODER = GPIOA_MODER_RESET | (2u << 18);

  // 115200 8N1, transmitter only. (QEMU's stm32f2xx_usart ignores BRR/CR1 and sends every DR
  // write at once; TXE and TC always read 1.)
  USART1->BRR = (BOARD_RESET_HZ + BOARD_BAUD / 2) / BOARD_BAUD;
  USART1->CR1 = USART_CR1_UE | USART_CR1_TE;

  // TIM2: free-running 32-bit up-counter, no prescaler (see "Instruction counting" below).
  TIM2->ARR = 0xFFFFFFFFu;
  TIM2->EGR = TIM_EGR_UG;
  TIM2->CR1 = TIM_CR1_CEN;
}

void board_putc(char c) {
  while (!(USART1->SR & USART_SR_TXE)) {
  }
  USART1->DR = (uint8_t)c;
}

void board_puts(const char* s) {
  while (*s) board_putc(*s++);
}

// Waits until the last character has left the USART (real hardware; QEMU: TC is always set).
static void board_flush(void) {
  while (!(USART1->SR & USART_SR_TC)) {
  }
}

void board_exit(int ok) {
  board_flush();
  // AArch32: r1 holds the reason itself (not a pointer to a block).
  _Static_assert(BOARD_ADP_APPLICATION_EXIT - BOARD_ADP_RUNTIME_ERROR == 3, "ADP reasons");
  board_semihost(BOARD_SYS_EXIT, (const void*)(BOARD_ADP_RUNTIME_ERROR + 3u * (ok != 0)));
  for (;;) {
  }
}

// ---- Instruction counting ----------------------------------------------------------------------
// Method: TIM2_CNT under `qemu-system-arm -M netduinoplus2 -icount shift=0` (QEMU 7.2).
//
// Why it is exact: QEMU 7.2's stm32f2xx_timer model does not tick; a CNT read returns
//   muldiv64(QEMU_CLOCK_VIRTUAL ns, clock-frequency, 1e9) / (PSC + 1) - tick_offset
// and the STM32F405 SoC leaves "clock-frequency" at its default, 1 GHz. With -icount shift=0 the
// virtual clock advances exactly 1 ns per guest instruction, so with PSC = 0 the counter advances
// exactly 1 per executed guest instruction, independent of the host. (QEMU makes an MMIO access the
// last instruction of its translation block, so the value read is exact at that instruction and
// includes it.) 32 bits wrap after 2^32 instructions; differences are taken modulo 2^32.
//
// board_count_call: t0 = CNT; blx fn; t1 = CNT; result = t1 - t0 - 2, i.e. minus the blx and the
// second CNT load: what remains is every instruction executed from fn's entry through its return
// instruction, including callees (memcpy, ...). Conditional instructions whose condition fails
// and IT instructions count as executed instructions (QEMU counts every instruction it steps).
//
// Calibration (app/calibrate.cpp -> tinylearn_calib.elf; hand-written Thumb-2 of known length;
// QEMU 7.2.22, every value identical over repeated runs):
//   two back-to-back CNT loads: difference 1
//   bx lr: 1;  loop (subs, bne) x n for n = 1, 2, 3, 10, 100, 1000, 65535, 65536, 10^6:
//   2n + 1 exactly (3 ... 2000001);  4000 RAM ldr/str + loop: 4001;  FPU + udiv + nop: 6;
//   cmp/it/moveq/bx (condition true and false): 4;  nested call: 4.
// Rejected alternatives (measured over the same 10^6-iteration loop, 2000014 instructions):
//   DWT_CYCCNT: not modelled by QEMU 7.2 (reads 0 with TRCENA and CYCCNTENA set).
//   SysTick (processor clock): 336003 counts = 0.168 per instruction (sysclk 168 MHz vs the
//   1 GHz icount clock): +-6 instructions of quantisation, 24-bit, and not an instruction count.
// Without -icount the counter follows host time: the numbers are then meaningless (and vary).
// On real silicon at reset clocks (HSI 16 MHz, APB1 /1) TIM2 counts core clock cycles instead.
#define BOARD_COUNT_OVERHEAD 2
#define BOARD_STR_(x) #x
#define BOARD_STR(x) BOARD_STR_(x)

__attribute__((naked)) uint64_t board_count_call(uintptr_t a0, uintptr_t a1, uintptr_t a2,
                                                 uintptr_t fn) {
  (void)a0, (void)a1, (void)a2, (void)fn;
  __asm__ volatile(
      "push {r4, r5, r6, lr}\n\t"
      "ldr  r5, =0x40000024\n\t"  // &TIM2_CNT
      "ldr  r4, [r5]\n\t"         // t0
      "blx  r3\n\t"               // r0 = fn(r0, r1, r2)
      "ldr  r1, [r5]\n\t"         // t1
      "subs r1, r1, r4\n\t"
      "subs r1, #" BOARD_STR(BOARD_COUNT_OVERHEAD) "\n\t"  // the blx and the second ldr
      "pop  {r4, r5, r6, pc}\n\t"
      ".ltorg");
}

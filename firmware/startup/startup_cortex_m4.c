// Startup for Cortex-M4F (STM32F405): vector table, Reset_Handler, fault handler.
//
// Only the 16 Cortex-M core vectors are present: the firmware enables no peripheral interrupt,
// and the 82 STM32F405 IRQ vectors would cost ~330 bytes of flash. (An enabled peripheral IRQ
// would fetch its vector from beyond the table, i.e. from code: don't enable any.)
#include <stdint.h>

#include "board.h"

extern uint32_t __stack_top__[];
extern uint32_t __data_start__[], __data_end__[], __data_load__[];
extern uint32_t __bss_end__[];  // .bss starts at __data_end__ (the linker script asserts it)

int main(void);
void Reset_Handler(void) __attribute__((noreturn));
void Fault_Handler(void) __attribute__((naked, noreturn));

typedef void (*tl_vector)(void);

__attribute__((section(".isr_vector"), used)) const tl_vector tl_vectors[16] = {
    (tl_vector)__stack_top__,  // 0: initial MSP
    Reset_Handler,             // 1: Reset
    Fault_Handler,             // 2: NMI
    Fault_Handler,             // 3: HardFault
    Fault_Handler,             // 4: MemManage
    Fault_Handler,             // 5: BusFault
    Fault_Handler,             // 6: UsageFault
    0, 0, 0, 0,                // 7-10: reserved
    Fault_Handler,             // 11: SVCall
    Fault_Handler,             // 12: DebugMonitor
    0,                         // 13: reserved
    Fault_Handler,             // 14: PendSV
    Fault_Handler,             // 15: SysTick
};

void Reset_Handler(void) {
  // Grant full access to the FPU (CPACR.CP10/CP11; reset value 0): built with -mfloat-abi=hard.
  *(volatile uint32_t*)0xE000ED88u = 0xFu << 20;
  __asm volatile("dsb\n\tisb" ::: "memory");

  // Word loops through a volatile pointer: keeps GCC from turning them into memcpy/memset calls,
  // which would link newlib's speed-optimised versions (~470 bytes) into every image.
  volatile uint32_t* dst = __data_start__;
  for (const uint32_t* src = __data_load__; dst < __data_end__;) *dst++ = *src++;
  while (dst < __bss_end__) *dst++ = 0;
  // No static constructors to run: the linker script rejects a non-empty .init_array.

  board_exit(main() == 0);
}

// Every other exception: exit QEMU with a failure code. Uses no stack (the fault may be a stack
// overflow) and no peripheral.
void Fault_Handler(void) {
  __asm volatile(
      "movs r0, #0x18\n\t"   // SYS_EXIT
      "ldr  r1, =0x20023\n\t"  // ADP_Stopped_RunTimeErrorUnknown -> qemu exit status 1
      "bkpt 0xAB\n\t"
      "b    .\n\t"
      ".ltorg");
}

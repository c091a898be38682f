# CMake toolchain file: bare-metal Arm Cortex-M4F (STM32F4) with the GNU Arm Embedded toolchain
# (Debian: gcc-arm-none-eabi + libnewlib-arm-none-eabi).
#
#   cmake -S firmware -B build-fw -G Ninja -DCMAKE_TOOLCHAIN_FILE=firmware/cmake/arm-none-eabi.cmake
#
# TL_ARM_TOOLCHAIN_PREFIX may name another prefix, e.g. /opt/gcc-arm/bin/arm-none-eabi-.
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)

set(TL_ARM_TOOLCHAIN_PREFIX "arm-none-eabi-" CACHE STRING "Prefix of the arm-none-eabi tools")

set(CMAKE_C_COMPILER   ${TL_ARM_TOOLCHAIN_PREFIX}gcc)
set(CMAKE_CXX_COMPILER ${TL_ARM_TOOLCHAIN_PREFIX}g++)
set(CMAKE_ASM_COMPILER ${TL_ARM_TOOLCHAIN_PREFIX}gcc)
set(CMAKE_OBJCOPY      ${TL_ARM_TOOLCHAIN_PREFIX}objcopy CACHE FILEPATH "objcopy")
set(CMAKE_SIZE         ${TL_ARM_TOOLCHAIN_PREFIX}size    CACHE FILEPATH "size")

# No startup files or linker script exist when CMake probes the compiler: probe with a library.
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)

set(TL_ARM_CPU_FLAGS "-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16")
set(CMAKE_C_FLAGS_INIT   "${TL_ARM_CPU_FLAGS}")
set(CMAKE_CXX_FLAGS_INIT "${TL_ARM_CPU_FLAGS}")
set(CMAKE_ASM_FLAGS_INIT "${TL_ARM_CPU_FLAGS}")
set(CMAKE_EXE_LINKER_FLAGS_INIT "${TL_ARM_CPU_FLAGS}")

# Never pick up host headers or libraries.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

/* Target shim: BPF registers and longs are 64 bits wide. */
#ifndef TIDEGATE_ASM_BITSPERLONG_H
#define TIDEGATE_ASM_BITSPERLONG_H
#define __BITS_PER_LONG 64
#include <asm-generic/bitsperlong.h>
#endif

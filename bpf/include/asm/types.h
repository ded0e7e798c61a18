/* Target shim: the BPF target has no asm/ directory, and BPF is a 64-bit target. */
#ifndef TIDEGATE_ASM_TYPES_H
#define TIDEGATE_ASM_TYPES_H
#include <asm-generic/types.h>
#endif

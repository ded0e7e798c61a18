/* Target shim: the generic POSIX types fit the BPF target. */
#ifndef TIDEGATE_ASM_POSIX_TYPES_H
#define TIDEGATE_ASM_POSIX_TYPES_H
#include <asm-generic/posix_types.h>
#endif

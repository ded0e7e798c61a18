/* Target shim: tidegate builds only the little-endian (bpfel) object. */
#ifndef TIDEGATE_ASM_BYTEORDER_H
#define TIDEGATE_ASM_BYTEORDER_H
#include <linux/byteorder/little_endian.h>
#endif

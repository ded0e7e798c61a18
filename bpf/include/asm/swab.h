/* Target shim: no arch-specific byte swap helpers; the generic ones apply. */
#ifndef TIDEGATE_ASM_SWAB_H
#define TIDEGATE_ASM_SWAB_H
#endif

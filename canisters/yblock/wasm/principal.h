/* A principal's textual form (as the IC interface specification defines it), for error messages. */
#ifndef ICL_PRINCIPAL_H
#define ICL_PRINCIPAL_H

#include <stdint.h>

#include "icl_text.h"

#define ICL_PRINCIPAL_MAX 29

typedef struct {
    uint8_t bytes[ICL_PRINCIPAL_MAX];
    uint32_t size;
} icl_principal;

int icl_principal_equal(const icl_principal *a, const icl_principal *b);
/* Base32 (lower case, no padding) of CRC-32 (big-endian) then the bytes, in groups of 5 joined by '-'. */
void icl_put_principal(icl_text *t, const icl_principal *p);

#endif

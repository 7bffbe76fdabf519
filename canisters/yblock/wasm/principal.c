#include "principal.h"

int icl_principal_equal(const icl_principal *a, const icl_principal *b) {
    if (a->size != b->size) return 0;
    for (uint32_t i = 0; i < a->size; i++)
        if (a->bytes[i] != b->bytes[i]) return 0;
    return 1;
}

static uint32_t crc32(const uint8_t *data, uint32_t n) {
    uint32_t crc = 0xffffffffu;
    for (uint32_t i = 0; i < n; i++) {
        crc ^= data[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
    }
    return ~crc;
}

void icl_put_principal(icl_text *t, const icl_principal *p) {
    uint8_t raw[4 + ICL_PRINCIPAL_MAX];
    uint32_t crc = crc32(p->bytes, p->size), n = 4 + p->size;
    for (int i = 0; i < 4; i++) raw[i] = (uint8_t)(crc >> (24 - 8 * i));
    for (uint32_t i = 0; i < p->size; i++) raw[4 + i] = p->bytes[i];
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    uint32_t bits = 0, value = 0, written = 0;
    for (uint32_t i = 0; i <= n; i++) {
        if (i < n) {
            value = (value << 8) | raw[i];
            bits += 8;
        } else if (bits) { /* the last group, padded with zero bits */
            value <<= 5 - bits;
            bits = 5;
        }
        while (bits >= 5) {
            if (written && written % 5 == 0) icl_put_n(t, "-", 1);
            icl_put_n(t, &alphabet[(value >> (bits - 5)) & 31], 1);
            bits -= 5;
            written++;
        }
    }
}

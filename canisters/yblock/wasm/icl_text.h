/* Error messages without libc: a bounded text builder that truncates instead of overflowing. */
#ifndef ICL_TEXT_H
#define ICL_TEXT_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *buf;
    size_t cap; /* bytes of buf, including the terminating NUL */
    size_t len;
} icl_text;

static inline icl_text icl_text_on(char *buf, size_t cap) {
    icl_text t = {buf, cap, 0};
    if (cap) buf[0] = 0;
    return t;
}

static inline icl_text *icl_put_n(icl_text *t, const char *s, size_t n) {
    for (size_t i = 0; i < n && t->len + 1 < t->cap; i++) t->buf[t->len++] = s[i];
    if (t->cap) t->buf[t->len] = 0;
    return t;
}

static inline icl_text *icl_put(icl_text *t, const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return icl_put_n(t, s, n);
}

static inline icl_text *icl_put_int(icl_text *t, int64_t v) {
    char digits[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        digits[sizeof digits - 1 - n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) digits[sizeof digits - 1 - n++] = '-';
    return icl_put_n(t, digits + sizeof digits - n, (size_t)n);
}

#endif

/* SHA-256 (FIPS 180-4), incremental, over a plain struct so that its state can be kept in stable
 * memory between messages: an upload's running hash survives upgrades and restarts. */
#ifndef ICL_SHA256_H
#define ICL_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t length;       /* bytes hashed so far */
    uint8_t pending[64];   /* the last length % 64 bytes, not yet compressed */
} icl_sha256;

void icl_sha256_init(icl_sha256 *s);
void icl_sha256_update(icl_sha256 *s, const uint8_t *data, size_t n);
void icl_sha256_final(const icl_sha256 *s, uint8_t digest[32]); /* leaves *s unchanged */

#endif

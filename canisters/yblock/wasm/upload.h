/* A shard file uploaded into stable memory in chunks: resumable, idempotent, verified by sha256
 * (the wasm counterpart of canisters/yblock/shard_store.py, with the same rules and messages).
 *
 * Stable memory layout (it survives upgrades and restarts; the heap does not):
 *   page 0: the upload record (icl_upload below, after MAGIC), including the running sha256 state,
 *           so an upgrade resumes the hash where it stopped instead of hashing the file again;
 *   from ICL_DATA_OFFSET: the file's bytes. */
#ifndef ICL_UPLOAD_H
#define ICL_UPLOAD_H

#include <stdint.h>

#include "sha256.h"

#define ICL_DATA_OFFSET 65536u
#define ICL_MAX_CHUNK_BYTES (2u * 1024 * 1024)
#define ICL_MAX_NAME_BYTES 255u

typedef struct {
    uint8_t magic[8];
    uint32_t name_size;
    uint8_t committed; /* sha256 holds the file's digest (set by upload_commit) */
    uint8_t loaded;    /* the yblock loaded it: reload after an upgrade, refuse to overwrite it */
    uint8_t reserved[2];
    uint64_t held; /* bytes of the file held, from ICL_DATA_OFFSET */
    uint8_t name[ICL_MAX_NAME_BYTES + 1];
    uint8_t sha256[32];
    icl_sha256 hasher; /* over the bytes held */
} icl_upload;

void icl_upload_restore(icl_upload *u);       /* from stable memory, or empty */
void icl_upload_write(const icl_upload *u);   /* to stable memory page 0 */
void icl_upload_reset(icl_upload *u, const uint8_t *name, uint32_t size); /* a new, empty file */
int icl_upload_same_name(const icl_upload *u, const uint8_t *name, uint32_t size);
/* Grows stable memory to hold n_bytes; 0 when it cannot grow. */
int icl_stable_ensure(uint64_t n_bytes);
void icl_sha256_hex(const uint8_t digest[32], char out[64]);

#endif

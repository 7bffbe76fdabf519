#include "upload.h"

#include "ic0.h"

static const uint8_t MAGIC[8] = {'I', 'C', 'L', 'S', 'H', 'R', 'D', 'C'};
#define WASM_PAGE 65536u

int icl_stable_ensure(uint64_t n_bytes) {
    uint64_t pages = (n_bytes + WASM_PAGE - 1) / WASM_PAGE, have = ic0_stable64_size();
    return pages <= have || ic0_stable64_grow(pages - have) >= 0;
}

void icl_upload_reset(icl_upload *u, const uint8_t *name, uint32_t size) {
    *u = (icl_upload){.name_size = size};
    for (int i = 0; i < 8; i++) u->magic[i] = MAGIC[i];
    for (uint32_t i = 0; i < size; i++) u->name[i] = name[i];
    icl_sha256_init(&u->hasher);
}

void icl_upload_restore(icl_upload *u) {
    icl_upload_reset(u, 0, 0);
    if (ic0_stable64_size() == 0) return;
    icl_upload stored;
    ic0_stable64_read((uintptr_t)&stored, 0, sizeof stored);
    for (int i = 0; i < 8; i++)
        if (stored.magic[i] != MAGIC[i]) return; /* never written: no upload yet */
    *u = stored;
}

void icl_upload_write(const icl_upload *u) {
    if (!icl_stable_ensure(ICL_DATA_OFFSET)) {
        static const char message[] = "stable memory cannot grow to hold the upload record";
        ic0_trap((uintptr_t)message, sizeof message - 1);
    }
    ic0_stable64_write(0, (uintptr_t)u, sizeof *u);
}

int icl_upload_same_name(const icl_upload *u, const uint8_t *name, uint32_t size) {
    if (u->name_size != size) return 0;
    for (uint32_t i = 0; i < size; i++)
        if (u->name[i] != name[i]) return 0;
    return 1;
}

void icl_sha256_hex(const uint8_t digest[32], char out[64]) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
}

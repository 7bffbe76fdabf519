/* The yblock canister in C: one shard of a model, run for the head canister.
 *
 * The same interface (canisters/yblock/yblock.did) and semantics as the Python yblock
 * (canisters/yblock/yblock.py), with the same error texts: controllers upload the shard file into
 * stable memory and call load, which keeps the weights quantized in the heap; only the head calls
 * forward and reset_session; each session's KV cache is allocated in the heap on its first forward
 * and refused with a "full" error when the heap cannot grow to hold it.
 *
 * The output stage samples greedily itself (repetition penalty, then the highest logit, the lowest
 * id on ties, as numpy's argmax). For any other sampling it returns its candidates (its top_k
 * after the penalty, or every row when top_k is off) and the head draws from them, so no random
 * number generator runs here and the draw is exactly the one a single sampler would make.
 *
 * State: the canister's globals below are its heap state, rolled back with the heap on a trap.
 * Transient buffers of a message are freed before it replies. */
#include <stddef.h>
#include <stdint.h>

#include "candid.h"
#include "heap.h"
#include "ic0.h"
#include "icl_text.h"
#include "model.h"
#include "principal.h"
#include "upload.h"

#define SESSION_OVERHEAD_BYTES 4096u /* the session's entry beside its KV cache, as the Python yblock counts */
#define MAX_TRANSIENT 16
#define MAX_PARSE_ALLOCATIONS 64
#define WASM32_ADDRESS_SPACE 4294967296ull

typedef struct {
    uint64_t id;
    int length; /* committed positions */
    void *kv;
} session;

static struct {
    icl_principal head;
    uint32_t n_ctx;
    icl_upload upload;
    uint8_t *file; /* the committed shard file, in the heap: the weights are used in place */
    icl_shard *shard;
    icl_shard_info info;
    session *sessions;
    uint32_t n_sessions, session_capacity;
} Y;

/* --- a message's transient buffers and its text -------------------------------------------- */

static void *transient[MAX_TRANSIENT];
static uint32_t n_transient;
static char message_buf[4096];

static void trap_text(const char *text) {
    size_t n = 0;
    while (text[n]) n++;
    ic0_trap((uintptr_t)text, (uint32_t)n);
}

static void *temp_alloc(size_t size) {
    if (n_transient == MAX_TRANSIENT) trap_text("yblock: too many buffers in one message");
    void *p = icl_alloc(size ? size : 1);
    if (p) transient[n_transient++] = p;
    return p;
}

static void temp_free_all(void) {
    while (n_transient) icl_free(transient[--n_transient]);
}

static icl_text text_begin(void) { return icl_text_on(message_buf, sizeof message_buf); }

static void put_quoted(icl_text *t, const uint8_t *s, uint32_t n) {
    icl_put(t, "'");
    icl_put_n(t, (const char *)s, n);
    icl_put(t, "'");
}

static void put_self(icl_text *t) {
    icl_principal self;
    self.size = ic0_canister_self_size();
    if (self.size > ICL_PRINCIPAL_MAX) self.size = ICL_PRINCIPAL_MAX;
    ic0_canister_self_copy((uintptr_t)self.bytes, 0, self.size);
    icl_put_principal(t, &self);
}

/* "yblock 'name' (principal)", as the Python yblock's describe(). */
static void put_describe(icl_text *t) {
    icl_put(t, "yblock");
    if (Y.upload.name_size) {
        icl_put(t, " ");
        put_quoted(t, Y.upload.name, Y.upload.name_size);
    }
    icl_put(t, " (");
    put_self(t);
    icl_put(t, ")");
}

static icl_principal caller(void) {
    icl_principal p;
    p.size = ic0_msg_caller_size();
    if (p.size > ICL_PRINCIPAL_MAX) p.size = ICL_PRINCIPAL_MAX;
    ic0_msg_caller_copy((uintptr_t)p.bytes, 0, p.size);
    return p;
}

static int caller_is_controller(void) {
    icl_principal p = caller();
    return ic0_is_controller((uintptr_t)p.bytes, p.size) == 1;
}

/* --- Candid types of the replies (field ids are idl_hash of the names, listed in id order) --- */

static const cd_type T_BOOL = {CD_BOOL}, T_NAT8 = {CD_NAT8}, T_NAT32 = {CD_NAT32}, T_NAT64 = {CD_NAT64},
                     T_FLOAT32 = {CD_FLOAT32}, T_TEXT = {CD_TEXT}, T_PRINCIPAL = {CD_PRINCIPAL};
static const cd_type T_BLOB = {CD_VEC, &T_NAT8}, T_OPT_TEXT = {CD_OPT, &T_TEXT}, T_OPT_NAT32 = {CD_OPT, &T_NAT32},
                     T_VEC_NAT32 = {CD_VEC, &T_NAT32}, T_VEC_FLOAT32 = {CD_VEC, &T_FLOAT32};

static const cd_field ROWS_FIELDS[] = {{1281093634u, &T_NAT32} /* stop */, {2215343202u, &T_NAT32} /* start */};
static const cd_type T_ROWS = {CD_RECORD, 0, 2, ROWS_FIELDS}, T_OPT_ROWS = {CD_OPT, &T_ROWS};

static const cd_field UPLOAD_STATUS_FIELDS[] = {
    {486188135u, &T_OPT_TEXT} /* sha256 */, {1158361781u, &T_NAT64} /* held */,
    {1224700491u, &T_TEXT} /* name */, {1483687941u, &T_BOOL} /* loaded */};
static const cd_type T_UPLOAD_STATUS = {CD_RECORD, 0, 4, UPLOAD_STATUS_FIELDS};

static const cd_field SHARD_INFO_FIELDS[] = {
    {32389096u, &T_NAT32} /* last_layer */, {464880962u, &T_NAT32} /* first_layer */,
    {486188135u, &T_TEXT} /* sha256 */, {1102143180u, &T_NAT64} /* kv_bytes_per_session */,
    {1156200563u, &T_TEXT} /* strategy */, {1185009230u, &T_NAT32} /* d_model */,
    {1224700491u, &T_TEXT} /* name */, {1269754742u, &T_TEXT} /* role */,
    {3211001431u, &T_OPT_ROWS} /* output_rows */, {4078971684u, &T_NAT64} /* weight_bytes */};
static const cd_type T_SHARD_INFO = {CD_RECORD, 0, 10, SHARD_INFO_FIELDS};

static const cd_field CANDIDATES_FIELDS[] = {{5243960u, &T_VEC_NAT32} /* ids */,
                                             {1550477348u, &T_VEC_FLOAT32} /* logits */};
static const cd_type T_CANDIDATES = {CD_RECORD, 0, 2, CANDIDATES_FIELDS}, T_OPT_CANDIDATES = {CD_OPT, &T_CANDIDATES};

static const cd_field FORWARD_REPLY_FIELDS[] = {
    {338395897u, &T_OPT_NAT32} /* token */, {1071737629u, &T_BLOB} /* activations */,
    {1832883877u, &T_NAT64} /* instructions */, {3965028048u, &T_OPT_CANDIDATES} /* candidates */};
static const cd_type T_FORWARD_REPLY = {CD_RECORD, 0, 4, FORWARD_REPLY_FIELDS};

static const cd_field STATUS_FIELDS[] = {
    {32389096u, &T_NAT32} /* last_layer */, {464880962u, &T_NAT32} /* first_layer */,
    {1102143180u, &T_NAT64} /* kv_bytes_per_session */, {1158359328u, &T_PRINCIPAL} /* head */,
    {1224700491u, &T_TEXT} /* name */, {1269754742u, &T_TEXT} /* role */, {1483687941u, &T_BOOL} /* loaded */,
    {1960310356u, &T_NAT64} /* heap_limit_bytes */, {2440844381u, &T_NAT32} /* sessions */,
    {2502596886u, &T_NAT32} /* n_ctx */, {3180857451u, &T_NAT64} /* bytes */,
    {3211001431u, &T_OPT_ROWS} /* output_rows */, {4001341912u, &T_NAT64} /* heap_bytes */};
static const cd_type T_STATUS = {CD_RECORD, 0, 13, STATUS_FIELDS};

#define RESULT_OF(name, ok)                                                                                     \
    static const cd_field name##_FIELDS[] = {{24860u, ok} /* ok */, {5048165u, &T_TEXT} /* err */};           \
    static const cd_type name = {CD_VARIANT, 0, 2, name##_FIELDS};
RESULT_OF(T_RESULT_NAT64, &T_NAT64)
RESULT_OF(T_RESULT_TEXT, &T_TEXT)
RESULT_OF(T_RESULT_INFO, &T_SHARD_INFO)
RESULT_OF(T_RESULT_FORWARD, &T_FORWARD_REPLY)
RESULT_OF(T_RESULT_BOOL, &T_BOOL)

/* --- replies -------------------------------------------------------------------------------- */

static cd_writer reply_begin(const cd_type *type, size_t payload_bytes) {
    size_t capacity = 1024 + payload_bytes;
    cd_writer w = {temp_alloc(capacity), 0, capacity, 0};
    if (!w.buf) trap_text("yblock: the heap cannot grow to hold the reply");
    const cd_type *args[1] = {type};
    cd_write_header(&w, args, 1);
    return w;
}

static void reply_send(cd_writer *w) {
    if (w->overflow) trap_text("yblock: a reply outgrew its buffer (a bug in the yblock)");
    ic0_msg_reply_data_append((uintptr_t)w->buf, (uint32_t)w->size);
    ic0_msg_reply();
    temp_free_all();
}

static void reply_err(const cd_type *result, const icl_text *t) {
    cd_writer w = reply_begin(result, t->len);
    cd_write_leb(&w, 1);
    cd_write_text(&w, t->buf, t->len);
    reply_send(&w);
}

static void write_cstr(cd_writer *w, const char *s, size_t n) { cd_write_text(w, s, n); }

static void write_rows(cd_writer *w) {
    if (!Y.shard || !Y.info.has_output) {
        cd_write_u8(w, 0);
        return;
    }
    cd_write_u8(w, 1);
    cd_write_u32(w, (uint32_t)Y.info.output_stop);
    cd_write_u32(w, (uint32_t)Y.info.output_start);
}

/* --- arguments ------------------------------------------------------------------------------ */

static cd_reader *args_begin(const char *method) {
    static cd_reader reader;
    uint32_t size = ic0_msg_arg_data_size();
    uint8_t *data = temp_alloc(size);
    if (!data) trap_text("yblock: the heap cannot grow to hold the message's argument");
    ic0_msg_arg_data_copy((uintptr_t)data, 0, size);
    if (!cd_begin(&reader, data, size)) {
        icl_text t = text_begin();
        icl_put(icl_put(icl_put(&t, "yblock: the argument of "), method), " is not valid: ");
        trap_text(icl_put(&t, reader.error)->buf);
    }
    return &reader;
}

static void args_check(cd_reader *r, const char *method) {
    if (!r->error) return;
    icl_text t = text_begin();
    icl_put(icl_put(icl_put(&t, "yblock: the argument of "), method), " does not match yblock.did: ");
    trap_text(icl_put(&t, r->error)->buf);
}

static int missing_field(cd_reader *r, int seen, const char *error) { return seen ? 1 : cd_fail(r, error); }

static void read_init_args(void) {
    cd_reader *r = args_begin("the install");
    uint32_t n, id, seen = 0;
    const uint8_t *fields, *data;
    int32_t type;
    if (cd_read_record(r, cd_arg(r, 0), &n, &fields))
        for (uint32_t i = 0; i < n && cd_record_field(r, &fields, &id, &type); i++) {
            if (id == 1158359328u) { /* head */
                if (cd_read_principal(r, type, &data, &Y.head.size))
                    for (uint32_t k = 0; k < Y.head.size; k++) Y.head.bytes[k] = data[k];
                seen |= 1;
            } else if (id == 2502596886u) { /* n_ctx */
                cd_read_nat32(r, type, &Y.n_ctx);
                seen |= 2;
            } else {
                cd_skip(r, type);
            }
        }
    missing_field(r, seen & 1, "Candid: InitArgs has no field head");
    missing_field(r, seen & 2, "Candid: InitArgs has no field n_ctx");
    args_check(r, "the install");
    if (Y.n_ctx == 0) trap_text("yblock: n_ctx must be at least 1 position");
    temp_free_all();
}

/* --- upload (the .did's upload methods, as shard_store.py) ---------------------------------- */

static int refuse_upload(const cd_type *result, uint32_t name_size) {
    icl_text t = text_begin();
    if (!caller_is_controller()) {
        icl_principal c = caller();
        icl_put(&t, "only controllers of ");
        put_describe(&t);
        icl_put(&t, " may upload; ");
        icl_put_principal(&t, &c);
        icl_put(&t, " is not one (add it with update_settings)");
    } else if (name_size == 0 || name_size > ICL_MAX_NAME_BYTES) {
        icl_put(&t, "a shard name must have 1 to 255 bytes, got ");
        icl_put_int(&t, name_size);
    } else {
        return 0;
    }
    reply_err(result, &t);
    return 1;
}

static void reply_loaded_refusal(void) {
    icl_text t = text_begin();
    put_describe(&t);
    icl_put(&t, " has loaded shard ");
    put_quoted(&t, Y.upload.name, Y.upload.name_size);
    icl_put(&t, "; its bytes cannot change now. Reinstall the canister to hold another shard");
    reply_err(&T_RESULT_NAT64, &t);
}

__attribute__((export_name("canister_update upload_chunk"))) void upload_chunk(void) {
    cd_reader *r = args_begin("upload_chunk");
    const uint8_t *name, *data;
    uint32_t name_size, size;
    uint64_t offset;
    cd_read_text(r, cd_arg(r, 0), &name, &name_size);
    cd_read_nat64(r, cd_arg(r, 1), &offset);
    cd_read_blob(r, cd_arg(r, 2), &data, &size);
    args_check(r, "upload_chunk");
    if (refuse_upload(&T_RESULT_NAT64, name_size)) return;
    icl_text t = text_begin();
    if (size > ICL_MAX_CHUNK_BYTES) {
        icl_put(&t, "a chunk holds at most 2097152 bytes, this one has ");
        icl_put(icl_put_int(&t, size), "; send smaller chunks");
        return reply_err(&T_RESULT_NAT64, &t);
    }
    icl_upload record = Y.upload;
    if (!icl_upload_same_name(&record, name, name_size)) {
        if (offset != 0) {
            put_describe(&t);
            icl_put(&t, " holds no bytes of ");
            put_quoted(&t, name, name_size);
            icl_put(&t, " (it holds ");
            icl_put_int(&t, (int64_t)record.held);
            icl_put(&t, " bytes of ");
            put_quoted(&t, record.name, record.name_size);
            icl_put(&t, "); start ");
            put_quoted(&t, name, name_size);
            icl_put(&t, " at offset 0");
            return reply_err(&T_RESULT_NAT64, &t);
        }
        if (record.loaded) return reply_loaded_refusal();
        icl_upload_reset(&record, name, name_size);
    }
    if (offset > record.held) {
        icl_put(&t, "chunk of ");
        put_quoted(&t, name, name_size);
        icl_put(icl_put_int(icl_put(&t, " at offset "), (int64_t)offset), " skips past the ");
        icl_put(icl_put_int(&t, (int64_t)record.held), " bytes held; resume from offset ");
        icl_put(icl_put_int(&t, (int64_t)record.held), " (see upload_status)");
        return reply_err(&T_RESULT_NAT64, &t);
    }
    uint64_t end = offset + size, overlap = (end < record.held ? end : record.held) - offset;
    if (overlap > 0) {
        uint8_t *held = temp_alloc(overlap);
        if (!held) trap_text("yblock: the heap cannot grow to compare a chunk");
        ic0_stable64_read((uintptr_t)held, ICL_DATA_OFFSET + offset, overlap);
        int same = 1;
        for (uint64_t i = 0; i < overlap && same; i++) same = held[i] == data[i];
        if (!same) {
            if (record.loaded) return reply_loaded_refusal();
            if (offset != 0) {
                icl_put(&t, "chunk of ");
                put_quoted(&t, name, name_size);
                icl_put(icl_put_int(icl_put(&t, " at offset "), (int64_t)offset),
                        " differs from the bytes already held there; to replace the upload, start again at offset 0");
                return reply_err(&T_RESULT_NAT64, &t);
            }
            icl_upload_reset(&record, name, name_size); /* a new file from offset 0 */
            overlap = 0;
        }
    }
    int changed = !icl_upload_same_name(&Y.upload, name, name_size) || record.held != Y.upload.held;
    if (size > overlap) {
        if (record.loaded) return reply_loaded_refusal();
        if (!icl_stable_ensure(ICL_DATA_OFFSET + end)) {
            icl_put(icl_put_int(icl_put(&t, "stable memory cannot grow to "), (int64_t)(ICL_DATA_OFFSET + end)),
                    " bytes; the shard is too big for this canister");
            trap_text(t.buf);
        }
        ic0_stable64_write(ICL_DATA_OFFSET + record.held, (uintptr_t)(data + overlap), size - overlap);
        icl_sha256_update(&record.hasher, data + overlap, size - overlap);
        record.held = end;
        record.committed = 0;
        changed = 1;
    }
    if (changed) icl_upload_write(&record);
    Y.upload = record;
    cd_writer w = reply_begin(&T_RESULT_NAT64, 0);
    cd_write_leb(&w, 0);
    cd_write_u64(&w, record.held);
    reply_send(&w);
}

__attribute__((export_name("canister_query upload_status"))) void upload_status(void) {
    cd_reader *r = args_begin("upload_status");
    const uint8_t *name;
    uint32_t name_size;
    cd_read_text(r, cd_arg(r, 0), &name, &name_size);
    args_check(r, "upload_status");
    int same = icl_upload_same_name(&Y.upload, name, name_size);
    cd_writer w = reply_begin(&T_UPLOAD_STATUS, name_size);
    if (same && Y.upload.committed) {
        char hex[64];
        icl_sha256_hex(Y.upload.sha256, hex);
        cd_write_u8(&w, 1);
        write_cstr(&w, hex, 64);
    } else {
        cd_write_u8(&w, 0);
    }
    cd_write_u64(&w, same ? Y.upload.held : 0);
    cd_write_text(&w, (const char *)name, name_size);
    cd_write_u8(&w, same && Y.upload.loaded);
    reply_send(&w);
}

__attribute__((export_name("canister_update upload_commit"))) void upload_commit(void) {
    cd_reader *r = args_begin("upload_commit");
    const uint8_t *name;
    uint32_t name_size;
    uint64_t size;
    cd_read_text(r, cd_arg(r, 0), &name, &name_size);
    cd_read_nat64(r, cd_arg(r, 1), &size);
    args_check(r, "upload_commit");
    if (refuse_upload(&T_RESULT_TEXT, name_size)) return;
    int same = icl_upload_same_name(&Y.upload, name, name_size);
    if (!same || Y.upload.held != size) {
        icl_text t = text_begin();
        uint64_t held = same ? Y.upload.held : 0;
        put_describe(&t);
        icl_put(icl_put_int(icl_put(&t, " holds "), (int64_t)held), " of the ");
        icl_put(icl_put_int(&t, (int64_t)size), " bytes of ");
        put_quoted(&t, name, name_size);
        icl_put(icl_put_int(icl_put(&t, "; upload the rest from offset "), (int64_t)held), " before committing");
        return reply_err(&T_RESULT_TEXT, &t);
    }
    if (!Y.upload.committed) {
        icl_sha256_final(&Y.upload.hasher, Y.upload.sha256);
        Y.upload.committed = 1;
        icl_upload_write(&Y.upload);
    }
    char hex[64];
    icl_sha256_hex(Y.upload.sha256, hex);
    cd_writer w = reply_begin(&T_RESULT_TEXT, 64);
    cd_write_leb(&w, 0);
    write_cstr(&w, hex, 64);
    reply_send(&w);
}

/* --- load ------------------------------------------------------------------------------------ */

static void *parse_allocations[MAX_PARSE_ALLOCATIONS];
static uint32_t n_parse_allocations;

/* What the shard parse allocates, remembered so that a failed parse leaves no garbage behind. */
static void *parse_alloc(size_t size) {
    if (n_parse_allocations == MAX_PARSE_ALLOCATIONS) return 0;
    void *p = icl_alloc(size);
    if (p) parse_allocations[n_parse_allocations++] = p;
    return p;
}

/* Loads the committed shard into the heap; 0, or -1 with the reason in t. */
static int load_shard(icl_text *t) {
    if (!Y.upload.name_size || !Y.upload.committed) {
        put_describe(t);
        icl_put(t, " cannot load its shard: ");
        put_describe(t);
        if (!Y.upload.name_size) {
            icl_put(t, " holds no shard; upload it with upload_chunk and upload_commit, then call load");
        } else {
            icl_put(icl_put_int(icl_put(t, " holds "), (int64_t)Y.upload.held), " bytes of ");
            put_quoted(t, Y.upload.name, Y.upload.name_size);
            icl_put(t, " but they are not committed; finish the upload and call upload_commit (which verifies the "
                       "sha256) before load");
        }
        return -1;
    }
    uint8_t *file = icl_alloc(Y.upload.held);
    if (!file) {
        put_describe(t);
        icl_put(t, " cannot load ");
        put_quoted(t, Y.upload.name, Y.upload.name_size);
        icl_put(icl_put_int(icl_put(t, ": its weights need "), (int64_t)Y.upload.held),
                " bytes of heap and the canister's memory cannot grow to hold them; plan smaller shards "
                "(--shard-bytes) or raise the canister's wasm_memory_limit");
        return -1;
    }
    ic0_stable64_read((uintptr_t)file, ICL_DATA_OFFSET, Y.upload.held);
    char err[1024];
    icl_shard *shard = 0;
    n_parse_allocations = 0;
    int rc = icl_shard_parse(file, Y.upload.held, (int)Y.n_ctx, parse_alloc, &shard, err, sizeof err);
    icl_shard_info info;
    if (rc == 0) {
        icl_shard_get_info(shard, &info);
        if ((int64_t)Y.n_ctx > info.n_ctx_train) {
            icl_text e = icl_text_on(err, sizeof err);
            icl_put(icl_put_int(icl_put(&e, "this yblock was installed for sessions of "), Y.n_ctx),
                    " positions, more than the model's trained context of ");
            icl_put(icl_put_int(&e, info.n_ctx_train), "; reinstall it with a smaller n_ctx");
            rc = -1;
        }
    }
    if (rc != 0) {
        while (n_parse_allocations) icl_free(parse_allocations[--n_parse_allocations]);
        icl_free(file);
        put_describe(t);
        icl_put(icl_put(t, " cannot load its shard: "), err);
        return -1;
    }
    Y.file = file;
    Y.shard = shard;
    Y.info = info;
    if (!Y.upload.loaded) {
        Y.upload.loaded = 1;
        icl_upload_write(&Y.upload);
    }
    return 0;
}

__attribute__((export_name("canister_update load"))) void load(void) {
    cd_reader *r = args_begin("load");
    args_check(r, "load");
    icl_text t = text_begin();
    if (!caller_is_controller()) {
        icl_put(&t, "only controllers of ");
        put_describe(&t);
        icl_put(&t, " may load its shard");
        return reply_err(&T_RESULT_INFO, &t);
    }
    if (!Y.shard && load_shard(&t) != 0) return reply_err(&T_RESULT_INFO, &t);
    const icl_shard_info *info = &Y.info;
    char hex[64];
    icl_sha256_hex(Y.upload.sha256, hex);
    cd_writer w = reply_begin(&T_RESULT_INFO, Y.upload.name_size + 64);
    cd_write_leb(&w, 0);
    cd_write_u32(&w, (uint32_t)info->last_layer);
    cd_write_u32(&w, (uint32_t)info->first_layer);
    write_cstr(&w, hex, 64);
    cd_write_u64(&w, icl_kv_bytes(Y.shard, (int)Y.n_ctx));
    write_cstr(&w, info->strategy, info->strategy_len);
    cd_write_u32(&w, (uint32_t)info->d_model);
    cd_write_text(&w, (const char *)Y.upload.name, Y.upload.name_size);
    write_cstr(&w, info->role, info->role_len);
    write_rows(&w);
    cd_write_u64(&w, info->weight_bytes);
    reply_send(&w);
}

/* --- install and upgrade --------------------------------------------------------------------- */

__attribute__((export_name("canister_init"))) void canister_init(void) {
    read_init_args();
    icl_upload_restore(&Y.upload);
}

/* The heap starts over: sessions are gone, and a shard that was loaded is loaded again. */
__attribute__((export_name("canister_post_upgrade"))) void canister_post_upgrade(void) {
    read_init_args();
    icl_upload_restore(&Y.upload);
    if (Y.upload.loaded) {
        icl_text t = text_begin();
        icl_put(&t, "reloading the shard after the upgrade failed: ");
        icl_text reason = icl_text_on(message_buf + t.len, sizeof message_buf - t.len);
        if (load_shard(&reason) != 0) trap_text(message_buf);
    }
}

/* --- inference -------------------------------------------------------------------------------- */

static int refuse_caller(const cd_type *result, const char *method) {
    icl_principal c = caller();
    if (icl_principal_equal(&c, &Y.head)) return 0;
    icl_text t = text_begin();
    icl_put(&t, "only the head canister ");
    icl_put_principal(&t, &Y.head);
    icl_put(icl_put(icl_put(&t, " may call "), method), " on ");
    put_describe(&t);
    icl_put(&t, "; ");
    icl_put_principal(&t, &c);
    icl_put(&t, " may not");
    reply_err(result, &t);
    return 1;
}

typedef struct {
    float temperature, top_p, min_p, repeat_penalty;
    uint32_t top_k, repeat_last_n, step, n_recent;
    uint64_t seed;
    const uint8_t *recent; /* n_recent little-endian nat32 */
} sampling;

typedef struct {
    uint64_t session;
    uint32_t pos, n_tokens, activations_size;
    const uint8_t *activations;
    int has_sample;
    sampling sample;
} forward_request;

static void read_sampling(cd_reader *r, int32_t type, sampling *s) {
    uint32_t n, id, seen = 0;
    const uint8_t *fields;
    int32_t t;
    if (!cd_read_record(r, type, &n, &fields)) return;
    for (uint32_t i = 0; i < n && cd_record_field(r, &fields, &id, &t); i++) {
        switch (id) {
        case 141061443u: cd_read_float32(r, t, &s->min_p); seen |= 1; break;
        case 338643201u: cd_read_nat32(r, t, &s->top_k); seen |= 2; break;
        case 338643206u: cd_read_float32(r, t, &s->top_p); seen |= 4; break;
        case 1016116276u: cd_read_float32(r, t, &s->temperature); seen |= 8; break;
        case 1280345457u: cd_read_nat64(r, t, &s->seed); seen |= 16; break;
        case 1281091404u: cd_read_nat32(r, t, &s->step); seen |= 32; break;
        case 2800190565u: cd_read_float32(r, t, &s->repeat_penalty); seen |= 64; break;
        case 3665758889u: cd_read_nat32(r, t, &s->repeat_last_n); seen |= 128; break;
        case 4259634331u: cd_read_vec_nat32(r, t, &s->recent, &s->n_recent); seen |= 256; break;
        default: cd_skip(r, t);
        }
    }
    missing_field(r, seen == 511, "Candid: SamplingRequest lacks one of its fields");
}

static void read_forward_request(cd_reader *r, forward_request *q) {
    uint32_t n, id, seen = 0;
    const uint8_t *fields;
    int32_t t, inner;
    if (cd_read_record(r, cd_arg(r, 0), &n, &fields))
        for (uint32_t i = 0; i < n && cd_record_field(r, &fields, &id, &t); i++) {
            switch (id) {
            case 5594516u: cd_read_nat32(r, t, &q->pos); seen |= 1; break;
            case 491413546u: /* sample: opt */
                if (cd_read_opt(r, t, &q->has_sample, &inner) && q->has_sample) read_sampling(r, inner, &q->sample);
                break;
            case 1071737629u: cd_read_blob(r, t, &q->activations, &q->activations_size); seen |= 2; break;
            case 2476218198u: cd_read_nat64(r, t, &q->session); seen |= 4; break;
            case 2483761739u: cd_read_nat32(r, t, &q->n_tokens); seen |= 8; break;
            default: cd_skip(r, t);
            }
        }
    missing_field(r, seen == 15, "Candid: ForwardRequest lacks one of session, pos, activations, n_tokens");
}

static session *find_session(uint64_t id) {
    for (uint32_t i = 0; i < Y.n_sessions; i++)
        if (Y.sessions[i].id == id) return &Y.sessions[i];
    return 0;
}

/* A new session's KV cache, or NULL when the heap cannot grow to hold it. */
static session *new_session(uint64_t id) {
    if (Y.n_sessions == Y.session_capacity) {
        uint32_t capacity = Y.session_capacity ? 2 * Y.session_capacity : 8;
        session *grown = icl_alloc(capacity * sizeof(session));
        if (!grown) return 0;
        for (uint32_t i = 0; i < Y.n_sessions; i++) grown[i] = Y.sessions[i];
        icl_free(Y.sessions);
        Y.sessions = grown;
        Y.session_capacity = capacity;
    }
    void *kv = icl_alloc(icl_kv_bytes(Y.shard, (int)Y.n_ctx));
    if (!kv) return 0;
    session *s = &Y.sessions[Y.n_sessions];
    *s = (session){id, 0, kv};
    return s; /* counted (n_sessions++) once its first forward succeeds */
}

static void put_float(icl_text *t, float v) { /* for messages only: sign, integer part, 6 decimals */
    if (v != v) {
        icl_put(t, "nan");
        return;
    }
    if (v < 0) icl_put(t, "-"), v = -v;
    if (v > 1e18f) {
        icl_put(t, "inf");
        return;
    }
    uint64_t whole = (uint64_t)v, frac = (uint64_t)((v - (float)whole) * 1e6f + 0.5f);
    if (frac >= 1000000) whole++, frac -= 1000000;
    icl_put_int(t, (int64_t)whole);
    char digits[8] = {'.'};
    for (int i = 6; i >= 1; i--, frac /= 10) digits[i] = (char)('0' + frac % 10);
    icl_put_n(t, digits, 7);
}

/* The sampling parameters' checks of canisters/llama/sampler.py (SamplingParams); 0 when valid. */
static int invalid_sampling(const sampling *s, icl_text *t) {
    const char *message = 0;
    float got = 0;
    if (!(s->temperature - s->temperature == 0)) message = "temperature must be a finite number (<= 0 means greedy)", got = s->temperature;
    else if (!(s->top_p > 0 && s->top_p <= 1)) message = "top_p must be in (0, 1] (1 turns it off)", got = s->top_p;
    else if (!(s->min_p >= 0 && s->min_p <= 1)) message = "min_p must be in [0, 1] (0 turns it off)", got = s->min_p;
    else if (!(s->repeat_penalty - s->repeat_penalty == 0 && s->repeat_penalty > 0))
        message = "repeat_penalty must be a positive number (1 turns it off)", got = s->repeat_penalty;
    if (!message) return 0;
    put_describe(t);
    icl_put(icl_put(icl_put(t, ": "), message), "; got ");
    put_float(t, got);
    return 1;
}

static uint32_t recent_at(const sampling *s, uint32_t i) {
    const uint8_t *p = s->recent + 4 * i;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* llama.cpp's repetition penalty on rows [start, stop) (logits[0] is row start), once per distinct
 * token of the window: the last repeat_last_n ids of `recent` (of those in the rows, for a slice).
 * 0, or -1 with the message when a window id is outside a stage holding every row. */
static int penalize(float *logits, uint32_t start, uint32_t stop, int all_rows, const sampling *s, icl_text *t) {
    if (s->repeat_penalty == 1.0f || s->repeat_last_n == 0 || s->n_recent == 0) return 0;
    uint32_t rows = stop - start, first = 0;
    if (all_rows) {
        first = s->n_recent > s->repeat_last_n ? s->n_recent - s->repeat_last_n : 0;
        uint32_t low = UINT32_MAX, high = 0;
        for (uint32_t i = first; i < s->n_recent; i++) {
            uint32_t id = recent_at(s, i);
            low = id < low ? id : low;
            high = id > high ? id : high;
        }
        if (high >= rows) {
            put_describe(t);
            icl_put(icl_put_int(icl_put(t, ": recent token ids must be in [0, "), rows), "), got ");
            icl_put(icl_put_int(t, low), "..");
            icl_put_int(t, high);
            return -1;
        }
    } else { /* the window is the last repeat_last_n of the ids that fall in the slice */
        uint32_t in_slice = 0;
        for (uint32_t i = s->n_recent; i-- > 0 && in_slice < s->repeat_last_n;) {
            uint32_t id = recent_at(s, i);
            if (id >= start && id < stop) in_slice++, first = i;
        }
        if (!in_slice) return 0;
    }
    uint8_t *done = temp_alloc((rows + 7) / 8);
    if (!done) trap_text("yblock: the heap cannot grow to apply the repetition penalty");
    for (uint32_t i = 0; i < (rows + 7) / 8; i++) done[i] = 0;
    float penalty = s->repeat_penalty;
    for (uint32_t i = first; i < s->n_recent; i++) {
        uint32_t id = recent_at(s, i);
        if (id < start || id >= stop) continue;
        id -= start;
        if (done[id / 8] & (1u << (id % 8))) continue;
        done[id / 8] |= (uint8_t)(1u << (id % 8));
        logits[id] = logits[id] <= 0 ? logits[id] * penalty : logits[id] / penalty;
    }
    return 0;
}

/* The sampler's logit checks (canisters/llama/sampler.py _checked_logits); 0 when they pass. */
static int unusable_logits(const float *logits, uint32_t rows, icl_text *t) {
    int all_neg_inf = 1;
    for (uint32_t i = 0; i < rows; i++) {
        float v = logits[i];
        if (v != v || v > 3.4028235e38f) {
            put_describe(t);
            icl_put(t, ": logits contain NaN or +inf; the forward pass diverged (check the weights and inputs)");
            return 1;
        }
        if (v >= -3.4028235e38f) all_neg_inf = 0;
    }
    if (!all_neg_inf) return 0;
    put_describe(t);
    icl_put(t, ": every logit is -inf; no token can be sampled");
    return 1;
}

/* Restores the min-heap property from slot i down (heap of the k highest values seen). */
static void sift_down(float *heap, uint32_t k, uint32_t i) {
    for (;;) {
        uint32_t smallest = i, l = 2 * i + 1, r = l + 1;
        if (l < k && heap[l] < heap[smallest]) smallest = l;
        if (r < k && heap[r] < heap[smallest]) smallest = r;
        if (smallest == i) return;
        float v = heap[i];
        heap[i] = heap[smallest];
        heap[smallest] = v;
        i = smallest;
    }
}

/* The k-th highest logit (counting equal values), as np.partition(logits, n - k)[n - k]. */
static float kth_highest(const float *logits, uint32_t n, uint32_t k, float *heap) {
    for (uint32_t i = 0; i < k; i++) heap[i] = logits[i];
    for (uint32_t i = k / 2; i-- > 0;) sift_down(heap, k, i);
    for (uint32_t i = k; i < n; i++)
        if (logits[i] > heap[0]) {
            heap[0] = logits[i];
            sift_down(heap, k, 0);
        }
    return heap[0];
}

/* The output stage's answer from logits of rows [start, stop): its greedy token when it holds
 * every row (written here, as the reply's `token`), else its candidates for the head to sample
 * from: 1 and *k (top_k, 1 when greedy, 0 for every row), written by write_candidates.
 * 0 once the token is written, or -1 with the refusal in t. */
static int sample_reply(cd_writer *w, float *logits, const sampling *s, icl_text *t, uint32_t *k) {
    uint32_t start = (uint32_t)Y.info.output_start, stop = (uint32_t)Y.info.output_stop, rows = stop - start;
    int all_rows = start == 0 && stop == (uint32_t)Y.info.n_vocab, greedy = s->temperature <= 0;
    if (invalid_sampling(s, t)) return -1;
    if (all_rows && greedy && unusable_logits(logits, rows, t)) return -1;
    if (penalize(logits, start, stop, all_rows, s, t) != 0) return -1;
    if (!(all_rows && greedy)) {
        *k = greedy ? 1 : s->top_k;
        cd_write_u8(w, 0); /* token: none */
        return 1;
    }
    uint32_t best = 0;
    for (uint32_t i = 1; i < rows; i++)
        if (logits[i] > logits[best]) best = i;
    cd_write_u8(w, 1);
    cd_write_u32(w, best);
    return 0;
}

static void write_candidates(cd_writer *w, const float *logits, uint32_t k) {
    uint32_t start = (uint32_t)Y.info.output_start, rows = (uint32_t)Y.info.output_stop - start;
    cd_write_u8(w, 1);
    if (!(k > 0 && k < rows)) { /* every row, in order */
        cd_write_leb(w, 0);
        cd_write_leb(w, rows);
        cd_write_bytes(w, logits, (size_t)rows * 4);
        return;
    }
    float *heap = temp_alloc((size_t)k * 4);
    if (!heap) trap_text("yblock: the heap cannot grow to select the candidates");
    float cut = kth_highest(logits, rows, k, heap);
    uint32_t above = 0;
    for (uint32_t i = 0; i < rows; i++) above += logits[i] > cut;
    cd_write_leb(w, k);
    for (uint32_t i = 0; i < rows; i++)
        if (logits[i] > cut) cd_write_u32(w, start + i);
    for (uint32_t i = 0, tied = 0; i < rows && above + tied < k; i++)
        if (logits[i] == cut) cd_write_u32(w, start + i), tied++;
    cd_write_leb(w, k);
    for (uint32_t i = 0; i < rows; i++)
        if (logits[i] > cut) cd_write_f32(w, logits[i]);
    for (uint32_t i = 0, tied = 0; i < rows && above + tied < k; i++)
        if (logits[i] == cut) cd_write_f32(w, logits[i]), tied++;
}

__attribute__((export_name("canister_update forward"))) void forward(void) {
    cd_reader *r = args_begin("forward");
    forward_request q = {0};
    read_forward_request(r, &q);
    args_check(r, "forward");
    if (refuse_caller(&T_RESULT_FORWARD, "forward")) return;
    icl_text t = text_begin();
    if (!Y.shard) {
        put_describe(&t);
        icl_put(&t, " has no shard loaded; a controller must upload it and call load");
        return reply_err(&T_RESULT_FORWARD, &t);
    }
    uint32_t n = q.n_tokens, d = (uint32_t)Y.info.d_model;
    uint64_t expected = (uint64_t)n * d * 4;
    if (n < 1 || q.activations_size != expected) {
        put_describe(&t);
        icl_put(icl_put_int(icl_put(&t, ": activations must be "), n), " x ");
        icl_put(icl_put_int(&t, d), " little-endian f32 (");
        icl_put(icl_put_int(&t, (int64_t)expected), " bytes) with n_tokens >= 1, got ");
        icl_put(icl_put_int(&t, q.activations_size), " bytes");
        return reply_err(&T_RESULT_FORWARD, &t);
    }
    float *x = temp_alloc(expected);
    void *scratch = temp_alloc(icl_scratch_bytes(Y.shard, (int)n));
    if (!x || !scratch) {
        put_describe(&t);
        icl_put(icl_put_int(icl_put(&t, " cannot hold the work of "), n),
                " tokens in its heap; send fewer tokens per call (a smaller prefill chunk)");
        return reply_err(&T_RESULT_FORWARD, &t);
    }
    for (uint64_t i = 0; i < expected; i++) ((uint8_t *)x)[i] = q.activations[i];
    if (Y.info.last_layer > Y.info.first_layer) {
        session *s = find_session(q.session);
        int is_new = !s;
        if (is_new && !(s = new_session(q.session))) {
            uint64_t kv = icl_kv_bytes(Y.shard, (int)Y.n_ctx);
            put_describe(&t);
            icl_put(icl_put_int(icl_put(&t, " is full: a new session needs "), (int64_t)(kv + SESSION_OVERHEAD_BYTES)),
                    " bytes of KV cache but the heap cannot grow to hold them (");
            icl_put(icl_put_int(&t, Y.n_sessions), " sessions hold ");
            icl_put(icl_put_int(&t, (int64_t)(kv * Y.n_sessions)),
                    " bytes); retry when a session ends, or deploy with more yblocks (--shards) or a smaller context");
            return reply_err(&T_RESULT_FORWARD, &t);
        }
        char err[512];
        if (icl_forward_layers(Y.shard, s->kv, (int)Y.n_ctx, &s->length, (int)q.pos, x, (int)n, scratch, err,
                               sizeof err) != 0) {
            if (is_new) icl_free(s->kv);
            put_describe(&t);
            icl_put(icl_put_int(icl_put(&t, ", session "), (int64_t)q.session), ": ");
            icl_put(&t, err);
            return reply_err(&T_RESULT_FORWARD, &t);
        }
        if (is_new) Y.n_sessions++;
    }
    uint32_t rows = Y.info.has_output ? (uint32_t)(Y.info.output_stop - Y.info.output_start) : 0;
    int sampled = Y.info.has_output && q.has_sample;
    size_t payload = Y.info.has_output ? (sampled ? (size_t)rows * 8 : 0) : expected;
    cd_writer w = reply_begin(&T_RESULT_FORWARD, payload);
    cd_write_leb(&w, 0);
    float *logits = 0;
    uint32_t k = 0;
    int candidates = 0;
    if (!sampled) {
        cd_write_u8(&w, 0); /* token: none */
    } else {
        logits = temp_alloc((size_t)rows * 4);
        if (!logits) trap_text("yblock: the heap cannot grow to hold the logits");
        icl_output_logits(Y.shard, x + (size_t)(n - 1) * d, 1, logits, scratch);
        candidates = sample_reply(&w, logits, &q.sample, &t, &k);
        if (candidates < 0) return reply_err(&T_RESULT_FORWARD, &t);
    }
    if (Y.info.has_output) { /* activations: none from an output stage */
        cd_write_leb(&w, 0);
    } else {
        cd_write_leb(&w, expected);
        cd_write_bytes(&w, x, expected);
    }
    cd_write_u64(&w, ic0_performance_counter(0));
    if (candidates)
        write_candidates(&w, logits, k);
    else
        cd_write_u8(&w, 0); /* candidates: none */
    reply_send(&w);
}

__attribute__((export_name("canister_update reset_session"))) void reset_session(void) {
    cd_reader *r = args_begin("reset_session");
    uint64_t id;
    cd_read_nat64(r, cd_arg(r, 0), &id);
    args_check(r, "reset_session");
    if (refuse_caller(&T_RESULT_BOOL, "reset_session")) return;
    session *s = find_session(id);
    if (s) {
        icl_free(s->kv);
        *s = Y.sessions[--Y.n_sessions];
    }
    cd_writer w = reply_begin(&T_RESULT_BOOL, 0);
    cd_write_leb(&w, 0);
    cd_write_u8(&w, s != 0);
    reply_send(&w);
}

/* --- queries ---------------------------------------------------------------------------------- */

__attribute__((export_name("canister_query status"))) void status(void) {
    cd_reader *r = args_begin("status");
    args_check(r, "status");
    const icl_shard_info *info = &Y.info;
    int loaded = Y.shard != 0;
    cd_writer w = reply_begin(&T_STATUS, Y.upload.name_size + 64);
    cd_write_u32(&w, loaded ? (uint32_t)info->last_layer : 0);
    cd_write_u32(&w, loaded ? (uint32_t)info->first_layer : 0);
    cd_write_u64(&w, loaded ? icl_kv_bytes(Y.shard, (int)Y.n_ctx) : 0);
    cd_write_u8(&w, 1);
    cd_write_leb(&w, Y.head.size);
    cd_write_bytes(&w, Y.head.bytes, Y.head.size);
    cd_write_text(&w, (const char *)Y.upload.name, Y.upload.name_size);
    if (loaded) write_cstr(&w, info->role, info->role_len);
    else write_cstr(&w, "", 0);
    cd_write_u8(&w, (uint8_t)loaded);
    /* A canister cannot read its wasm_memory_limit: memory.grow failing is how it meets it. The
     * bound it can state is wasm32's address space. */
    cd_write_u64(&w, WASM32_ADDRESS_SPACE);
    cd_write_u32(&w, Y.n_sessions);
    cd_write_u32(&w, Y.n_ctx);
    cd_write_u64(&w, Y.upload.held);
    write_rows(&w);
    cd_write_u64(&w, icl_heap_bytes());
    reply_send(&w);
}

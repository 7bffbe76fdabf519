/* The model compute of a yblock: one shard of a Llama or Qwen2 model, read from its GGUF file.

   A shard is a contiguous range of transformer layers, with a KV cache per session, and on the
   last stage also the final norm and rows of the output matrix (output.weight, or token_embd when
   the embeddings are tied). It mirrors canisters/llama/model.py op for op (LayerStack.forward,
   KVCache, OutputHead), so that logits agree with the Python path within float rounding.

   Plain C for freestanding wasm32 (and natively, for tests): no libc, no global mutable state.
   The caller owns all memory: the shard file bytes (weights are used in place, kept quantized),
   what `alloc` returns at parse, each session's KV cache, and the scratch of a call. */
#ifndef ICL_MODEL_H
#define ICL_MODEL_H

#include <stddef.h>
#include <stdint.h>

typedef struct icl_shard icl_shard;

/* What the shard says about itself (icllama.shard.* metadata, as sharding/export.py writes it)
   and the model facts a canister reports. Strings point into the file and are not terminated. */
typedef struct {
    const char *name;
    size_t name_len;
    const char *role; /* "layers" or "output" ("head" shards are refused at parse) */
    size_t role_len;
    const char *strategy; /* "quantized" or "dequantize" */
    size_t strategy_len;
    int first_layer; /* layers first_layer .. last_layer - 1; equal when the shard holds none */
    int last_layer;
    int has_output; /* holds output_norm and rows [output_start, output_stop) of the output matrix */
    int output_start;
    int output_stop;
    int d_model;
    int n_vocab;
    int n_ctx_train;
    int n_ctx; /* the context the shard was parsed for (its rope table's length) */
    size_t weight_bytes; /* tensor bytes used in place, plus what parse allocated */
} icl_shard_info;

/* Parses the shard file gguf[0..len) for sessions of up to n_ctx positions. The bytes must stay
   in place, unchanged, for the shard's life: weights are read from them. Allocates the shard and
   its rope table with `alloc` (never freed by this code; `alloc` returning NULL is an error).
   Returns 0 and sets *out, or returns -1 with a message (what is wrong and what to do) in err. */
int icl_shard_parse(const uint8_t *gguf, size_t len, int n_ctx, void *(*alloc)(size_t), icl_shard **out,
                    char *err, size_t err_cap);

void icl_shard_get_info(const icl_shard *s, icl_shard_info *out);

/* Bytes of one session's KV cache for this shard's layers at n_ctx positions (0 without layers;
   SIZE_MAX when more than the address space holds). The caller provides that memory to
   icl_forward_layers; its contents need no initialization. */
size_t icl_kv_bytes(const icl_shard *s, int n_ctx);

/* Bytes of scratch a forward or output call of up to n_tokens tokens needs (n_ctx as parsed;
   SIZE_MAX when more than the address space holds). */
size_t icl_scratch_bytes(const icl_shard *s, int n_tokens);

/* Runs x (n_tokens x d_model f32, in place) at positions pos .. pos + n_tokens - 1 through the
   shard's layers, reading and writing the session's cache `kv` (icl_kv_bytes(s, n_ctx) bytes).
   *length is the session's count of committed positions: pos may not skip past it, and it is set
   to pos + n_tokens only when the call succeeds, so a failed or interrupted call leaves the
   committed cache intact and the same position can be retried. n_ctx may not exceed the parsed
   n_ctx. scratch: icl_scratch_bytes(s, n_tokens) bytes, 16-byte aligned.
   Returns 0, or -1 with the message model.py raises for the same case in err. */
int icl_forward_layers(const icl_shard *s, void *kv, int n_ctx, int *length, int pos, float *x, int n_tokens,
                       void *scratch, char *err, size_t err_cap);

/* Output stage: logits (n_tokens x rows held, rows = output_stop - output_start) of the final norm
   of x (n_tokens x d_model f32, left unchanged) times the held rows of the output matrix.
   Does nothing on a shard without output. scratch as for icl_forward_layers. */
void icl_output_logits(const icl_shard *s, const float *x, int n_tokens, float *logits, void *scratch);

#endif

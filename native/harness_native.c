/* libharness_native: the harness's timed decode loop, without Python between the tokens.
 *
 * Called with ctypes from harness/native.py (which releases the GIL for the whole call). It runs
 * on the llama_context that llama-cpp-python created, through the same libllama, and does what
 * harness.engine.generate() does: clear the KV cache, prefill in n_batch chunks, then sample and
 * decode one token at a time with the same sampler chain. It fills caller-owned arrays with token
 * ids and CLOCK_MONOTONIC timestamps (the clock of Python's time.perf_counter_ns on Linux), so
 * the Python side computes every metric exactly as for its own path. It never prints or exits:
 * the return code says what went wrong.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime and CLOCK_MONOTONIC under strict ISO C too */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "llama.h"

/* Bump on any change of the structs or signatures below; harness/native.py refuses a library
 * whose version differs from its own constant. Overridable only so tests can build a mismatch. */
#ifndef HARNESS_NATIVE_ABI
#define HARNESS_NATIVE_ABI 1
#endif

/* sha256 of the llama.h this file was compiled against (set by CMake). The struct layouts and
 * signatures of llama.h are not versioned by a macro, so the header's hash is what tells a
 * library built against another llama.cpp apart. */
#ifndef HARNESS_LLAMA_H_SHA
#define HARNESS_LLAMA_H_SHA "unknown"
#endif

/* Return codes. A llama_decode failure returns HARNESS_E_DECODE + its own (small) return code. */
#define HARNESS_OK 0
#define HARNESS_E_ARGS (-1)        /* a NULL pointer or a count out of range */
#define HARNESS_E_NO_FIT (-2)      /* prompt + max_tokens does not fit in the context */
#define HARNESS_E_SAMPLER (-3)     /* the sampler chain could not be built */
#define HARNESS_E_DECODE (-1000)

/* Sampling parameters, mirrored by harness.native._Sampling (keep the order and types). */
struct harness_sampling {
    float temperature;      /* <= 0: greedy */
    float top_p;
    float min_p;
    float repeat_penalty;   /* 1: no penalties sampler */
    int32_t top_k;          /* <= 0: no top-k sampler */
    uint32_t seed;
    int32_t ignore_eos;     /* nonzero: end-of-generation tokens get a -inf logit bias */
    int32_t n_vocab;
    const int32_t * eog;    /* end-of-generation token ids (n_eog of them) */
    int32_t n_eog;
};

int harness_native_abi_version(void) { return HARNESS_NATIVE_ABI; }

const char * harness_native_llama_build(void) { return HARNESS_LLAMA_H_SHA; }

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The chain of harness.engine._sampler, in the same order, so both paths sample alike. */
static struct llama_sampler * make_chain(const struct harness_sampling * sp) {
    struct llama_sampler * chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
    if (chain == NULL) {
        return NULL;
    }
    if (sp->ignore_eos && sp->n_eog > 0) {
        llama_logit_bias * bias = malloc((size_t) sp->n_eog * sizeof *bias);
        if (bias == NULL) {
            llama_sampler_free(chain);
            return NULL;
        }
        for (int32_t i = 0; i < sp->n_eog; i++) {
            bias[i].token = sp->eog[i];
            bias[i].bias = -INFINITY;
        }
        /* the sampler copies the biases */
        llama_sampler_chain_add(chain, llama_sampler_init_logit_bias(sp->n_vocab, sp->n_eog, bias));
        free(bias);
    }
    if (sp->repeat_penalty != 1.0f) {
        llama_sampler_chain_add(chain, llama_sampler_init_penalties(sp->n_vocab, 64, sp->repeat_penalty, 0.0f, 0.0f));
    }
    if (sp->temperature <= 0.0f) {
        llama_sampler_chain_add(chain, llama_sampler_init_greedy());
    } else {
        if (sp->top_k > 0) {
            llama_sampler_chain_add(chain, llama_sampler_init_top_k(sp->top_k));
        }
        llama_sampler_chain_add(chain, llama_sampler_init_top_p(sp->top_p, 1));
        llama_sampler_chain_add(chain, llama_sampler_init_min_p(sp->min_p, 1));
        llama_sampler_chain_add(chain, llama_sampler_init_temp(sp->temperature));
        llama_sampler_chain_add(chain, llama_sampler_init_dist(sp->seed));
    }
    return chain;
}

/* llama_decode may return before the backend has finished (CUDA runs the graph asynchronously and
 * the wait happens when the logits are read). Synchronising here charges the compute to decode
 * time, not to the sampling of the next token. */
static int timed_decode(struct llama_context * ctx, llama_token * tokens, int32_t n, int64_t * ns) {
    const int64_t t0 = now_ns();
    const int32_t rc = llama_decode(ctx, llama_batch_get_one(tokens, n));
    llama_synchronize(ctx);
    *ns += now_ns() - t0;
    return rc;
}

int harness_native_generate(struct llama_context * ctx, const int32_t * prompt, int32_t n_prompt, int32_t n_batch,
                            const struct harness_sampling * sp, int32_t max_tokens,
                            int32_t * out_tokens, int64_t * out_t_ns, int64_t * out_decode_ns,
                            int64_t * out_sample_ns, int64_t * out_t_request_ns, int64_t * out_t_prefill_end_ns,
                            int32_t * out_n_generated) {
    if (ctx == NULL || prompt == NULL || sp == NULL || out_tokens == NULL || out_t_ns == NULL ||
        out_decode_ns == NULL || out_sample_ns == NULL || out_t_request_ns == NULL ||
        out_t_prefill_end_ns == NULL || out_n_generated == NULL || n_prompt <= 0 || n_batch <= 0 ||
        max_tokens <= 0 || sp->n_eog < 0 || (sp->n_eog > 0 && sp->eog == NULL)) {
        return HARNESS_E_ARGS;
    }
    *out_n_generated = 0;
    *out_t_request_ns = 0;
    *out_t_prefill_end_ns = 0;  /* stays 0 when the prefill fails */
    if ((int64_t) n_prompt + max_tokens > (int64_t) llama_n_ctx(ctx)) {
        return HARNESS_E_NO_FIT;
    }
    struct llama_sampler * chain = make_chain(sp);
    if (chain == NULL) {
        return HARNESS_E_SAMPLER;
    }
    const struct llama_vocab * vocab = llama_model_get_vocab(llama_get_model(ctx));

    /* Nothing of the previous repetition survives: no prefix reuse between repetitions. */
    llama_memory_clear(llama_get_memory(ctx), true);

    int rc = HARNESS_OK;
    *out_t_request_ns = now_ns();  /* informational: the Python side's t_request (before tokenising) counts */
    out_decode_ns[0] = 0;
    for (int32_t i = 0; i < n_prompt; i += n_batch) {
        const int32_t m = n_prompt - i < n_batch ? n_prompt - i : n_batch;
        /* llama_batch_get_one wants a mutable pointer; llama_decode only reads the tokens */
        const int32_t d = timed_decode(ctx, (llama_token *) prompt + i, m, &out_decode_ns[0]);
        if (d != 0) {
            rc = HARNESS_E_DECODE + d;
            goto done;
        }
    }
    *out_t_prefill_end_ns = now_ns();

    llama_token tok = 0;
    for (int32_t i = 0; i < max_tokens; i++) {
        const int64_t t0 = now_ns();
        tok = llama_sampler_sample(chain, ctx, -1);
        const int64_t t1 = now_ns();
        out_tokens[i] = tok;
        out_t_ns[i] = t1;
        out_sample_ns[i] = t1 - t0;
        *out_n_generated = i + 1;
        if (i == max_tokens - 1 || (!sp->ignore_eos && llama_vocab_is_eog(vocab, tok))) {
            break;
        }
        out_decode_ns[i + 1] = 0;
        const int32_t d = timed_decode(ctx, &tok, 1, &out_decode_ns[i + 1]);
        if (d != 0) {
            rc = HARNESS_E_DECODE + d;
            goto done;
        }
    }
done:
    llama_sampler_free(chain);
    return rc;
}

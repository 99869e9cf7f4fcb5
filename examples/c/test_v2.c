/* The calls of ABI version 2: loading from a buffer and from a file descriptor into the
 * middle of a larger file, the log and abort callbacks, per-request status in a mixed batch,
 * the catalog, config and memory queries, the memory budget. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* The whole file in a malloc'd buffer; NULL on failure. */
static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n)) != NULL) {
            if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
                free(buf);
                buf = NULL;
            } else {
                *len = (size_t)n;
            }
        }
    }
    fclose(f);
    return buf;
}

static onerec_model_params cpu_params(void) {
    onerec_model_params p = onerec_model_default_params();
    p.backend = ONEREC_BACKEND_CPU;
    return p;
}

/* A request for the first `n` catalog items (held in `history`). */
static onerec_request first_items(const onerec_model *model, uint64_t *history, size_t n) {
    for (size_t i = 0; i < n; i++) CHECK_OK(onerec_model_item_at(model, i, &history[i], NULL, 0));
    onerec_request r = onerec_request_default_params();
    r.history = history;
    r.n_history = n;
    r.beam = 8;
    r.results = 3;
    return r;
}

/* The best session's items and score of request `i`, to compare two models' answers. */
typedef struct {
    size_t n;
    uint64_t items[16];
    float score;
} best;

static best best_of(const onerec_context *ctx, size_t i) {
    best b = {0};
    onerec_session s;
    if (onerec_results_session(ctx, i, 0, &s) == ONEREC_STATUS_OK && s.n_items <= 16) {
        b.n = s.n_items;
        memcpy(b.items, s.items, s.n_items * sizeof *s.items);
        b.score = s.score;
    }
    return b;
}

/* Equal sessions; scores within the beam tolerance (a batch decodes with other matrix
 * shapes than a single request, so float rounding differs). */
static int same(best a, best b) {
    float d = a.score - b.score;
    return a.n > 0 && a.n == b.n && memcmp(a.items, b.items, a.n * sizeof *a.items) == 0 && d <= 1e-3f && d >= -1e-3f;
}

/* Runs `r` alone on `model`; the best session. */
static best run_one(const onerec_model *model, const onerec_request *r) {
    onerec_context *ctx = NULL;
    best b = {0};
    CHECK_OK(onerec_context_new(model, &ctx));
    if (!ctx) return b;
    CHECK_OK(onerec_recommend(ctx, r, 1));
    b = best_of(ctx, 0);
    onerec_context_free(ctx);
    return b;
}

static void test_defaults(void) {
    onerec_model_params p = onerec_model_default_params();
    CHECK(p.backend == ONEREC_BACKEND_AUTO && p.device_index == -1 && p.kv_precision == ONEREC_KV_AUTO &&
              p.cpu_threads == 0 && p.verify == ONEREC_VERIFY_AUTO && p.memory_budget == 0,
          "default params");
    CHECK(onerec_abi_version() == 2, "ABI version 2, got %u", onerec_abi_version());
    CHECK(strcmp(onerec_status_name(ONEREC_STATUS_CANCELLED), "ONEREC_STATUS_CANCELLED") == 0, "status name");
    CHECK(strcmp(onerec_status_name(ONEREC_STATUS_NON_FINITE), "ONEREC_STATUS_NON_FINITE") == 0, "status name");
    onerec_model *model = NULL;
    char dir[] = "/nonexistent";
    p = cpu_params();
    p.kv_precision = 7;
    CHECK_FAILS(onerec_model_load(dir, p, &model), ONEREC_STATUS_INVALID_ARGUMENT, "7");
    p = cpu_params();
    p.verify = 9;
    CHECK_FAILS(onerec_model_load(dir, p, &model), ONEREC_STATUS_INVALID_ARGUMENT, "9");
    CHECK(model == NULL, "a failed load wrote its out-parameter");
}

typedef struct {
    atomic_int messages;
    atomic_int above_level;
    int max_level;
} log_sink;

static void on_log(onerec_log_level level, const char *message, void *user_data) {
    log_sink *s = user_data;
    atomic_fetch_add(&s->messages, 1);
    if ((int)level > s->max_level || level < ONEREC_LOG_ERROR || !message || !message[0])
        atomic_fetch_add(&s->above_level, 1);
}

static void test_log(const char *model_file) {
    static log_sink sink;
    sink.max_level = ONEREC_LOG_INFO;
    CHECK_FAILS(onerec_log_set(on_log, &sink, 6), ONEREC_STATUS_INVALID_ARGUMENT, "6");
    CHECK_OK(onerec_log_set(on_log, &sink, ONEREC_LOG_INFO));
    onerec_model *model = NULL;
    CHECK_OK(onerec_model_load(model_file, cpu_params(), &model));
    CHECK(atomic_load(&sink.messages) > 0, "loading logged nothing at INFO");
    CHECK(atomic_load(&sink.above_level) == 0, "a message above the level, or an empty one");
    onerec_model_free(model);
    /* Removed: no more messages. */
    CHECK_OK(onerec_log_set(NULL, NULL, 0));
    int before = atomic_load(&sink.messages);
    model = NULL;
    CHECK_OK(onerec_model_load(model_file, cpu_params(), &model));
    CHECK(atomic_load(&sink.messages) == before, "messages after the callback was removed");
    onerec_model_free(model);
}

static void test_buffer_and_fd(const char *model_file) {
    onerec_model *by_path = NULL;
    CHECK_OK(onerec_model_load(model_file, cpu_params(), &by_path));
    if (!by_path) return;
    uint64_t history[3];
    onerec_request r = first_items(by_path, history, 3);
    best want = run_one(by_path, &r);
    CHECK(want.n > 0, "no session from the model file");

    size_t len = 0;
    unsigned char *bytes = read_file(model_file, &len);
    CHECK(bytes != NULL, "cannot read %s", model_file);
    if (!bytes) {
        onerec_model_free(by_path);
        return;
    }
    /* From a buffer: the library copies, so the buffer may go at once. */
    onerec_model *from_buffer = NULL;
    CHECK_OK(onerec_model_load_from_buffer(bytes, len, cpu_params(), &from_buffer));
    unsigned char first = bytes[0];
    memset(bytes, 0xff, len);
    if (from_buffer) {
        CHECK(same(run_one(from_buffer, &r), want), "buffer-loaded model answers differently");
        onerec_model_free(from_buffer);
    }
    bytes[0] = first;
    onerec_model *m = NULL;
    CHECK_FAILS(onerec_model_load_from_buffer(bytes, len, cpu_params(), &m), ONEREC_STATUS_INVALID_MODEL, "memory");
    CHECK_FAILS(onerec_model_load_from_buffer(NULL, len, cpu_params(), &m), ONEREC_STATUS_NULL_POINTER, "data");
    CHECK_FAILS(onerec_model_load_from_buffer(bytes, 10, cpu_params(), &m), ONEREC_STATUS_INVALID_MODEL, "memory");
    free(bytes);
    bytes = read_file(model_file, &len);

    /* From an fd into the middle of a larger file: 1000 bytes before, 777 after. */
    char path[] = "/tmp/onerec-test-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    if (fd >= 0 && bytes) {
        unlink(path);
        unsigned char pad[1000];
        memset(pad, 'x', sizeof pad);
        int ok = write(fd, pad, 1000) == 1000 && write(fd, bytes, len) == (ssize_t)len && write(fd, pad, 777) == 777;
        CHECK(ok, "writing the test file");
        off_t where = lseek(fd, 5, SEEK_SET);
        onerec_model *from_fd = NULL;
        CHECK_OK(onerec_model_load_from_fd(fd, 1000, len, cpu_params(), &from_fd));
        CHECK(lseek(fd, 0, SEEK_CUR) == where, "the fd's offset moved");
        if (from_fd) {
            CHECK(same(run_one(from_fd, &r), want), "fd-loaded model answers differently");
            onerec_model_free(from_fd);
        }
        CHECK_FAILS(onerec_model_load_from_fd(fd, 1000, len + 778, cpu_params(), &m), ONEREC_STATUS_IO, "inside");
        CHECK_FAILS(onerec_model_load_from_fd(fd, 1 << 30, 0, cpu_params(), &m), ONEREC_STATUS_IO, "inside");
        CHECK_FAILS(onerec_model_load_from_fd(fd, UINT64_MAX, 2, cpu_params(), &m), ONEREC_STATUS_IO, "inside");
        CHECK_FAILS(onerec_model_load_from_fd(fd, 1000, 0, cpu_params(), &m), ONEREC_STATUS_INVALID_MODEL, "fd");
        CHECK_FAILS(onerec_model_load_from_fd(-1, 0, 0, cpu_params(), &m), ONEREC_STATUS_INVALID_ARGUMENT, "fd");
        CHECK_FAILS(onerec_model_load_from_fd(fd, 1000, len, cpu_params(), NULL), ONEREC_STATUS_NULL_POINTER, "out_model");
        close(fd);
        CHECK(m == NULL, "a failed load wrote its out-parameter");
    }
    int pipe_fds[2];
    if (pipe(pipe_fds) == 0) {
        CHECK_FAILS(onerec_model_load_from_fd(pipe_fds[0], 0, 0, cpu_params(), &m), ONEREC_STATUS_IO, "regular");
        close(pipe_fds[0]);
        close(pipe_fds[1]);
    }
    free(bytes);
    onerec_model_free(by_path);
    printf("v2: buffer and fd loading\n");
}

static void test_queries(const char *model_file) {
    onerec_model *model = NULL;
    CHECK_OK(onerec_model_load(model_file, cpu_params(), &model));
    if (!model) return;
    onerec_model_info info;
    CHECK_OK(onerec_model_get_info(model, &info));
    CHECK(info.n_items > 0 && info.d_model > 0 && info.n_heads > 0 && info.n_dec_layers > 0 && info.file_bytes > 0,
          "info fields");
    const char *cfg = onerec_model_config_json(model);
    CHECK(cfg && strstr(cfg, "\"d_model\"") && strstr(cfg, "\"codebook_size\""), "config json: %s", cfg ? cfg : "NULL");
    CHECK(onerec_model_config_json(NULL) == NULL, "config of NULL");
    const char *backend = onerec_model_backend_name(model);
    CHECK(backend && strncmp(backend, "cpu", 3) == 0, "backend name %s", backend ? backend : "NULL");

    uint64_t id = 0, last = 0;
    uint32_t sid[16] = {0};
    CHECK(info.n_levels <= 16, "n_levels %zu", info.n_levels);
    CHECK_OK(onerec_model_item_at(model, info.n_items - 1, &last, sid, 16));
    CHECK_OK(onerec_model_item_at(model, 0, &id, NULL, 0));
    bool found = false;
    CHECK_OK(onerec_model_has_item(model, last, &found));
    CHECK(found, "the last catalog item is not in the catalog");
    size_t index = 0;
    CHECK_OK(onerec_model_item_index(model, last, &index));
    CHECK(index == info.n_items - 1, "index %zu", index);
    for (size_t l = 0; l < info.n_levels; l++) CHECK(sid[l] < info.codebook_size, "code %u", sid[l]);
    /* An id no catalog of this model holds: one past the largest. */
    uint64_t absent = 0;
    for (size_t i = 0; i < info.n_items; i++) {
        uint64_t x;
        if (onerec_model_item_at(model, i, &x, NULL, 0) == ONEREC_STATUS_OK && x >= absent) absent = x + 1;
    }
    CHECK_OK(onerec_model_has_item(model, absent, &found));
    CHECK(!found, "an absent id was found");
    CHECK_FAILS(onerec_model_item_index(model, absent, &index), ONEREC_STATUS_UNKNOWN_ITEM, "not in the");
    CHECK_FAILS(onerec_model_item_at(model, info.n_items, &id, NULL, 0), ONEREC_STATUS_OUT_OF_RANGE, "out of range");
    if (info.n_levels > 1)
        CHECK_FAILS(onerec_model_item_at(model, 0, &id, sid, info.n_levels - 1), ONEREC_STATUS_BUFFER_TOO_SMALL, "sid");
    CHECK_FAILS(onerec_model_item_at(model, 0, NULL, NULL, 0), ONEREC_STATUS_NULL_POINTER, "out_item_id");
    CHECK_FAILS(onerec_model_has_item(NULL, 1, &found), ONEREC_STATUS_NULL_POINTER, "model");

    uint64_t model_bytes = 0, small = 0, big = 0;
    CHECK_OK(onerec_model_memory(model, &model_bytes));
    CHECK(model_bytes > 0, "model memory 0");
    CHECK_OK(onerec_estimate_memory(model, 1, 8, 3, &small));
    CHECK_OK(onerec_estimate_memory(model, 64, 256, 3, &big));
    CHECK(small > 0 && big > small, "estimates %llu, %llu", (unsigned long long)small, (unsigned long long)big);
    CHECK_FAILS(onerec_estimate_memory(model, 1, 0, 3, &small), ONEREC_STATUS_INVALID_ARGUMENT, "beam");
    onerec_model_free(model);
    printf("v2: queries\n");
}

static void test_mixed_batch(const char *model_file) {
    onerec_model *model = NULL;
    CHECK_OK(onerec_model_load(model_file, cpu_params(), &model));
    onerec_context *ctx = NULL;
    if (model) CHECK_OK(onerec_context_new(model, &ctx));
    if (!ctx) {
        onerec_model_free(model);
        return;
    }
    uint64_t history[3], other[2];
    onerec_request good = first_items(model, history, 3);
    onerec_request good2 = first_items(model, other, 2);
    best want = run_one(model, &good), want2 = run_one(model, &good2);
    uint64_t unknown_history[2] = {history[0], UINT64_MAX};
    onerec_request unknown = good;
    unknown.history = unknown_history;
    unknown.n_history = 2;
    onerec_request bad_beam = good;
    bad_beam.beam = 0;
    onerec_request batch[4] = {good, unknown, good2, bad_beam};
    CHECK_FAILS(onerec_recommend(ctx, batch, 4), ONEREC_STATUS_UNKNOWN_ITEM, "request 1");
    onerec_status st[4] = {99, 99, 99, 99};
    for (size_t i = 0; i < 4; i++) CHECK_OK(onerec_results_status(ctx, i, &st[i]));
    CHECK(st[0] == ONEREC_STATUS_OK && st[1] == ONEREC_STATUS_UNKNOWN_ITEM && st[2] == ONEREC_STATUS_OK &&
              st[3] == ONEREC_STATUS_INVALID_ARGUMENT,
          "statuses %s %s %s %s", onerec_status_name(st[0]), onerec_status_name(st[1]), onerec_status_name(st[2]),
          onerec_status_name(st[3]));
    CHECK(same(best_of(ctx, 0), want) && same(best_of(ctx, 2), want2), "the good requests of a mixed batch");
    const char *e1 = onerec_results_error(ctx, 1);
    CHECK(e1 && strstr(e1, "18446744073709551615"), "request 1's message: %s", e1 ? e1 : "NULL");
    CHECK(onerec_results_error(ctx, 0) && onerec_results_error(ctx, 0)[0] == 0, "request 0's message is empty");
    CHECK(onerec_results_error(ctx, 4) == NULL, "no request 4");
    size_t n = 0;
    CHECK_FAILS(onerec_results_n_sessions(ctx, 3, &n), ONEREC_STATUS_INVALID_ARGUMENT, "request 3");
    CHECK_FAILS(onerec_results_status(ctx, 4, &st[0]), ONEREC_STATUS_OUT_OF_RANGE, "request 4");
    onerec_context_free(ctx);
    onerec_model_free(model);
    printf("v2: per-request status\n");
}

typedef struct {
    atomic_int calls;
    int stop_after; /* -1: never */
} abort_state;

static bool on_abort(void *user_data) {
    abort_state *a = user_data;
    int n = atomic_fetch_add(&a->calls, 1) + 1;
    return a->stop_after >= 0 && n > a->stop_after;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static void test_abort(const char *model_file) {
    onerec_model *model = NULL;
    CHECK_OK(onerec_model_load(model_file, cpu_params(), &model));
    onerec_context *ctx = NULL;
    if (model) CHECK_OK(onerec_context_new(model, &ctx));
    if (!ctx) {
        onerec_model_free(model);
        return;
    }
    uint64_t history[3];
    onerec_request r = first_items(model, history, 3);
    r.beam = 16;
    best want = run_one(model, &r);
    /* Never stopping: called between steps, the answer unchanged. */
    abort_state never = {0, -1};
    CHECK_OK(onerec_context_set_abort_callback(ctx, on_abort, &never));
    double t0 = now();
    CHECK_OK(onerec_recommend(ctx, &r, 1));
    double full = now() - t0;
    CHECK(atomic_load(&never.calls) > 1, "the abort callback was called %d times", atomic_load(&never.calls));
    CHECK(same(best_of(ctx, 0), want), "answer with a callback that never stops");
    /* Stopping after the first step: CANCELLED, quickly, no results. */
    abort_state soon = {0, 1};
    CHECK_OK(onerec_context_set_abort_callback(ctx, on_abort, &soon));
    t0 = now();
    CHECK_FAILS(onerec_recommend(ctx, &r, 1), ONEREC_STATUS_CANCELLED, "cancel");
    double cancelled = now() - t0;
    CHECK(cancelled < full, "a cancelled request took %.3f s, a full one %.3f s", cancelled, full);
    CHECK(atomic_load(&soon.calls) == 2, "called %d times after asking to stop", atomic_load(&soon.calls));
    size_t n = 0;
    CHECK_FAILS(onerec_results_n_sessions(ctx, 0, &n), ONEREC_STATUS_OUT_OF_RANGE, "request 0");
    /* The context serves the next request. */
    CHECK_OK(onerec_context_set_abort_callback(ctx, NULL, NULL));
    CHECK_OK(onerec_recommend(ctx, &r, 1));
    CHECK(same(best_of(ctx, 0), want), "the request after a cancelled one");
    CHECK_FAILS(onerec_context_set_abort_callback(NULL, on_abort, NULL), ONEREC_STATUS_NULL_POINTER, "ctx");
    onerec_context_free(ctx);
    onerec_model_free(model);
    printf("v2: abort callback (full %.3f s, cancelled %.3f s)\n", full, cancelled);
}

static void test_budget(const char *model_file) {
    onerec_model_params p = cpu_params();
    p.memory_budget = 1 << 20; /* 1 MiB: far too little for 64 users at beam 1024 */
    onerec_model *model = NULL;
    CHECK_OK(onerec_model_load(model_file, p, &model));
    onerec_context *ctx = NULL;
    if (model) CHECK_OK(onerec_context_new(model, &ctx));
    if (!ctx) {
        onerec_model_free(model);
        return;
    }
    uint64_t history[3];
    onerec_request r = first_items(model, history, 3);
    r.beam = 1024;
    onerec_request *batch = malloc(64 * sizeof *batch);
    for (int i = 0; i < 64; i++) batch[i] = r;
    CHECK_FAILS(onerec_recommend(ctx, batch, 64), ONEREC_STATUS_BUDGET_EXCEEDED, "budget");
    r.beam = 2;
    r.results = 1;
    CHECK_OK(onerec_recommend(ctx, &r, 1));
    free(batch);
    onerec_context_free(ctx);
    onerec_model_free(model);
    printf("v2: memory budget\n");
}

void test_v2(const char *model_file, const char *fixture_dir) {
    (void)fixture_dir;
    test_defaults();
    test_log(model_file);
    test_buffer_and_fd(model_file);
    test_queries(model_file);
    test_mixed_batch(model_file);
    test_abort(model_file);
    test_budget(model_file);
}

/* Batches far past any device (issue: 128 users x beam 4096, 100,000 users at beam 1):
 * each must come back as a status, not an abort, also under an address-space limit
 * (30-ffi-c.sh runs this under `ulimit -v 4000000`). Returns the number of failures. */
int test_huge_batches(const char *model_file) {
    onerec_model *model = NULL;
    CHECK_OK(onerec_model_load(model_file, cpu_params(), &model));
    onerec_context *ctx = NULL;
    if (model) CHECK_OK(onerec_context_new(model, &ctx));
    if (ctx) {
        uint64_t history[3];
        onerec_request r = first_items(model, history, 3);
        enum { MANY = 100000 };
        onerec_request *batch = malloc(MANY * sizeof *batch);
        CHECK(batch != NULL, "malloc");
        if (batch) {
            r.beam = 4096;
            r.results = 5;
            for (int i = 0; i < 128; i++) batch[i] = r;
            onerec_status st = onerec_recommend(ctx, batch, 128);
            CHECK(st == ONEREC_STATUS_BUDGET_EXCEEDED || st == ONEREC_STATUS_INVALID_ARGUMENT,
                  "128 x beam 4096: %s", onerec_status_name(st));
            printf("huge: 128 x beam 4096 -> %s: %s\n", onerec_status_name(st), onerec_last_error());
            r.beam = 1;
            r.results = 1;
            for (int i = 0; i < MANY; i++) batch[i] = r;
            st = onerec_recommend(ctx, batch, MANY);
            CHECK(st != ONEREC_STATUS_PANIC && st != ONEREC_STATUS_OK, "100,000 x beam 1: %s", onerec_status_name(st));
            printf("huge: 100000 x beam 1 -> %s: %s\n", onerec_status_name(st), onerec_last_error());
            /* The context still serves a normal request. */
            r.beam = 8;
            r.results = 3;
            CHECK_OK(onerec_recommend(ctx, &r, 1));
            free(batch);
        }
    }
    onerec_context_free(ctx);
    onerec_model_free(model);
    return atomic_load(&failures);
}

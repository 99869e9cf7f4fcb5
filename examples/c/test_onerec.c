/* Tests of the OneRec C API from C: golden results, every error path, threads sharing one
 * model; with --model-file, the calls of ABI version 2 (test_v2.c).
 * Usage: test_onerec [--model-file MODEL.onerec] FIXTURE_DIR... (tests/fixtures/<name>: a
 * model + golden.json). The first fixture also runs the error and thread tests. Exit status
 * 0 when every check passes. Run by scripts/ci.d/30-ffi-c.sh, also under valgrind and ASan. */
#include "check.h"
#include "json.h"
#include "onerec.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

atomic_int checks;
atomic_int failures;

/* Scores are sums of float32 log-probabilities; MODEL_SPEC's beam tolerance is 1e-3. */
#define SCORE_TOL 1e-3
/* MODEL_SPEC: beams must be equal where the score gap to the next candidate exceeds 1e-3;
 * closer than that, float rounding may swap two sessions. */
#define TIE_GAP 1e-3

typedef struct {
    double score;
    uint64_t *items;
    size_t n_items;
    uint32_t *sids;
    size_t n_sids;
} golden_session;

typedef struct {
    uint64_t *history, *exclude;
    size_t n_history, n_exclude, beam, results, n_sessions, n_final;
    bool exclude_history;
    golden_session *sessions;
    double *final_scores; /* every surviving beam's score, best first */
} golden_request;

typedef struct {
    golden_request *requests;
    size_t n;
} golden;

/* Copies a JSON array of unsigned integers; returns 0 on success. */
static int u64_array(const json_value *v, uint64_t **out, size_t *n) {
    if (!v || v->type != JSON_ARRAY) return -1;
    *n = v->n;
    *out = calloc(v->n ? v->n : 1, sizeof **out);
    if (!*out) return -1;
    for (size_t i = 0; i < v->n; i++)
        if (json_u64(&v->items[i], &(*out)[i])) return -1;
    return 0;
}

static void golden_free(golden *g) {
    for (size_t i = 0; i < g->n; i++) {
        golden_request *r = &g->requests[i];
        for (size_t j = 0; j < r->n_sessions; j++) {
            free(r->sessions[j].items);
            free(r->sessions[j].sids);
        }
        free(r->sessions);
        free(r->final_scores);
        free(r->history);
        free(r->exclude);
    }
    free(g->requests);
    memset(g, 0, sizeof *g);
}

static int read_session(const json_value *s, golden_session *out) {
    const json_value *sids = json_get(s, "sids");
    if (json_f64(json_get(s, "score"), &out->score) || u64_array(json_get(s, "items"), &out->items, &out->n_items) ||
        !sids || sids->type != JSON_ARRAY)
        return -1;
    size_t levels = sids->n ? sids->items[0].n : 0;
    out->n_sids = sids->n * levels;
    out->sids = calloc(out->n_sids ? out->n_sids : 1, sizeof *out->sids);
    if (!out->sids) return -1;
    for (size_t i = 0; i < sids->n; i++) {
        uint64_t *codes = NULL;
        size_t n = 0;
        if (u64_array(&sids->items[i], &codes, &n) || n != levels) {
            free(codes);
            return -1;
        }
        for (size_t l = 0; l < n; l++) out->sids[i * levels + l] = (uint32_t)codes[l];
        free(codes);
    }
    return 0;
}

/* Reads DIR/golden.json; returns 0 on success. */
static int golden_load(const char *dir, golden *g) {
    char path[4096], err[256];
    snprintf(path, sizeof path, "%s/golden.json", dir);
    char *text = read_file(path);
    if (!text) {
        fprintf(stderr, "cannot read %s\n", path);
        return -1;
    }
    json_value root;
    int rc = json_parse(text, &root, err, sizeof err);
    free(text);
    if (rc) {
        fprintf(stderr, "%s: %s\n", path, err);
        return -1;
    }
    memset(g, 0, sizeof *g);
    const json_value *reqs = json_get(&root, "requests");
    rc = -1;
    if (reqs && reqs->type == JSON_ARRAY && (g->requests = calloc(reqs->n, sizeof *g->requests))) {
        rc = 0;
        for (size_t i = 0; i < reqs->n && rc == 0; i++) {
            g->n = i + 1; /* counted first so that golden_free() releases a partial one */
            const json_value *r = &reqs->items[i];
            golden_request *out = &g->requests[i];
            const json_value *sessions = json_get(r, "sessions"), *eh = json_get(r, "exclude_history"),
                             *finals = json_get(r, "final_scores");
            uint64_t beam, results;
            rc = u64_array(json_get(r, "history"), &out->history, &out->n_history) ||
                 u64_array(json_get(r, "exclude"), &out->exclude, &out->n_exclude) ||
                 json_u64(json_get(r, "beam"), &beam) || json_u64(json_get(r, "results"), &results) || !eh ||
                 eh->type != JSON_BOOL || !sessions || sessions->type != JSON_ARRAY || !finals ||
                 finals->type != JSON_ARRAY || finals->n < sessions->n ||
                 !(out->final_scores = calloc(finals->n ? finals->n : 1, sizeof *out->final_scores));
            if (rc) break;
            out->n_final = finals->n;
            for (size_t j = 0; j < finals->n && !rc; j++) rc = json_f64(&finals->items[j], &out->final_scores[j]);
            out->beam = (size_t)beam;
            out->results = (size_t)results;
            out->exclude_history = eh->boolean;
            out->sessions = calloc(sessions->n ? sessions->n : 1, sizeof *out->sessions);
            if (!out->sessions) rc = -1;
            for (size_t j = 0; !rc && j < sessions->n; j++, out->n_sessions++)
                rc = read_session(&sessions->items[j], &out->sessions[j]);
        }
    }
    if (rc) {
        fprintf(stderr, "%s: not the expected golden layout\n", path);
        golden_free(g);
    }
    json_free(&root);
    return rc;
}

static onerec_request to_request(const golden_request *g) {
    onerec_request r = onerec_request_default_params();
    r.history = g->history;
    r.n_history = g->n_history;
    r.exclude = g->n_exclude ? g->exclude : NULL;
    r.n_exclude = g->n_exclude;
    r.beam = g->beam;
    r.results = g->results;
    r.exclude_history = g->exclude_history;
    return r;
}

/* Whether golden session `j` is more than TIE_GAP from its neighbours in the final beam. */
static int clear_winner(const golden_request *g, size_t j) {
    const double *f = g->final_scores;
    int close_prev = j > 0 && fabs(f[j - 1] - f[j]) <= TIE_GAP;
    int close_next = j + 1 < g->n_final && fabs(f[j] - f[j + 1]) <= TIE_GAP;
    return !close_prev && !close_next;
}

/* Compares request `index` of the context's results with the golden sessions, through
 * both the borrowed-pointer accessor and the caller-buffer copy. */
static void check_results(const onerec_context *ctx, size_t index, const golden_request *g, const char *what) {
    size_t n = 0;
    CHECK_OK(onerec_results_n_sessions(ctx, index, &n));
    CHECK(n == g->n_sessions, "%s: %zu sessions, golden %zu", what, n, g->n_sessions);
    if (n != g->n_sessions) return;
    size_t per = n ? g->sessions[0].n_items : 1;
    uint64_t *items = calloc(g->results * per, sizeof *items);
    float *scores = calloc(g->results, sizeof *scores);
    size_t copied = 0;
    CHECK_OK(onerec_results_copy(ctx, index, items, g->results * per, scores, g->results, &copied));
    CHECK(copied == n, "%s: copied %zu sessions", what, copied);
    for (size_t j = 0; j < n; j++) {
        const golden_session *want = &g->sessions[j];
        onerec_session s;
        CHECK_OK(onerec_results_session(ctx, index, j, &s));
        CHECK(s.n_items == want->n_items && s.n_items * s.n_levels == want->n_sids, "%s: session %zu shape", what, j);
        if (s.n_items != want->n_items || s.n_items * s.n_levels != want->n_sids) continue;
        CHECK(fabs(s.score - want->score) <= SCORE_TOL, "%s: session %zu score %f, golden %f", what, j, s.score, want->score);
        CHECK(scores[j] == s.score, "%s: copied score %zu", what, j);
        CHECK(memcmp(items + j * per, s.items, per * sizeof *items) == 0, "%s: copied session %zu items", what, j);
        if (!clear_winner(g, j)) continue;
        CHECK(memcmp(s.items, want->items, s.n_items * sizeof *s.items) == 0, "%s: session %zu items", what, j);
        CHECK(memcmp(s.sids, want->sids, want->n_sids * sizeof *s.sids) == 0, "%s: session %zu sids", what, j);
    }
    free(items);
    free(scores);
}

static onerec_model *load_cpu(const char *dir) {
    onerec_model_params params = onerec_model_default_params();
    params.backend = ONEREC_BACKEND_CPU;
    onerec_model *model = NULL;
    CHECK_OK(onerec_model_load(dir, params, &model));
    return model;
}

/* Every golden request alone, then all of them as one batch. */
static void test_golden(const char *dir) {
    golden g;
    if (golden_load(dir, &g)) {
        CHECK(0, "cannot load the goldens of %s", dir);
        return;
    }
    onerec_model *model = load_cpu(dir);
    onerec_context *ctx = NULL;
    if (model) CHECK_OK(onerec_context_new(model, &ctx));
    /* The goldens record the search's order, permutations included. */
    if (ctx) CHECK_OK(onerec_context_set_keep_permutations(ctx, true));
    if (ctx) {
        onerec_model_info info;
        CHECK_OK(onerec_model_get_info(model, &info));
        CHECK(g.n && g.requests[0].n_sessions && info.session_len == g.requests[0].sessions[0].n_items,
              "%s: session_len %zu", dir, info.session_len);
        char what[4200];
        for (size_t i = 0; i < g.n; i++) {
            onerec_request r = to_request(&g.requests[i]);
            snprintf(what, sizeof what, "%s request %zu", dir, i);
            CHECK_OK(onerec_recommend(ctx, &r, 1));
            check_results(ctx, 0, &g.requests[i], what);
        }
        onerec_request *batch = calloc(g.n, sizeof *batch);
        for (size_t i = 0; i < g.n; i++) batch[i] = to_request(&g.requests[i]);
        CHECK_OK(onerec_recommend(ctx, batch, g.n));
        for (size_t i = 0; i < g.n; i++) {
            snprintf(what, sizeof what, "%s batched request %zu", dir, i);
            check_results(ctx, i, &g.requests[i], what);
        }
        free(batch);
    }
    onerec_context_free(ctx);
    onerec_model_free(model);
    printf("golden %s: %zu requests, one by one and batched\n", dir, g.n);
    golden_free(&g);
}

static void test_versions(void) {
    CHECK(onerec_abi_version() == ONEREC_ABI_VERSION, "ABI %u, header %u", onerec_abi_version(), ONEREC_ABI_VERSION);
    CHECK(strlen(onerec_version()) > 0, "empty version");
    CHECK(strcmp(onerec_status_name(ONEREC_STATUS_UNKNOWN_ITEM), "ONEREC_STATUS_UNKNOWN_ITEM") == 0, "status name");
    CHECK(strcmp(onerec_status_name(ONEREC_STATUS_PANIC), "ONEREC_STATUS_PANIC") == 0, "status name");
    CHECK(strcmp(onerec_status_name(1000), "ONEREC_STATUS_?") == 0, "unknown status name");
}

static void test_load_errors(const char *dir) {
    onerec_model *const sentinel = (onerec_model *)(uintptr_t)0x5a5a;
    onerec_model *model = sentinel;
    onerec_model_params cpu = onerec_model_default_params();
    cpu.backend = ONEREC_BACKEND_CPU;
    char path[4200];
    snprintf(path, sizeof path, "%s/no_such_model", dir);
    CHECK_FAILS(onerec_model_load(path, cpu, &model), ONEREC_STATUS_IO, "no_such_model");
    snprintf(path, sizeof path, "%s/golden.json", dir);
    CHECK_FAILS(onerec_model_load(path, cpu, &model), ONEREC_STATUS_INVALID_MODEL, "golden.json");
    CHECK_FAILS(onerec_model_load(NULL, cpu, &model), ONEREC_STATUS_NULL_POINTER, "path");
    CHECK_FAILS(onerec_model_load(dir, cpu, NULL), ONEREC_STATUS_NULL_POINTER, "out_model");
    onerec_model_params bad = onerec_model_default_params();
    bad.backend = 99;
    CHECK_FAILS(onerec_model_load(dir, bad, &model), ONEREC_STATUS_INVALID_ARGUMENT, "99");
    CHECK(model == sentinel, "a failed load wrote its out-parameter");
    onerec_model_info info;
    CHECK_FAILS(onerec_model_get_info(NULL, &info), ONEREC_STATUS_NULL_POINTER, "model");
    CHECK(onerec_model_backend_name(NULL) == NULL, "backend name of NULL");
    onerec_model_free(NULL);
    onerec_context_free(NULL);
}

static void test_request_errors(const char *dir) {
    golden g;
    if (golden_load(dir, &g) || g.n < 2) {
        CHECK(0, "cannot load the goldens of %s", dir);
        return;
    }
    onerec_model *model = load_cpu(dir);
    onerec_context *ctx = NULL;
    CHECK_FAILS(onerec_context_new(NULL, &ctx), ONEREC_STATUS_NULL_POINTER, "model");
    CHECK_FAILS(onerec_context_new(model, NULL), ONEREC_STATUS_NULL_POINTER, "out_ctx");
    CHECK(ctx == NULL, "a failed onerec_context_new wrote its out-parameter");
    CHECK_OK(onerec_context_new(model, &ctx));
    if (!ctx) {
        onerec_model_free(model);
        golden_free(&g);
        return;
    }
    const golden_request *gr = &g.requests[1];
    const onerec_request good = to_request(gr);
    onerec_request r;

    CHECK_FAILS(onerec_recommend(NULL, &good, 1), ONEREC_STATUS_NULL_POINTER, "ctx");
    CHECK_FAILS(onerec_recommend(ctx, NULL, 1), ONEREC_STATUS_NULL_POINTER, "requests");
    r = good, r.history = NULL;
    CHECK_FAILS(onerec_recommend(ctx, &r, 1), ONEREC_STATUS_NULL_POINTER, "requests[0].history");
    r = good, r.exclude = NULL, r.n_exclude = 2;
    CHECK_FAILS(onerec_recommend(ctx, &r, 1), ONEREC_STATUS_NULL_POINTER, "requests[0].exclude");
    r = good, r.n_history = 0;
    CHECK_FAILS(onerec_recommend(ctx, &r, 1), ONEREC_STATUS_INVALID_ARGUMENT, "history is empty");
    r = good, r.beam = 0;
    CHECK_FAILS(onerec_recommend(ctx, &r, 1), ONEREC_STATUS_INVALID_ARGUMENT, "beam");
    r = good, r.beam = (size_t)-1, r.results = 1;
    CHECK_FAILS(onerec_recommend(ctx, &r, 1), ONEREC_STATUS_INVALID_ARGUMENT, "beam");
    r = good, r.results = 0;
    CHECK_FAILS(onerec_recommend(ctx, &r, 1), ONEREC_STATUS_INVALID_ARGUMENT, "results");
    r = good, r.results = good.beam + 1;
    CHECK_FAILS(onerec_recommend(ctx, &r, 1), ONEREC_STATUS_INVALID_ARGUMENT, "results");
    uint64_t unknown[2] = {gr->history[0], 12345};
    r = good, r.history = unknown, r.n_history = 2;
    CHECK_FAILS(onerec_recommend(ctx, &r, 1), ONEREC_STATUS_UNKNOWN_ITEM, "12345");
    onerec_request batch[2] = {good, good};
    batch[1].beam = 0;
    CHECK_FAILS(onerec_recommend(ctx, batch, 2), ONEREC_STATUS_INVALID_ARGUMENT, "request 1");
    /* One bad request fails alone: request 0 still has its results. */
    check_results(ctx, 0, gr, "beside a failed request");
    size_t n = 99;
    CHECK_FAILS(onerec_results_n_sessions(ctx, 1, &n), ONEREC_STATUS_INVALID_ARGUMENT, "request 1");
    CHECK(n == 99, "a failed call wrote its out-parameter");

    /* After a failure of the whole call the context holds no results. */
    CHECK_FAILS(onerec_recommend(ctx, NULL, 1), ONEREC_STATUS_NULL_POINTER, "requests");
    CHECK_FAILS(onerec_results_n_sessions(ctx, 0, &n), ONEREC_STATUS_OUT_OF_RANGE, "request 0");

    CHECK_OK(onerec_recommend(ctx, &good, 1));
    CHECK(strcmp(onerec_last_error(), "") == 0, "a success clears the last error");
    check_results(ctx, 0, gr, "after errors");
    CHECK_FAILS(onerec_results_n_sessions(ctx, 1, &n), ONEREC_STATUS_OUT_OF_RANGE, "request 1");
    CHECK_FAILS(onerec_results_n_sessions(NULL, 0, &n), ONEREC_STATUS_NULL_POINTER, "ctx");
    CHECK_FAILS(onerec_results_n_sessions(ctx, 0, NULL), ONEREC_STATUS_NULL_POINTER, "out_n");
    onerec_session s;
    CHECK_FAILS(onerec_results_session(ctx, 0, gr->results, &s), ONEREC_STATUS_OUT_OF_RANGE, "session");
    CHECK_FAILS(onerec_results_session(ctx, 5, 0, &s), ONEREC_STATUS_OUT_OF_RANGE, "request 5");
    CHECK_FAILS(onerec_results_session(ctx, 0, 0, NULL), ONEREC_STATUS_NULL_POINTER, "out_session");
    CHECK_FAILS(onerec_results_session(NULL, 0, 0, &s), ONEREC_STATUS_NULL_POINTER, "ctx");

    size_t per = gr->sessions[0].n_items, need = gr->n_sessions * per, copied = 99;
    uint64_t *items = malloc(need * sizeof *items);
    float *scores = malloc(gr->n_sessions * sizeof *scores);
    for (size_t i = 0; i < need; i++) items[i] = 7;
    CHECK_FAILS(onerec_results_copy(ctx, 0, items, need - 1, scores, gr->n_sessions, &copied),
                ONEREC_STATUS_BUFFER_TOO_SMALL, "buffers");
    CHECK_FAILS(onerec_results_copy(ctx, 0, items, need, scores, 0, &copied), ONEREC_STATUS_BUFFER_TOO_SMALL, "scores");
    int untouched = copied == 99;
    for (size_t i = 0; i < need; i++) untouched &= items[i] == 7;
    CHECK(untouched, "a failed copy wrote into the buffers");
    CHECK_FAILS(onerec_results_copy(ctx, 0, NULL, 5, scores, gr->n_sessions, &copied), ONEREC_STATUS_NULL_POINTER, "items");
    CHECK_FAILS(onerec_results_copy(ctx, 0, items, need, scores, gr->n_sessions, NULL), ONEREC_STATUS_NULL_POINTER,
                "out_n_sessions");
    CHECK_FAILS(onerec_results_copy(ctx, 2, items, need, scores, gr->n_sessions, &copied), ONEREC_STATUS_OUT_OF_RANGE,
                "request 2");
    CHECK_OK(onerec_results_copy(ctx, 0, items, need, scores, gr->n_sessions, &copied));
    CHECK(copied == gr->n_sessions, "copied %zu sessions", copied);
    free(items);
    free(scores);

    /* An empty batch is valid and yields no results. */
    CHECK_OK(onerec_recommend(ctx, NULL, 0));
    CHECK_FAILS(onerec_results_n_sessions(ctx, 0, &n), ONEREC_STATUS_OUT_OF_RANGE, "request 0");

    /* A context keeps the weights alive: the model handle may be freed first. */
    onerec_model_free(model);
    CHECK_OK(onerec_recommend(ctx, &good, 1));
    check_results(ctx, 0, gr, "after the model handle was freed");
    onerec_context_free(ctx);
    golden_free(&g);
}

typedef struct {
    const onerec_model *model;
    const golden *g;
    int index;
} thread_arg;

/* One thread: its own context on the shared model, every golden request twice, and
 * failures of its own that must not leak into the other threads' last error. */
static void *thread_main(void *p) {
    thread_arg *a = p;
    onerec_context *ctx = NULL;
    CHECK_OK(onerec_context_new(a->model, &ctx));
    if (!ctx) return NULL;
    CHECK_OK(onerec_context_set_keep_permutations(ctx, true));
    char what[64];
    for (size_t k = 0; k < 2 * a->g->n; k++) {
        size_t i = (k + 3 * (size_t)a->index) % a->g->n;
        onerec_request r = to_request(&a->g->requests[i]);
        CHECK_OK(onerec_recommend(ctx, &r, 1));
        CHECK(strcmp(onerec_last_error(), "") == 0, "thread %d sees another thread's error", a->index);
        snprintf(what, sizeof what, "thread %d request %zu", a->index, i);
        check_results(ctx, 0, &a->g->requests[i], what);
        r.beam = 0;
        CHECK_FAILS(onerec_recommend(ctx, &r, 1), ONEREC_STATUS_INVALID_ARGUMENT, "beam");
    }
    onerec_context_free(ctx);
    return NULL;
}

static void test_threads(const char *dir) {
    enum { N_THREADS = 4 };
    golden g;
    if (golden_load(dir, &g)) {
        CHECK(0, "cannot load the goldens of %s", dir);
        return;
    }
    onerec_model *model = load_cpu(dir);
    if (model) {
        pthread_t threads[N_THREADS];
        thread_arg args[N_THREADS];
        int started = 0;
        for (int t = 0; t < N_THREADS; t++) {
            args[t] = (thread_arg){model, &g, t};
            int rc = pthread_create(&threads[t], NULL, thread_main, &args[t]);
            CHECK(rc == 0, "pthread_create: %d", rc);
            if (rc == 0) started++;
        }
        for (int t = 0; t < started; t++) pthread_join(threads[t], NULL);
        printf("threads: %d threads shared one model\n", started);
    }
    onerec_model_free(model);
    golden_free(&g);
}

int main(int argc, char **argv) {
    const char *model_file = NULL;
    if (argc == 3 && strcmp(argv[1], "--huge-batches") == 0) {
        int f = test_huge_batches(argv[2]);
        printf("%d checks, %d failures\n", atomic_load(&checks), f);
        return f == 0 ? 0 : 1;
    }
    if (argc >= 3 && strcmp(argv[1], "--model-file") == 0) {
        model_file = argv[2];
        argv += 2;
        argc -= 2;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: %s [--model-file MODEL.onerec] FIXTURE_DIR... (tests/fixtures/<name>)\n", argv[0]);
        return 2;
    }
    test_versions();
    if (model_file) test_v2(model_file, argv[1]);
    test_load_errors(argv[1]);
    test_request_errors(argv[1]);
    for (int i = 1; i < argc; i++) test_golden(argv[i]);
    test_threads(argv[1]);
    int f = atomic_load(&failures), c = atomic_load(&checks);
    printf("%d checks, %d failures\n", c, f);
    return f == 0 ? 0 : 1;
}

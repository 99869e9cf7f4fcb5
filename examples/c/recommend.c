/* Recommends sessions for one user's history through the OneRec C API and prints them.
 *
 *   recommend MODEL HISTORY [--beam N] [--results N] [--exclude IDS] [--exclude-history]
 *             [--backend auto|cpu|wgpu|cuda]
 *
 * MODEL is a model directory or file, HISTORY and IDS are comma-separated item ids, oldest
 * first. Exit status: 0 on success, 1 when the library reports an error, 2 on bad usage. */
#include "onerec.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s MODEL HISTORY [--beam N] [--results N] [--exclude IDS] [--exclude-history]\n"
            "       [--backend auto|cpu|wgpu|cuda]\n"
            "  HISTORY, IDS: comma-separated item ids, oldest first\n",
            argv0);
    return 2;
}

/* Parses "1,2,3" into a new array (free() it); returns 0 on success. */
static int parse_ids(const char *what, const char *text, uint64_t **out, size_t *n) {
    size_t cap = 1;
    for (const char *c = text; *c; c++) cap += *c == ',';
    uint64_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return -1;
    size_t len = 0;
    const char *p = text;
    while (*p) {
        char *end;
        errno = 0;
        unsigned long long id = strtoull(p, &end, 10);
        if (end == p || errno || (*end != ',' && *end != '\0') || *p == '-') {
            fprintf(stderr, "%s: `%s` is not a list of item ids (unsigned integers)\n", what, text);
            free(ids);
            return -1;
        }
        ids[len++] = (uint64_t)id;
        p = *end == ',' ? end + 1 : end;
    }
    *out = ids;
    *n = len;
    return 0;
}

static int parse_size(const char *what, const char *text, size_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || *end || errno || *text == '-') {
        fprintf(stderr, "%s: `%s` is not a number\n", what, text);
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

static int parse_backend(const char *text, onerec_backend *out) {
    static const struct { const char *name; onerec_backend value; } names[] = {
        {"auto", ONEREC_BACKEND_AUTO}, {"cpu", ONEREC_BACKEND_CPU}, {"wgpu", ONEREC_BACKEND_WGPU}, {"cuda", ONEREC_BACKEND_CUDA}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(text, names[i].name) == 0) {
            *out = names[i].value;
            return 0;
        }
    fprintf(stderr, "--backend: `%s` is not auto, cpu, wgpu or cuda\n", text);
    return -1;
}

/* Prints an API failure the way a host app would log it. */
static int report(const char *what, onerec_status status) {
    fprintf(stderr, "error: %s: %s: %s\n", what, onerec_status_name(status), onerec_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) return usage(argv[0]);
    if (onerec_abi_version() != ONEREC_ABI_VERSION) {
        fprintf(stderr, "error: the library has ABI %u, this program was built for %u\n", onerec_abi_version(),
                ONEREC_ABI_VERSION);
        return 1;
    }
    const char *model_path = argv[1];
    onerec_request request = onerec_request_default_params();
    onerec_model_params params = onerec_model_default_params();
    uint64_t *history = NULL, *exclude = NULL;
    int rc = 2;
    if (parse_ids("HISTORY", argv[2], &history, &request.n_history)) goto done;
    request.history = history;
    for (int i = 3; i < argc; i++) {
        const char *arg = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        int bad;
        if (strcmp(arg, "--exclude-history") == 0) {
            request.exclude_history = true;
            continue;
        }
        if (!value) {
            usage(argv[0]);
            goto done;
        }
        if (strcmp(arg, "--beam") == 0) bad = parse_size(arg, value, &request.beam);
        else if (strcmp(arg, "--results") == 0) bad = parse_size(arg, value, &request.results);
        else if (strcmp(arg, "--exclude") == 0) bad = parse_ids(arg, value, &exclude, &request.n_exclude);
        else if (strcmp(arg, "--backend") == 0) bad = parse_backend(value, &params.backend);
        else {
            usage(argv[0]);
            goto done;
        }
        if (bad) goto done;
        request.exclude = exclude;
        i++;
    }

    onerec_model *model = NULL;
    onerec_context *ctx = NULL;
    onerec_model_info info;
    onerec_status st;
    rc = 1;
    if ((st = onerec_model_load(model_path, params, &model)) != ONEREC_STATUS_OK) {
        report(model_path, st);
        goto done;
    }
    if ((st = onerec_model_get_info(model, &info)) != ONEREC_STATUS_OK || (st = onerec_context_new(model, &ctx)) != ONEREC_STATUS_OK) {
        report("setup", st);
    } else if ((st = onerec_recommend(ctx, &request, 1)) != ONEREC_STATUS_OK) {
        report("recommend", st);
    } else {
        size_t n = 0;
        onerec_results_n_sessions(ctx, 0, &n);
        fprintf(stderr, "backend: %s\n", onerec_model_backend_name(model));
        if (n == 0) printf("no session: every continuation was excluded\n");
        else printf("%4s  %10s  items (semantic ids)\n", "rank", "score");
        for (size_t j = 0; j < n; j++) {
            onerec_session s;
            if ((st = onerec_results_session(ctx, 0, j, &s)) != ONEREC_STATUS_OK) {
                report("results", st);
                goto free_handles;
            }
            printf("%4zu  %10.4f  ", j + 1, s.score);
            for (size_t i = 0; i < s.n_items; i++) {
                printf("%s%" PRIu64 " (", i ? ", " : "", s.items[i]);
                for (size_t l = 0; l < s.n_levels; l++) printf("%s%" PRIu32, l ? "-" : "", s.sids[i * s.n_levels + l]);
                printf(")");
            }
            printf("\n");
        }
        rc = 0;
    }
free_handles:
    onerec_context_free(ctx);
    onerec_model_free(model);
done:
    free(history);
    free(exclude);
    return rc;
}

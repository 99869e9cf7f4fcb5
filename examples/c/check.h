/* The check macros of the C tests: count checks and failures, print each failure with the
 * library's last error. */
#ifndef ONEREC_CHECK_H
#define ONEREC_CHECK_H

#include "onerec.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

extern atomic_int checks;
extern atomic_int failures;

#define CHECK(cond, ...)                                                              \
    do {                                                                              \
        atomic_fetch_add(&checks, 1);                                                 \
        if (!(cond)) {                                                                \
            atomic_fetch_add(&failures, 1);                                           \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                      \
            fprintf(stderr, __VA_ARGS__);                                             \
            fprintf(stderr, " (last error: \"%s\")\n", onerec_last_error());          \
        }                                                                             \
    } while (0)

/* A call must return `expected` and leave a message that mentions `needle`. */
#define CHECK_FAILS(call, expected, needle)                                           \
    do {                                                                              \
        onerec_status st_ = (call);                                                   \
        CHECK(st_ == (expected), "%s returned %s, expected %s", #call,                \
              onerec_status_name(st_), onerec_status_name(expected));                 \
        CHECK(strstr(onerec_last_error(), (needle)) != NULL,                          \
              "the message of %s should mention \"%s\"", #call, (needle));            \
    } while (0)

#define CHECK_OK(call) \
    do { onerec_status st_ = (call); CHECK(st_ == ONEREC_STATUS_OK, "%s returned %s", #call, onerec_status_name(st_)); } while (0)

/* The calls of ABI version 2 on a model file (buffer and fd loading need one) and a
 * fixture directory (test_v2.c). */
void test_v2(const char *model_file, const char *fixture_dir);
/* Batches far too large for memory: each returns a status (test_v2.c). */
int test_huge_batches(const char *model_file);

#endif

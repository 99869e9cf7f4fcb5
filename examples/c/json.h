/* A small JSON reader for the C test: enough to read tests/fixtures/<name>/golden.json.
 * Numbers keep their text so that 64-bit item ids are read exactly. */
#ifndef ONEREC_TEST_JSON_H
#define ONEREC_TEST_JSON_H

#include <stddef.h>
#include <stdint.h>

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value {
    json_type type;
    int boolean;               /* JSON_BOOL */
    char *text;                /* JSON_NUMBER: the token; JSON_STRING: the decoded string */
    size_t n;                  /* JSON_ARRAY / JSON_OBJECT: number of elements */
    struct json_value *items;  /* JSON_ARRAY / JSON_OBJECT: the elements */
    char **keys;               /* JSON_OBJECT: the keys, parallel to items */
} json_value;

/* Parses `text` into `*out`. Returns 0 on success, -1 with a message in `err` otherwise.
 * On success the caller frees the tree with json_free(). */
int json_parse(const char *text, json_value *out, char *err, size_t err_len);
void json_free(json_value *v);

/* The member `key` of an object, or NULL. */
const json_value *json_get(const json_value *obj, const char *key);
/* Reads a number as an unsigned 64-bit integer / a double; returns 0 on success. */
int json_u64(const json_value *v, uint64_t *out);
int json_f64(const json_value *v, double *out);

/* Reads a whole file into a NUL-terminated buffer (free() it), or NULL. */
char *read_file(const char *path);

#endif

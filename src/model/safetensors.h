/* safetensors.h — mmapped safetensors files with a fully validated header.
 *
 * The header is untrusted input: its length, its JSON, every dtype, shape and offset are checked
 * (offsets inside the file, in order of size, not overlapping) before any tensor is handed out. */
#ifndef SALA_SAFETENSORS_H
#define SALA_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "sala.h"

typedef enum { DT_F32 = 0, DT_F16, DT_BF16, DT_I32, DT_I64, DT_F64, DT_U8, DT_COUNT } sala_dtype;

int dtype_size(sala_dtype t);
const char *dtype_name(sala_dtype t);

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    sala_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t nbytes;
    const void *data;        /* points into the mapping */
} st_tensor;

typedef struct {
    char *path;
    void *map;               /* whole file */
    size_t map_len;
    st_tensor *tensors;
    int n_tensors;
    char *metadata_json;     /* "__metadata__" object as JSON text, or NULL */
} st_file;

/* Parse a header held in memory (buf[0..len) = the whole file). Used by st_open and by the fuzzer.
 * On success fills f->tensors (data pointers into buf). */
sala_status st_parse(st_file *f, const void *buf, size_t len, const char *name_for_errors);
sala_status st_open(st_file *f, const char *path);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);

/* Writer: tensors laid out in the given order. data may be NULL for zero-filled tensors. */
typedef struct {
    const char *name;
    sala_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
} st_write_tensor;
sala_status st_write(const char *path, const st_write_tensor *t, int n, const char *metadata_json);
/* Streaming writer: the header for tensors laid out in order; the caller then writes each tensor's
 * st_tensor_bytes() bytes in the same order (path is for messages). */
sala_status st_write_header(FILE *fp, const st_write_tensor *t, int n, const char *metadata_json, const char *path);
int64_t st_tensor_bytes(const st_write_tensor *t);

#endif

/* safetensors.c — reader (mmap + validated header) and writer for the safetensors format.
 *
 * Format: u64 little-endian header length n, n bytes of JSON {name: {dtype, shape, data_offsets}},
 * then the data region; offsets are relative to the data region. Everything in the header is checked
 * before use: sizes against the file, offsets against shapes, no two tensors sharing bytes. */
#include "model/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define ST_MAX_HEADER (256ll << 20)

static const char *const dtype_names[DT_COUNT] = {"F32", "F16", "BF16", "I32", "I64", "F64", "U8"};
static const int dtype_sizes[DT_COUNT] = {4, 2, 2, 4, 8, 8, 1};

int dtype_size(sala_dtype t) { return t < DT_COUNT ? dtype_sizes[t] : 0; }
const char *dtype_name(sala_dtype t) { return t < DT_COUNT ? dtype_names[t] : "?"; }

static int dtype_parse(const char *s, sala_dtype *out) {
    for (int i = 0; i < DT_COUNT; i++)
        if (!strcmp(s, dtype_names[i])) {
            *out = (sala_dtype)i;
            return 1;
        }
    return 0;
}

typedef struct {
    int64_t begin, end;
    int idx;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* a JSON number that is an exact non-negative integer below 2^53 */
static int json_int(const cJSON *j, int64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(int64_t)d) return 0;
    *out = (int64_t)d;
    return 1;
}

static void st_free_tensors(st_file *f) {
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->metadata_json);
    f->tensors = NULL;
    f->metadata_json = NULL;
    f->n_tensors = 0;
}

sala_status st_parse(st_file *f, const void *buf, size_t len, const char *fname) {
    const unsigned char *p = buf;
    f->tensors = NULL;
    f->n_tensors = 0;
    f->metadata_json = NULL;
    if (len < 8)
        return sala_set_error(SALA_ERR_FORMAT, "%s: file is %zu bytes, too short for a safetensors header", fname,
                              len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | p[i];
    if (n > (uint64_t)ST_MAX_HEADER || n > len - 8)
        return sala_set_error(SALA_ERR_FORMAT,
                              "%s: header length %llu does not fit the file (%zu bytes): truncated or not a "
                              "safetensors file",
                              fname, (unsigned long long)n, len);
    const char *hdr = (const char *)p + 8;
    const unsigned char *data = p + 8 + n;
    int64_t data_len = (int64_t)(len - 8 - n);
    cJSON *root = cJSON_ParseWithLength(hdr, (size_t)n);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sala_set_error(SALA_ERR_FORMAT, "%s: header is not a JSON object", fname);
    }
    int count = 0;
    for (cJSON *e = root->child; e; e = e->next) count++;
    f->tensors = xcalloc((size_t)count + 1, sizeof(st_tensor));
    span *spans = xcalloc((size_t)count + 1, sizeof(span));
    sala_status st = SALA_OK;
    for (cJSON *e = root->child; e && st == SALA_OK; e = e->next) {
        const char *name = e->string ? e->string : "";
        if (!strcmp(name, "__metadata__")) {
            if (!cJSON_IsObject(e)) {
                st = sala_set_error(SALA_ERR_FORMAT, "%s: __metadata__ is not an object", fname);
                break;
            }
            free(f->metadata_json);
            f->metadata_json = cJSON_PrintUnformatted(e);
            continue;
        }
        for (int i = 0; i < f->n_tensors; i++)
            if (!strcmp(f->tensors[i].name, name)) {
                st = sala_set_error(SALA_ERR_FORMAT, "%s: tensor %s listed twice", fname, name);
                break;
            }
        if (st) break;
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
        cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        st_tensor *t = &f->tensors[f->n_tensors];
        if (!cJSON_IsObject(e) || !cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) ||
            cJSON_GetArraySize(off) != 2) {
            st = sala_set_error(SALA_ERR_FORMAT, "%s: tensor %s: entry needs dtype, shape and data_offsets[2]",
                                fname, name);
            break;
        }
        if (!dtype_parse(dt->valuestring, &t->dtype)) {
            st = sala_set_error(SALA_ERR_UNSUPPORTED, "%s: tensor %s has dtype %s; sala reads F32, F16, BF16 (and "
                                "I32/I64/F64/U8 for test data)", fname, name, dt->valuestring);
            break;
        }
        t->ndim = cJSON_GetArraySize(sh);
        if (t->ndim > ST_MAX_DIMS) {
            st = sala_set_error(SALA_ERR_FORMAT, "%s: tensor %s has %d dimensions (max %d)", fname, name, t->ndim,
                                ST_MAX_DIMS);
            break;
        }
        int64_t numel = 1;
        int k = 0;
        for (cJSON *d = sh->child; d; d = d->next, k++) {
            int64_t v;
            if (!json_int(d, &v) || v > ((int64_t)1 << 40)) {
                st = sala_set_error(SALA_ERR_FORMAT, "%s: tensor %s: bad shape entry", fname, name);
                break;
            }
            t->shape[k] = v;
            if (v && numel > INT64_MAX / 16 / v) {
                st = sala_set_error(SALA_ERR_FORMAT, "%s: tensor %s: shape too large", fname, name);
                break;
            }
            numel *= v;
        }
        if (st) break;
        int64_t b, en;
        if (!json_int(cJSON_GetArrayItem(off, 0), &b) || !json_int(cJSON_GetArrayItem(off, 1), &en) || b > en) {
            st = sala_set_error(SALA_ERR_FORMAT, "%s: tensor %s: bad data_offsets", fname, name);
            break;
        }
        if (en > data_len) {
            st = sala_set_error(SALA_ERR_FORMAT,
                                "%s: tensor %s: data_offsets [%lld, %lld] past the end of the data (%lld bytes): "
                                "the file is truncated or corrupt",
                                fname, name, (long long)b, (long long)en, (long long)data_len);
            break;
        }
        t->nbytes = numel * dtype_size(t->dtype);
        if (en - b != t->nbytes) {
            st = sala_set_error(SALA_ERR_FORMAT, "%s: tensor %s: %lld bytes of data for a %s tensor of %lld elements",
                                fname, name, (long long)(en - b), dt->valuestring, (long long)numel);
            break;
        }
        t->data = data + b;
        t->name = xstrdup(name);
        spans[f->n_tensors] = (span){b, en, f->n_tensors};
        f->n_tensors++;
    }
    if (st == SALA_OK) {
        qsort(spans, (size_t)f->n_tensors, sizeof(span), cmp_span);
        int last = -1; /* the non-empty span reaching furthest so far */
        for (int i = 0; i < f->n_tensors; i++) {
            if (spans[i].end == spans[i].begin) continue;
            if (last >= 0 && spans[i].begin < spans[last].end) {
                st = sala_set_error(SALA_ERR_FORMAT, "%s: tensors %s and %s overlap in the file", fname,
                                    f->tensors[spans[last].idx].name, f->tensors[spans[i].idx].name);
                break;
            }
            if (last < 0 || spans[i].end > spans[last].end) last = i;
        }
    }
    free(spans);
    cJSON_Delete(root);
    if (st) st_free_tensors(f);
    return st;
}

sala_status st_open(st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return sala_set_error(SALA_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return sala_set_error(SALA_ERR_IO, "%s is not a regular file", path);
    }
    size_t len = (size_t)sb.st_size;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            close(fd);
            return sala_set_error(SALA_ERR_IO, "cannot mmap %s: %s", path, strerror(errno));
        }
    }
    close(fd);
    sala_status st = st_parse(f, map ? map : "", len, path);
    if (st) {
        if (map) munmap(map, len);
        return st;
    }
    f->map = map;
    f->map_len = len;
    f->path = xstrdup(path);
    return SALA_OK;
}

void st_close(st_file *f) {
    if (!f) return;
    st_free_tensors(f);
    if (f->map) munmap(f->map, f->map_len);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

int64_t st_tensor_bytes(const st_write_tensor *t) {
    int64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) numel *= t->shape[d];
    return numel * dtype_size(t->dtype);
}

sala_status st_write_header(FILE *fp, const st_write_tensor *t, int n, const char *metadata_json, const char *path) {
    cJSON *root = cJSON_CreateObject();
    if (metadata_json) {
        cJSON *m = cJSON_Parse(metadata_json);
        if (m) cJSON_AddItemToObject(root, "__metadata__", m);
    }
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "dtype", dtype_name(t[i].dtype));
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t[i].ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t[i].shape[d]));
        int64_t nb = st_tensor_bytes(&t[i]);
        cJSON *o = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)(off + nb)));
        off += nb;
        cJSON_AddItemToObject(root, t[i].name, e);
    }
    char *js = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    size_t hl = strlen(js), pad = (8 - hl % 8) % 8; /* data region 8-byte aligned */
    uint64_t n8 = hl + pad;
    unsigned char lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (unsigned char)(n8 >> (8 * i));
    int ok = fwrite(lb, 1, 8, fp) == 8 && fwrite(js, 1, hl, fp) == hl;
    for (size_t i = 0; ok && i < pad; i++) ok = fputc(' ', fp) != EOF;
    free(js);
    return ok ? SALA_OK : sala_set_error(SALA_ERR_IO, "write error on %s (disk full?)", path);
}

sala_status st_write(const char *path, const st_write_tensor *t, int n, const char *metadata_json) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return sala_set_error(SALA_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    sala_status st = st_write_header(fp, t, n, metadata_json, path);
    static const char zeros[1 << 16];
    int ok = st == SALA_OK;
    for (int i = 0; ok && i < n; i++) {
        int64_t nb = st_tensor_bytes(&t[i]);
        if (t[i].data) {
            ok = fwrite(t[i].data, 1, (size_t)nb, fp) == (size_t)nb;
        } else {
            for (int64_t w = 0; ok && w < nb; w += sizeof zeros) {
                size_t c = (size_t)(nb - w < (int64_t)sizeof zeros ? nb - w : (int64_t)sizeof zeros);
                ok = fwrite(zeros, 1, c, fp) == c;
            }
        }
    }
    if (fclose(fp) != 0) ok = 0;
    if (st) return st;
    if (!ok) return sala_set_error(SALA_ERR_IO, "write error on %s (disk full?)", path);
    return SALA_OK;
}

/* fuzz_safetensors.c — arbitrary bytes as a safetensors file: the header parser must reject or accept
 * without crashing, and every accepted tensor must lie inside the buffer without overlaps. */
#include <stdint.h>
#include <string.h>

#include "model/safetensors.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file f;
    memset(&f, 0, sizeof f);
    if (st_parse(&f, data, size, "fuzz") == SALA_OK) {
        for (int i = 0; i < f.n_tensors; i++) {
            const st_tensor *t = &f.tensors[i];
            const uint8_t *p = t->data;
            SALA_CHECK(p >= data && p + t->nbytes <= data + size);
            volatile uint8_t sink = t->nbytes ? p[t->nbytes - 1] : 0; /* touch the last byte */
            (void)sink;
            SALA_CHECK(st_find(&f, t->name) == t);
        }
        st_close(&f); /* map is NULL: only frees the table */
    }
    return 0;
}

/* fuzz_config.c — arbitrary bytes as config.json: parse, validate, and when accepted, write it back
 * and parse that again to the same numbers. */
#include <stdint.h>
#include <string.h>

#include "model/config.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sala_config c;
    if (config_parse(&c, (const char *)data, size) != SALA_OK) return 0;
    char *js = config_to_json(&c);
    sala_config d;
    SALA_CHECK(config_parse(&d, js, strlen(js)) == SALA_OK);
    SALA_CHECK(d.hidden == c.hidden && d.n_layers == c.n_layers && d.vocab == c.vocab && d.nkv == c.nkv &&
               d.dense_len == c.dense_len && !memcmp(d.sparse, c.sparse, sizeof c.sparse));
    free(js);
    return 0;
}

/* fuzz_server_json.c — libFuzzer target for the request parser of `sala serve` (src/server/request.c):
 * arbitrary bytes as the body of POST /v1/chat/completions and POST /v1/completions. Each must either parse
 * into a request whose fields respect the documented ranges, or give a 4xx error whose JSON is valid; never
 * crash, leak or read out of bounds. The first byte picks the endpoint. */
#include <assert.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0)
        return 0;
    srv_endpoint ep = (data[0] & 1) ? SRV_EP_CHAT : SRV_EP_COMPLETION;
    /* a copy of exactly the body's bytes, so ASan sees any read past the end */
    size_t n = size - 1;
    char *body = malloc(n ? n : 1);
    memcpy(body, data + 1, n);
    srv_request r;
    srv_error e;
    if (srv_request_parse(body, n, ep, &r, &e) == 0) {
        if (ep == SRV_EP_CHAT) {
            if (r.n_msgs < 1)
                abort();
            for (int i = 0; i < r.n_msgs; i++)
                if (!r.msgs[i].role || !r.msgs[i].content)
                    abort();
        } else if (!r.prompt && r.n_prompt_ids < 1)
            abort();
        if (r.max_tokens == 0 || r.max_tokens < -1)
            abort();
        if (!(r.temperature >= 0 && r.temperature <= 2))
            abort();
        if (!(r.top_p > 0 && r.top_p <= 1))
            abort();
        if (r.n_stop < 0 || r.n_stop > SRV_MAX_STOP)
            abort();
        for (int i = 0; i < r.n_stop; i++)
            if (!r.stop[i] || !r.stop[i][0])
                abort();
        srv_request_free(&r);
    } else {
        if (e.status < 400 || e.status > 499)
            abort();
        char *j = srv_error_json(&e);
        cJSON *root = cJSON_Parse(j);
        if (!root || !cJSON_GetObjectItem(root, "error"))
            abort();
        cJSON_Delete(root);
        free(j);
    }
    free(body);
    return 0;
}

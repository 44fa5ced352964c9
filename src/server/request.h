/* request.h — parsing and validation of the OpenAI-style request bodies of `sala serve`, and the error
 * objects the server answers with.
 *
 * Pure functions on bytes: no network, no engine, so they are unit-testable and fuzzed
 * (fuzz/fuzz_server_json.c). srv_request_parse() takes the raw body of POST /v1/chat/completions or
 * POST /v1/completions and either fills a srv_request (every field checked: types, ranges, the
 * mutually exclusive forms of prompt / stop / content) or a srv_error with the HTTP status, the OpenAI
 * error type, the offending parameter and a plain message. The body must be valid UTF-8 (checked before
 * the JSON parser sees it) and may not contain NUL characters, raw or as \u0000 escapes.
 *
 * Semantics decided here (the rest of the server just follows the struct):
 *   max_tokens / max_completion_tokens  integer >= 1 (both given: must agree); absent/null = -1, "until the
 *                                       context is full" for chat, 16 for completions (OpenAI's
 *                                       defaults); more than the room left stops at the context's end.
 *   temperature                         number in [0, 2], default 1 (OpenAI's); 0 = greedy.
 *   top_p                               number in (0, 1], default 1.
 *   stop                                string or array of at most SRV_MAX_STOP non-empty strings.
 *   seed                                integer (any 64-bit value); absent = a random seed.
 *   n                                   1 (or absent/null); anything else is refused.
 *   presence/frequency_penalty          numbers in [-2, 2].
 *   extensions (llama.cpp names)        top_k integer >= 0, min_p in [0, 1], repeat_penalty in (0, 10].
 *   stream, stream_options.include_usage booleans.
 *   logprobs / tools / response_format  only their "off" values are accepted (not supported).
 * Unknown fields are ignored, as most OpenAI-compatible servers do. */
#ifndef SALA_SRV_REQUEST_H
#define SALA_SRV_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#define SRV_MAX_STOP     16
#define SRV_MAX_STOP_LEN 1024

typedef enum { SRV_EP_CHAT = 1, SRV_EP_COMPLETION = 2 } srv_endpoint;

/* An error answer: HTTP status, OpenAI "type", "param" (empty = null), "code" (NULL = null). */
typedef struct {
    int status;
    const char *type;
    const char *code;
    char param[96];
    char message[768];
} srv_error;

typedef struct {
    char *role;    /* malloc'd; "developer" is mapped to "system" */
    char *content; /* malloc'd, never NULL (null content -> "") */
} srv_message;

typedef struct {
    srv_endpoint endpoint;
    char *model; /* malloc'd; NULL when the request named none */
    /* chat */
    srv_message *msgs;
    int n_msgs;
    /* completions: either a text prompt or token ids */
    char *prompt;        /* malloc'd, or NULL when prompt_ids are given */
    int32_t *prompt_ids; /* malloc'd */
    int64_t n_prompt_ids;
    int echo;
    /* generation */
    int64_t max_tokens; /* -1 = until the context is full */
    double temperature, top_p, min_p, presence_penalty, frequency_penalty, repeat_penalty;
    int top_k;
    int has_seed;
    uint64_t seed;
    char *stop[SRV_MAX_STOP];
    int n_stop;
    int stream, include_usage;
} srv_request;

/* Length of the well-formed UTF-8 sequence at p[0..avail) (1..4), or 0 when it is not one (no overlongs,
 * no surrogates, nothing above U+10FFFF). avail >= 1. */
size_t srv_utf8_seq(const unsigned char *p, size_t avail);
/* 1 when buf[0..len) is well-formed UTF-8 (every sequence passes srv_utf8_seq). */
int srv_utf8_valid(const char *buf, size_t len);

/* Parses and validates a request body. Returns 0 and fills *req (free with srv_request_free), or -1 and
 * fills *err (nothing to free). */
int srv_request_parse(const char *body, size_t len, srv_endpoint ep, srv_request *req, srv_error *err);
void srv_request_free(srv_request *req);

/* Fills an error; param may be NULL (JSON null), code may be NULL. */
void srv_error_set(srv_error *e, int status, const char *type, const char *param, const char *code, const char *fmt,
                   ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 6, 7)))
#endif
    ;
/* {"error":{"message":...,"type":...,"param":...,"code":...}} as a malloc'd string. */
char *srv_error_json(const srv_error *e);

#endif

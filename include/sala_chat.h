/* sala_chat.h — chat prompt formatting (ChatML family) and the <think> reasoning splitter.
 *
 * sala has no Jinja engine. It recognises the ChatML family of chat templates and renders it in C:
 *
 *   [bos]  then for each message  <|im_start|>{role}\n{content}<|im_end|>\n
 *          then, when a generation prompt is asked for,  <|im_start|>assistant\n
 *
 * Where the template comes from (sala_chat_template_load(dir)):
 *   1. dir/chat_template.jinja when present (newer Hugging Face layout);
 *   2. else the "chat_template" field of dir/tokenizer_config.json: a string, or a list of
 *      {"name", "template"} objects, of which the one named "default" (else the first) is used;
 *   3. else (no file, no field) the built-in MiniCPM-SALA template: ChatML with a "<s>" prefix and no
 *      default system prompt (tests/data/tokenizer/README.md).
 *
 * What "ChatML family" means here (checked on the template's text):
 *   - it contains the literal markers <|im_start|> and <|im_end|>;
 *   - it loops over the messages ("for ... in messages") and writes each message's role and content;
 *   - the generation prompt is "<|im_start|>assistant" followed by a newline.
 * Read from the template as well:
 *   - bos: when the template writes {{ bos_token }} or a literal <s>, the rendering starts with the
 *     bos_token of tokenizer_config.json (a string or {"content": ...}; "<s>" when absent);
 *   - default system prompt: a literal "<|im_start|>system\n...<|im_end|>" inside the template (the
 *     Qwen-style "if the first message is not a system message" block) is used when the conversation
 *     does not start with a system message;
 *   - a generation prompt that continues with a literal "<think>\n" (sala_chat_template_opens_think).
 * Message text is inserted as is: special-token strings inside content (e.g. "<|im_end|>") become special
 * tokens when encoded, exactly as with Hugging Face's apply_chat_template.
 * Not supported (ignored, rendered as plain messages): tool definitions and tool-call formatting,
 * multimodal content parts, per-message "reasoning_content" handling, enable_thinking switches. Roles are
 * written as given (system, user, assistant, tool, ...).
 * Any other template (Llama-3 headers, [INST], Gemma turns, ...) is refused with SALA_ERR_UNSUPPORTED
 * and a message naming what is supported.
 *
 * Encode rendered text with sala_tokenizer_encode(..., add_bos = 0): the template's own "<s>" (if any)
 * is in the text and the tokenizer turns it into the BOS id, as Hugging Face's apply_chat_template does.
 *
 * Think splitter: MiniCPM-SALA opens its answers with <think> ... </think>; the answer proper follows.
 * sala_think_* separates a streamed output into reasoning (inside <think>...</think>) and content, with
 * tags that may arrive split across tokens. */
#ifndef SALA_CHAT_H
#define SALA_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "sala.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sala_chat_template sala_chat_template;

typedef struct {
    const char *role;    /* "system", "user", "assistant", "tool", ... (written as given) */
    const char *content; /* NULL is rendered as "" */
} sala_chat_message;

/* From a checkpoint / tokenizer folder, as described above. SALA_ERR_UNSUPPORTED for a template that
 * is not ChatML-like, SALA_ERR_FORMAT for malformed JSON. */
sala_status sala_chat_template_load(const char *dir, sala_chat_template **out);
/* From template text (NULL = the built-in MiniCPM-SALA template); bos_token NULL = "<s>". */
sala_status sala_chat_template_parse(const char *template_text, const char *bos_token, sala_chat_template **out);
void sala_chat_template_free(sala_chat_template *t);
/* One line for logs: where it came from and what was recognised, e.g.
 * "ChatML (tokenizer_config.json), bos \"<s>\", no default system prompt". */
const char *sala_chat_template_describe(const sala_chat_template *t);
/* The bos text the template writes ("" when none) and the default system prompt (NULL when none). */
const char *sala_chat_template_bos(const sala_chat_template *t);
const char *sala_chat_template_default_system(const sala_chat_template *t);
/* 1 when the template's generation prompt is "<|im_start|>assistant\n<think>\n" (a literal <think> after
 * the assistant header, without an enable_thinking switch): the output then starts inside the reasoning
 * block (sala_think_new(1, ...)). The built-in MiniCPM-SALA template does not (the model writes <think>). */
int sala_chat_template_opens_think(const sala_chat_template *t);

enum {
    SALA_CHAT_ADD_GENERATION_PROMPT = 1, /* end with "<|im_start|>assistant\n" */
    SALA_CHAT_CONTINUE = 2,              /* the messages continue an earlier rendering: no bos, no default
                                            system prompt (for feeding only a new turn to a session) */
};

/* Renders messages[0..n) into a malloc'd NUL-terminated string (*out; caller frees).
 * render(all) == render(first k) + render(rest, SALA_CHAT_CONTINUE) for the ChatML family.
 * SALA_ERR_ARG for a message without a role. */
sala_status sala_chat_render(const sala_chat_template *t, const sala_chat_message *msgs, int n, int flags, char **out);

/* The text that closes an assistant message whose content was generated into a session (the end marker
 * the model sampled but that was not fed, plus the separator): "<|im_end|>\n" for ChatML. Feed it before
 * the next turn rendered with SALA_CHAT_CONTINUE. */
const char *sala_chat_assistant_end(const sala_chat_template *t);

/* ---- think splitter ---- */

typedef struct sala_think sala_think;

/* Called with consecutive pieces of reasoning (is_reasoning = 1) or content (0). Pieces are never empty. */
typedef void (*sala_think_emit_fn)(void *ud, int is_reasoning, const char *text, size_t len);

/* starts_in_think: 1 when the prompt already opened the block (the template ended with "<think>"), so
 * the output starts as reasoning. Rules:
 *   - "<think>" in content switches to reasoning; "</think>" in reasoning switches back to content;
 *     the tags themselves are never emitted;
 *   - whitespace right after "<think>" and right after "</think>", and right before "</think>", is
 *     dropped (so "<think>\nabc\n</think>\n\nAnswer" gives reasoning "abc", content "Answer");
 *   - a "</think>" met in content and a "<think>" met in reasoning are ordinary text;
 *   - text that could be the beginning of a tag (e.g. "</thi") is held until it is decided;
 *     sala_think_flush() releases whatever is held at the end of the output. */
sala_think *sala_think_new(int starts_in_think, sala_think_emit_fn emit, void *ud);
void sala_think_push(sala_think *th, const char *text, size_t len);
void sala_think_flush(sala_think *th);
int sala_think_in_reasoning(const sala_think *th); /* 1 while inside <think>...</think> */
void sala_think_reset(sala_think *th, int starts_in_think);
void sala_think_free(sala_think *th);

#ifdef __cplusplus
}
#endif
#endif

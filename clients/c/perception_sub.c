/*
 * perception_sub: a reference subscriber for the perception node, in C.
 *
 * Written from the README's "Subscribing: the wire format" section (wire version 2) to show a
 * consumer outside Python what it takes: libzmq for the SUB socket, cJSON for the headers and
 * JSON documents, libpng for `png` payloads, zlib for a CRC-32 of every decoded mask.
 *
 * It subscribes to a namespace (or to topics), checks every message the way the README's
 * "Robustness" table says (sizes before allocation, every header field with its type and range,
 * the geometry), decodes every payload encoding (none, bitpack, rle, png), splits atomic frames,
 * keeps the latched <ns>/info class table, and prints one JSON line per message on stdout.
 * A message that fails a check is skipped with one line on stderr; nothing from the network can
 * crash it. A message of another wire version, or of a kind or compression this reader does not know
 * (from a newer publisher: README "Versioning"), is no malformed one: its line names the fix, and
 * each such reason is said the 1st, 10th, 100th, then every 1000th time, as the Python
 * reader's warning, so a node of another version does not flood stderr. It allocates a mask only once its size is checked: at most one of --max-mask-pixels
 * for a mask message, 4 x --max-mask-pixels in all for an atomic frame (all its masks are decoded
 * before any is printed). ZeroMQ takes frames of at most max(5 x --max-mask-pixels, 1 MiB) bytes
 * (ZMQ_MAXMSGSIZE: the largest frame of a valid message, an rle payload at worst); a publisher that
 * sends a larger one is cut off by ZeroMQ for good, so a socket monitor watches for a connection
 * dropped without ZeroMQ's own reconnect, and the client says so on stderr and connects again.
 * What ZeroMQ queues before the client reads it is bounded by --max-queue-mb (default 256 MiB):
 * ZeroMQ counts its receive queue (ZMQ_RCVHWM) in whole messages, whatever their size, so the queue
 * gets max(1, --max-queue-mb MiB / that frame limit) messages, as the Python reader's
 * (subscribe.rcvhwm_for); a full queue stops ZeroMQ reading the connection, it drops nothing.
 * It keeps track of at most --max-topics distinct topics (default 256), as the Python reader does:
 * those of the lines it prints (an atomic frame's masks each on its own topic), in the order they
 * first came, <ns>/info counted from the start with --namespace; a valid message on one topic more
 * is skipped and counted, the first one with a line on stderr, so a publisher sending on ever new
 * topics cannot grow its memory (the class tables of info topics are kept for tracked topics only).
 *
 * The rules every reader (Python, C, JavaScript) follows alike, so that one message is taken or
 * refused by all three: JSON is strict RFC 8259 UTF-8 (cJSON alone would take 01, bytes after the
 * value, control characters), with no key twice in one object, no lone UTF-16 surrogate escape, no
 * number overflowing to infinity (1e400), nesting at most 32 deep and integer literals of at most 20
 * characters; an integer field takes any number of integral value (2, 2.0, 2e0), and a wire_version
 * that is not one is malformed (an integer this reader does not speak is a version mismatch);
 * strings are bounded in characters, not bytes, and hold no \u0000 escape (keys included); a topic
 * (and the topic an atomic frame's mask name makes) holds no control character (U+0000-001F,
 * U+007F-009F, U+2028, U+2029); bitpack carries binary masks only; a topic agrees with its message
 * (no JSON document on a mask topic, one whose last part is drivable, lane, obstacle or class_map or
 * whose part before the last is obstacle, nor on frame; atomic frames only on <ns>/frame; masks not
 * on stats, obstacles, info or frame); an <ns>/info document has the README's schema (wire_version,
 * model_id, unknown_id, classes of unique ids with name and color_rgb [r, g, b] in 0..255); an atomic
 * frame's mask names are relative, without empty, '.' or '..' parts, not ending in a reserved name,
 * and make valid topics; a png's IHDR has compression and filter method 0, its chunks are whole with
 * their CRCs right up to IEND, each of a type of four letters, IHDR once, no critical chunk but IHDR,
 * PLTE, IDAT and IEND, the IDAT chunks one run, and its image data is one whole zlib stream
 * (checksum included, nothing after it) that inflates to exactly the declared rows, each starting
 * with a filter byte of 0..4; libpng then reads only IHDR, the IDAT chunks and IEND (ancillary
 * chunks, and a PLTE, which means nothing in a greyscale image, are ignored).
 *
 *   make -C clients/c
 *   clients/c/perception_sub --endpoint tcp://127.0.0.1:5556 --namespace perception/front
 *   clients/c/perception_sub --topic perception/front/lane --count 100 --dump lane.raw
 *
 * Flags: --max-mask-pixels is a whole number in 1..268435456 (16384 x 16384), --max-queue-mb and
 * --max-topics ones in 1..65536, --count a whole number, --namespace and --topic not empty; any other
 * value is refused with one line, exit 2; so is an --endpoint no subscriber can connect to: inproc://
 * (one process's own) or one with a * for its host, port or ipc path (those are for a node's bind),
 * and a --namespace or --topic with a leading '/' (a ROS 2 name: wire topics have none).
 * A first SIGINT/SIGTERM stops it with its summary line; a second one ends it at once (130, 143).
 * --topic takes exact topics (a longer one sharing the prefix is dropped); a mask topic <ns>/<mask>
 * also subscribes to <ns>/frame (a per-class <ns>/obstacle/<class> also to the frame topic one
 * level up), where an --atomic-frames node sends it, and keeps only the asked-for masks of each
 * frame; --topic <ns>/frame gives every mask of the frame. Only messages the client takes count
 * for --idle: those dropped as not asked for (a longer topic, an atomic frame without an asked-for
 * mask) are counted, and when nothing else came the last line names them (a --topic typo, or a
 * namespace given as a topic), as `perception listen` does.
 *
 * Output lines (JSON): {"kind":"mask","topic",...,"crc32","dump_offset"} per mask (the decoded
 * bytes go to --dump FILE at dump_offset), {"kind":"json",...} per JSON document, with the
 * parsed class table for <ns>/info. Integers are printed exactly (seq 2^53 - 1 as
 * 9007199254740991: cJSON's own number printing keeps 15 digits). At the end one summary line goes to stderr. When nothing at all
 * arrived (no node there, a wrong --endpoint or --namespace) it ends instead with one line, "no
 * messages received from E in S s; is the node running? ...", and exit status 4, as
 * `perception listen` does; when messages came but every one was skipped (another wire version, a
 * newer publisher, malformed), with one line "nothing read from E in S s: ..." naming why and the
 * fix, and exit status 2, as `perception listen` and `perception record`.
 */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <zmq.h>

/* Limits of the README's robustness table. */
#define MAX_TOPIC_BYTES 256
#define MAX_HEADER_BYTES (16 * 1024)
#define MAX_JSON_PAYLOAD_BYTES (1024 * 1024)
#define MAX_HEADER_STRING 256
#define MAX_LATENCY_ENTRIES 32
#define MAX_LATENCY_MS 1e12
#define MAX_JSON_DEPTH 32
#define MAX_JSON_INT_CHARS 20
#define MAX_MASK_SIDE 16384
#define MAX_MASK_PIXELS_FLAG ((double)MAX_MASK_SIDE * MAX_MASK_SIDE)
#define MAX_FRAME_MASKS 32
#define FRAME_PIXEL_FACTOR 4
#define MAX_PARTS (2 + 2 * MAX_FRAME_MASKS)
#define WIRE_VERSION 2
/* seq and pub_seq are JSON numbers; a double holds every integer exactly up to 2^53, but 2^53 itself
 * is also what 2^53 + 1 parses to: header integers are taken up to 2^53 - 1. */
#define EXACT_DOUBLE_INT 9007199254740992.0
#define MAX_WIRE_INT 9007199254740991.0
/* rle, the largest encoding: a 5-byte run a pixel at worst. */
#define RLE_RUN_BYTES 5
/* --max-queue-mb: its default and largest value (MiB), as perception/options.py's. */
#define DEFAULT_MAX_QUEUE_MB 256
#define MAX_QUEUE_MB 65536
/* --max-topics: its default and largest value, as perception/options.py's. */
#define DEFAULT_MAX_TOPICS 256
#define MAX_TOPICS 65536

static volatile sig_atomic_t stop_requested = 0;
/* The first SIGINT/SIGTERM stops the loop (the summary line follows); a second one, while the client
 * is still stopping, ends the process at once with 130 or 143, as the Python commands and the
 * JavaScript client do (write and _exit: async-signal-safe). */
static void on_signal(int sig) {
    if (!stop_requested) {
        stop_requested = 1;
        return;
    }
    static const char line[] = "perception_sub: stopped at once (a second signal)\n";
    ssize_t ignored = write(2, line, sizeof line - 1);
    (void)ignored;
    _exit(128 + sig);
}

typedef struct {
    const char *endpoint;
    const char *namespace_;
    const char *topics[64];
    int n_topics;
    /* With --topic: where an --atomic-frames node sends the asked-for mask topics (frame_topics_of),
     * subscribed to as well; at most 2 a topic. */
    char *frame_topics[128];
    int n_frame_topics;
    int64_t count;       /* stop after this many masks (0: no limit) */
    double duration_s;   /* stop after this many seconds (0: no limit) */
    double idle_s;       /* stop after this long without a message (from the start until one arrives; 0: never) */
    uint64_t max_pixels;
    FILE *dump;
} options_t;

typedef struct {
    char topic[MAX_TOPIC_BYTES + 1];  /* <ns>/info */
    int n_classes;
    char *names[256];                  /* by class id; NULL where the table has none */
    int unknown_id;
} info_t;

static info_t *infos = NULL; /* one per tracked <ns>/info topic, so at most --max-topics */
static int n_infos = 0, cap_infos = 0;
static long n_masks = 0, n_json = 0, n_skipped = 0, n_over_topics = 0;
static long n_upgrade = 0; /* of n_skipped: from another wire version or a newer publisher */
/* Messages dropped as not asked for (with --topic: a longer topic sharing an asked-for prefix, an
 * atomic frame without an asked-for mask), and the first UNASKED_KEPT distinct topics they came on
 * (cut to UNASKED_TOPIC_CHARS, bytes outside printable ASCII as '?'), as perception/subscribe_unasked.py. */
#define UNASKED_KEPT 3
#define UNASKED_TOPIC_CHARS 120
static long n_unasked = 0;
static char unasked_topics[UNASKED_KEPT][UNASKED_TOPIC_CHARS + 1];
static int n_unasked_topics = 0, unasked_more = 0;

static void note_unasked_topic(const void *data, size_t size) {
    const unsigned char *bytes = data;
    char t[UNASKED_TOPIC_CHARS + 1];
    size_t n = size > UNASKED_TOPIC_CHARS ? UNASKED_TOPIC_CHARS - 3 : size;
    for (size_t i = 0; i < n; i++) t[i] = bytes[i] < 0x20 || bytes[i] >= 0x7f ? '?' : (char)bytes[i];
    if (size > UNASKED_TOPIC_CHARS) {
        memcpy(t + n, "...", 3);
        n += 3;
    }
    t[n] = '\0';
    for (int i = 0; i < n_unasked_topics; i++)
        if (!strcmp(unasked_topics[i], t)) return;
    if (n_unasked_topics < UNASKED_KEPT)
        memcpy(unasked_topics[n_unasked_topics++], t, n + 1);
    else
        unasked_more = 1;
}
static uint64_t dump_offset = 0;

/* ------------------------------------------------------------------------------------------ */
/* Errors: a check fails by writing its reason here and returning -1.                          */
/* ------------------------------------------------------------------------------------------ */

static char why[512];
/* Whether why is a message this reader is too old or too new for (fail_upgrade), not a malformed one. */
static int why_upgrade = 0;
/* The reason of the latest message skipped, and of the latest one skipped by fail_upgrade. */
static char last_why[512], last_upgrade_why[512];
/* How many fail_upgrade skips each reason had (its lines are rate-limited): the first
 * UPGRADE_REASONS - 1 reasons each, any further ones together in the last slot. */
#define UPGRADE_REASONS 16
static struct {
    char why[512];
    long count;
} upgrade_reasons[UPGRADE_REASONS];
static int n_upgrade_reasons = 0;

static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    why_upgrade = 0;
    return -1;
}

/* A message of another wire version, or of a kind or compression this reader does not know on an
 * otherwise valid header (from a newer publisher): its reason ends with the fix. */
static int fail_upgrade(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    why_upgrade = 1;
    return -1;
}

#define NEWER_PUBLISHER_FIX "this reader does not know (from a newer publisher?): upgrade this reader"

/* Received text quoted in a reason (a kind, a compression) may hold anything: the stderr line stays
 * one line of printable ASCII. */
static void printable(char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f) *s = '?';
}

static void skip(const char *topic) {
    char where[81];
    snprintf(where, sizeof where, "%s", topic ? topic : "?");
    printable(where);
    printable(why);
    n_skipped++;
    snprintf(last_why, sizeof last_why, "%s", why);
    if (!why_upgrade) {
        fprintf(stderr, "perception_sub: skipped a message on %s: %s\n", where, why);
        return;
    }
    /* Rate-limited, as the Python reader: a node of another version sends every message so. */
    n_upgrade++;
    snprintf(last_upgrade_why, sizeof last_upgrade_why, "%s", why);
    int r = 0;
    while (r < n_upgrade_reasons && r < UPGRADE_REASONS - 1 && strcmp(upgrade_reasons[r].why, why) != 0) r++;
    if (r == n_upgrade_reasons) { /* a new reason (or, once the table is full, the shared last slot) */
        snprintf(upgrade_reasons[r].why, sizeof upgrade_reasons[r].why, "%s", why);
        n_upgrade_reasons++;
    }
    long count = ++upgrade_reasons[r].count;
    if (count == 1 || count == 10 || count == 100 || count % 1000 == 0)
        fprintf(stderr, "perception_sub: skipped a message on %s: %s (%ld so far)\n", where, why, count);
}

/* ------------------------------------------------------------------------------------------ */
/* The topics kept track of: at most --max-topics, in the order they first came (a hash set).   */
/* ------------------------------------------------------------------------------------------ */

static char **tracked = NULL; /* open addressing, cap_tracked slots (a power of two, over twice the bound) */
static size_t cap_tracked = 0, n_tracked = 0;
static int64_t max_topics = DEFAULT_MAX_TOPICS;

static size_t topic_hash(const char *topic) {
    size_t h = 14695981039346656037ull; /* FNV-1a */
    for (; *topic; topic++) h = (h ^ (unsigned char)*topic) * 1099511628211ull;
    return h;
}

static int track_init(void) {
    for (cap_tracked = 16; cap_tracked < 2 * (size_t)max_topics + 2;) cap_tracked *= 2;
    return (tracked = calloc(cap_tracked, sizeof *tracked)) != NULL ? 0 : -1;
}

/* Whether a valid message on topic is taken: its topic is tracked already, or is now while fewer than
 * --max-topics are; else it is counted, and the first one is said on stderr. */
static int track(const char *topic) {
    size_t i = topic_hash(topic) & (cap_tracked - 1);
    for (; tracked[i] != NULL; i = (i + 1) & (cap_tracked - 1))
        if (strcmp(tracked[i], topic) == 0) return 1;
    if ((int64_t)n_tracked < max_topics && (tracked[i] = strdup(topic)) != NULL) {
        n_tracked++;
        return 1;
    }
    if (n_over_topics++ == 0) {
        char where[81];
        snprintf(where, sizeof where, "%s", topic);
        printable(where);
        fprintf(stderr, "perception_sub: topic %s is one past the %" PRId64 " this client keeps track of (--max-topics): "
                        "its messages, and those of further new topics, are skipped and counted, without another line\n",
                where, max_topics);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Topic: UTF-8, at most 256 bytes, no control characters (C0, DEL, C1, U+2028, U+2029).        */
/* ------------------------------------------------------------------------------------------ */

/* The length of the UTF-8 character at p (n bytes left), its code point in *cp; 0 where it is not
 * UTF-8 (a stray or missing continuation byte, an overlong form, a surrogate, beyond U+10FFFF). */
static size_t utf8_char(const unsigned char *p, size_t n, uint32_t *cp) {
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    unsigned c = p[0];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || len > n) return 0;
    uint32_t v = len == 1 ? c : c & (0x7f >> len);
    for (size_t k = 1; k < len; k++) {
        if ((p[k] & 0xc0) != 0x80) return 0;
        v = (v << 6) | (p[k] & 0x3f);
    }
    if (v < min_cp[len] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
    *cp = v;
    return len;
}

/* Characters (code points) of a UTF-8 string: the README bounds strings in characters, as Python's
 * len() and the JavaScript reader count them, not in bytes. */
static size_t utf8_length(const char *s) {
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

/* What every reader calls a control character in a topic (perception/wire.py's _CONTROL): C0, DEL,
 * C1, the line and paragraph separators, and the invisible and bidirectional format characters. */
static int is_control(uint32_t cp) {
    return cp < 0x20 || (cp >= 0x7f && cp < 0xa0) || cp == 0xad || cp == 0x61c || cp == 0x180e ||
           (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2060 && cp <= 0x206f) ||
           cp == 0xfeff || (cp >= 0xfff9 && cp <= 0xfffb) || (cp >= 0xe0000 && cp <= 0xe007f);
}

static int check_topic(const unsigned char *p, size_t n, char *out) {
    if (n == 0 || n > MAX_TOPIC_BYTES) return fail("topic has %zu bytes, expected 1..%d", n, MAX_TOPIC_BYTES);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = utf8_char(p + i, n - i, &cp);
        if (len == 0) return fail("topic is not UTF-8");
        if (is_control(cp)) return fail("topic holds control characters");
        i += len;
    }
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

/* The last /-separated part of a topic (the whole topic where it has no /). */
static const char *topic_name(const char *topic) {
    const char *slash = strrchr(topic, '/');
    return slash ? slash + 1 : topic;
}

/* Topic names that never name a mask: the JSON documents' (the first three) and atomic frames'. */
static const char *const reserved_names[] = {"stats", "obstacles", "info", "frame"};
#define N_JSON_NAMES 3

/* Topic names that never carry a JSON document: the node's masks' and atomic frames'. */
static const char *const no_json_names[] = {"drivable", "lane", "obstacle", "class_map", "frame"};

static int is_reserved(const char *name, int n_names) {
    for (int k = 0; k < n_names; k++)
        if (strcmp(name, reserved_names[k]) == 0) return 1;
    return 0;
}

/* Whether a JSON document may go on the topic: not on a mask topic (its last part drivable, lane,
 * obstacle or class_map, or a per-class <ns>/obstacle/<class>) nor on frame; any other name is open
 * (the publisher's publish_json takes any). */
static int json_fits_topic(const char *topic) {
    const char *name = topic_name(topic);
    for (size_t k = 0; k < sizeof no_json_names / sizeof *no_json_names; k++)
        if (strcmp(name, no_json_names[k]) == 0) return 0;
    if (name == topic) return 1;
    size_t parent_len = (size_t)(name - 1 - topic); /* the part before the last ends at name - 1 */
    const char *parent = topic;
    for (size_t i = 0; i < parent_len; i++)
        if (topic[i] == '/') parent = topic + i + 1;
    return !((size_t)(topic + parent_len - parent) == strlen("obstacle") && strncmp(parent, "obstacle", strlen("obstacle")) == 0);
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Whether the n bytes at p are exactly one of the n_list topics. */
static int topic_in(const char *const *list, int n_list, const void *p, size_t n) {
    for (int k = 0; k < n_list; k++)
        if (strlen(list[k]) == n && memcmp(list[k], p, n) == 0) return 1;
    return 0;
}

/* Where an --atomic-frames node sends mask topic <ns>/<mask>: inside <ns>/frame. For a per-class
 * <ns>/obstacle/<class> the namespace is one level up, so both <ns>/obstacle/frame and <ns>/frame.
 * None for a JSON or frame topic (last part stats, obstacles, info or frame) or one without a '/'.
 * As perception/subscribe.py's _frame_topics_of. Writes up to 2 into out; returns how many. */
static int frame_topics_of(const char *topic, char out[2][MAX_TOPIC_BYTES + 8]) {
    const char *name = topic_name(topic);
    if (name == topic || name - 1 == topic || is_reserved(name, 4)) return 0;
    size_t ns_len = (size_t)(name - 1 - topic);
    int n = 0;
    if (ns_len <= MAX_TOPIC_BYTES) snprintf(out[n++], MAX_TOPIC_BYTES + 8, "%.*s/frame", (int)ns_len, topic);
    size_t group = ns_len; /* the namespace's last part: topic[group..ns_len) */
    while (group > 0 && topic[group - 1] != '/') group--;
    if (group > 1 && group - 1 <= MAX_TOPIC_BYTES && ns_len - group == strlen("obstacle") &&
        strncmp(topic + group, "obstacle", strlen("obstacle")) == 0)
        snprintf(out[n++], MAX_TOPIC_BYTES + 8, "%.*s/frame", (int)(group - 1), topic);
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* JSON fields, each checked for presence, type and range.                                     */
/* ------------------------------------------------------------------------------------------ */

static int get_int(const cJSON *obj, const char *name, double lo, double hi, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!cJSON_IsNumber(v)) return fail("field '%s' is missing or not a number", name);
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d)) return fail("field '%s' is not an integer", name);
    if (d < lo || d > hi) return fail("field '%s' is %.17g, outside %.0f..%.0f", name, d, lo, hi);
    *out = (int64_t)d;
    return 0;
}

static int get_number(const cJSON *obj, const char *name, double lo, double hi, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return fail("field '%s' is missing or not a finite number", name);
    if (v->valuedouble < lo || v->valuedouble > hi) return fail("field '%s' is %g, outside %g..%g", name, v->valuedouble, lo, hi);
    *out = v->valuedouble;
    return 0;
}

static int get_string(const cJSON *obj, const char *name, const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!cJSON_IsString(v) || v->valuestring == NULL) return fail("field '%s' is missing or not a string", name);
    if (utf8_length(v->valuestring) > MAX_HEADER_STRING)
        return fail("field '%s' is longer than %d characters", name, MAX_HEADER_STRING);
    *out = v->valuestring;
    return 0;
}

/* A wire version 2 nanosecond field: a decimal string of 1..19 digits, at most 2^63-1. JSON numbers
 * are doubles in cJSON (exact only to 2^53), hence the strings. */
static int get_ns(const cJSON *obj, const char *name, int64_t *out) {
    const char *s;
    if (get_string(obj, name, &s) < 0) return fail("field '%s' is missing or not a decimal string", name);
    size_t n = strlen(s);
    if (n == 0 || n > 19) return fail("field '%s' is not a decimal string of 1..19 digits", name);
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return fail("field '%s' is not a decimal string", name);
        v = v * 10 + (uint64_t)(s[i] - '0');  /* 19 digits < 10^19 < 2^64: no overflow */
    }
    if (v > (uint64_t)INT64_MAX) return fail("field '%s' is beyond 2^63-1", name);
    *out = (int64_t)v;
    return 0;
}

static int check_version(const cJSON *h) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(h, "wire_version");
    /* An integer like any other (2.0 is 2); a version that is not one is malformed, not another version. */
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble != floor(v->valuedouble))
        return fail("field 'wire_version' is missing or not an integer");
    if (v->valuedouble != WIRE_VERSION)
        return fail_upgrade("wire version %.17g, this reader speaks version %d; run the same perception version on both sides",
                            v->valuedouble, WIRE_VERSION);
    return 0;
}

static int not_json(const char *what, size_t at) { return fail("%s is not JSON (at byte %zu)", what, at); }

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* The 4 hex digits at p[i..i+4) as a number, -1 where there are not 4. */
static long hex4(const unsigned char *p, size_t n, size_t i) {
    long v = 0;
    if (i + 4 > n) return -1;
    for (size_t k = i; k < i + 4; k++) {
        unsigned char c = p[k];
        int d = is_digit(c) ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* A JSON string at p[*pos] (the opening quote); *pos moves past its closing quote. */
static int scan_string(const unsigned char *p, size_t n, size_t *pos, const char *what) {
    size_t i = *pos + 1;
    for (;;) {
        if (i >= n) return not_json(what, *pos);
        unsigned char c = p[i];
        if (c == '"') break;
        if (c < 0x20) return fail("%s is not JSON (a control character inside a string, at byte %zu)", what, i);
        if (c == '\\') {
            unsigned char e = i + 1 < n ? p[i + 1] : 0;
            if (e != 'u') {
                if (e == 0 || strchr("\"\\/bfnrt", e) == NULL) return not_json(what, i);
                i += 2;
                continue;
            }
            long cp = hex4(p, n, i + 2), low = -1;
            if (cp < 0) return not_json(what, i);
            if (cp == 0) return fail("%s holds a \\u0000 escape (a NUL character, refused by every reader)", what);
            if (cp >= 0xd800 && cp <= 0xdbff && i + 7 < n && p[i + 6] == '\\' && p[i + 7] == 'u') low = hex4(p, n, i + 8);
            if (cp >= 0xd800 && cp <= 0xdfff && (cp >= 0xdc00 || low < 0xdc00 || low > 0xdfff))
                return fail("%s holds a lone UTF-16 surrogate escape (\\ud800-\\udfff without its pair, at byte %zu)", what, i);
            i += cp >= 0xd800 && cp <= 0xdfff ? 12 : 6;
        } else {
            uint32_t cp;
            size_t len = utf8_char(p + i, n - i, &cp);
            if (len == 0) return fail("%s is not UTF-8 (at byte %zu)", what, i);
            i += len;
        }
    }
    *pos = i + 1;
    return 0;
}

/* A JSON number at p[*pos]: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?; an integer literal (no
 * fraction, no exponent) of at most 20 characters. */
static int scan_number(const unsigned char *p, size_t n, size_t *pos, const char *what) {
    size_t i = *pos, start = i;
    int integer = 1;
    if (p[i] == '-') i++;
    if (i < n && p[i] == '0') i++;
    else if (i < n && is_digit(p[i])) while (i < n && is_digit(p[i])) i++;
    else return not_json(what, start);
    if (i < n && p[i] == '.') {
        integer = 0;
        if (++i >= n || !is_digit(p[i])) return not_json(what, i);
        while (i < n && is_digit(p[i])) i++;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        integer = 0;
        if (++i < n && (p[i] == '+' || p[i] == '-')) i++;
        if (i >= n || !is_digit(p[i])) return not_json(what, i);
        while (i < n && is_digit(p[i])) i++;
    }
    if (integer && i - start > MAX_JSON_INT_CHARS)
        return fail("%s holds an integer of %zu characters (limit %d)", what, i - start, MAX_JSON_INT_CHARS);
    *pos = i;
    return 0;
}

/* Strict JSON (RFC 8259) within the README's bounds, checked on the raw text before cJSON parses it.
 * cJSON alone takes what Python's json and JSON.parse refuse (01, bytes after the value, control
 * characters as whitespace or inside strings, text that is not UTF-8), so the three readers would
 * not refuse the same messages; and it bounds neither nesting nor integer literals (it would turn
 * 5,000 digits into infinity). Refused too: a lone UTF-16 surrogate escape (\ud800 without its
 * pair; cJSON refuses it without saying why) and \u0000 (every reader refuses it; a C string ends there). One pass, no
 * recursion: nesting is at most MAX_JSON_DEPTH. */
static int check_json_text(const unsigned char *p, size_t n, const char *what) {
    enum { VALUE, FIRST_VALUE, KEY, FIRST_KEY, COLON, AFTER } state = VALUE;
    unsigned char open[MAX_JSON_DEPTH];
    int depth = 0;
    size_t i = 0;
    for (;;) {
        while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r')) i++;
        if (i == n) break;
        unsigned char c = p[i];
        if (state == AFTER) {
            if (depth == 0) return fail("%s is not JSON (more after the value, at byte %zu)", what, i);
            if (c == ',') state = open[depth - 1] == '{' ? KEY : VALUE;
            else if (c == (open[depth - 1] == '{' ? '}' : ']')) depth--;
            else return not_json(what, i);
            i++;
        } else if (state == COLON) {
            if (c != ':') return not_json(what, i);
            state = VALUE;
            i++;
        } else if ((state == FIRST_KEY && c == '}') || (state == FIRST_VALUE && c == ']')) {
            depth--;
            state = AFTER;
            i++;
        } else if (state == KEY || state == FIRST_KEY) {
            if (c != '"') return not_json(what, i);
            if (scan_string(p, n, &i, what) < 0) return -1;
            state = COLON;
        } else if (c == '{' || c == '[') {
            if (depth == MAX_JSON_DEPTH) return fail("%s is nested deeper than %d", what, MAX_JSON_DEPTH);
            open[depth++] = c;
            state = c == '{' ? FIRST_KEY : FIRST_VALUE;
            i++;
        } else {
            if (c == '"') {
                if (scan_string(p, n, &i, what) < 0) return -1;
            } else if (c == '-' || is_digit(c)) {
                if (scan_number(p, n, &i, what) < 0) return -1;
            } else if (n - i >= 4 && (memcmp(p + i, "true", 4) == 0 || memcmp(p + i, "null", 4) == 0)) {
                i += 4;
            } else if (n - i >= 5 && memcmp(p + i, "false", 5) == 0) {
                i += 5;
            } else {
                return not_json(what, i);
            }
            state = AFTER;
        }
    }
    if (state != AFTER || depth != 0) return fail("%s is not JSON (it ends early)", what);
    return 0;
}

static int compare_names(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* What the parsed document may still hold that a reader must refuse: a key given twice in one
 * object (cJSON finds the first, Python's json and JSON.parse keep the last: all three refuse it)
 * and a number that overflows to infinity (1e400). Recursion: at most MAX_JSON_DEPTH deep. */
static int check_json_tree(const cJSON *node, const char *what) {
    if (cJSON_IsNumber(node) && !isfinite(node->valuedouble)) return fail("%s holds a number that overflows to infinity", what);
    size_t n = 0;
    for (const cJSON *c = node->child; c != NULL; c = c->next, n++)
        if (check_json_tree(c, what) < 0) return -1;
    if (!cJSON_IsObject(node) || n < 2) return 0;
    const char **names = malloc(n * sizeof *names);
    if (names == NULL) return fail("out of memory for the keys of a %s", what);
    n = 0;
    for (const cJSON *c = node->child; c != NULL; c = c->next) names[n++] = c->string;
    qsort(names, n, sizeof *names, compare_names);
    int rc = 0;
    for (size_t k = 1; k < n && rc == 0; k++)
        if (strcmp(names[k - 1], names[k]) == 0) rc = fail("%s gives key '%.40s' twice in one object", what, names[k]);
    free(names);
    return rc;
}

static cJSON *parse_json(const void *data, size_t n, size_t max_bytes, const char *what) {
    if (n > max_bytes) { fail("%s has %zu bytes, more than %zu", what, n, max_bytes); return NULL; }
    if (check_json_text((const unsigned char *)data, n, what) < 0) return NULL;
    cJSON *doc = cJSON_ParseWithLength((const char *)data, n);
    if (doc == NULL) {
        fail("%s is not JSON", what);
    } else if (check_json_tree(doc, what) < 0) {
        cJSON_Delete(doc);
        doc = NULL;
    }
    return doc;
}

/* ------------------------------------------------------------------------------------------ */
/* Mask headers.                                                                                */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    int64_t height, width, seq, pub_seq, capture_ns, publish_ns, sec, nanosec;
    int64_t source_height, source_width, roi_x, roi_y, roi_w, roi_h;
    double binning_x, binning_y;
    const char *compression, *values, *frame_id, *model_id;
} mask_header_t;

static int parse_mask_header(const cJSON *h, mask_header_t *m) {
    const char *kind, *encoding;
    int64_t step, bigendian;
    if (check_version(h) < 0 || get_string(h, "kind", &kind) < 0) return -1;
    if (strcmp(kind, "mask") != 0) return fail("header kind '%.40s' is not 'mask'", kind);
    const cJSON *hdr = cJSON_GetObjectItemCaseSensitive(h, "header");
    const cJSON *stamp = cJSON_GetObjectItemCaseSensitive(hdr, "stamp");
    if (!cJSON_IsObject(hdr) || !cJSON_IsObject(stamp)) return fail("field 'header.stamp' is missing");
    if (get_int(stamp, "sec", 0, 2147483647.0, &m->sec) < 0 || get_int(stamp, "nanosec", 0, 999999999.0, &m->nanosec) < 0 ||
        get_string(hdr, "frame_id", &m->frame_id) < 0)
        return -1;
    if (get_int(h, "height", 1, MAX_MASK_SIDE, &m->height) < 0 || get_int(h, "width", 1, MAX_MASK_SIDE, &m->width) < 0 ||
        get_string(h, "encoding", &encoding) < 0 || get_int(h, "is_bigendian", 0, 1, &bigendian) < 0 ||
        get_int(h, "step", 0, MAX_WIRE_INT, &step) < 0 || get_string(h, "compression", &m->compression) < 0 ||
        get_string(h, "values", &m->values) < 0 || get_int(h, "seq", 0, MAX_WIRE_INT, &m->seq) < 0 ||
        get_int(h, "pub_seq", 0, MAX_WIRE_INT, &m->pub_seq) < 0 || get_ns(h, "capture_ns", &m->capture_ns) < 0 ||
        get_ns(h, "publish_ns", &m->publish_ns) < 0 || get_string(h, "model_id", &m->model_id) < 0)
        return -1;
    if (strcmp(encoding, "mono8") != 0 || step != m->width || bigendian != 0)
        return fail("encoding '%.20s' step %" PRId64 " is_bigendian %" PRId64 ", expected mono8, step == width, 0", encoding,
                    step, bigendian);
    if (strcmp(m->values, "binary") != 0 && strcmp(m->values, "class_ids") != 0)
        return fail("field 'values' is '%.40s', expected binary or class_ids", m->values);
    if (strcmp(m->compression, "bitpack") == 0 && strcmp(m->values, "class_ids") == 0)
        return fail("bitpack for class ids; bitpack carries binary masks only");
    if (m->sec != m->capture_ns / 1000000000 || m->nanosec != m->capture_ns % 1000000000)
        return fail("header.stamp %" PRId64 ".%09" PRId64 " is not capture_ns %" PRId64, m->sec, m->nanosec, m->capture_ns);
    const cJSON *latency = cJSON_GetObjectItemCaseSensitive(h, "latency_ms");
    if (!cJSON_IsObject(latency) || cJSON_GetArraySize(latency) > MAX_LATENCY_ENTRIES)
        return fail("field 'latency_ms' is missing or not an object of at most %d entries", MAX_LATENCY_ENTRIES);
    const cJSON *stage;
    cJSON_ArrayForEach(stage, latency) {
        if (!cJSON_IsNumber(stage) || !(fabs(stage->valuedouble) <= MAX_LATENCY_MS) || utf8_length(stage->string) > MAX_HEADER_STRING)
            return fail("field 'latency_ms' holds other than numbers in -1e12..1e12 under names of at most %d characters",
                        MAX_HEADER_STRING);
    }
    /* Geometry: the region of the camera frame the mask covers, and frame pixels per mask pixel. */
    const cJSON *roi = cJSON_GetObjectItemCaseSensitive(h, "roi");
    if (!cJSON_IsObject(roi)) return fail("field 'roi' is missing or not an object");
    if (!cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(roi, "do_rectify"))) return fail("field 'roi.do_rectify' is not a boolean");
    if (get_int(h, "source_height", 1, MAX_MASK_SIDE, &m->source_height) < 0 ||
        get_int(h, "source_width", 1, MAX_MASK_SIDE, &m->source_width) < 0 ||
        get_int(roi, "x_offset", 0, MAX_MASK_SIDE, &m->roi_x) < 0 || get_int(roi, "y_offset", 0, MAX_MASK_SIDE, &m->roi_y) < 0 ||
        get_int(roi, "width", 1, MAX_MASK_SIDE, &m->roi_w) < 0 || get_int(roi, "height", 1, MAX_MASK_SIDE, &m->roi_h) < 0 ||
        get_number(h, "binning_x", 1e-6, 1e6, &m->binning_x) < 0 || get_number(h, "binning_y", 1e-6, 1e6, &m->binning_y) < 0)
        return -1;
    if (m->roi_x + m->roi_w > m->source_width || m->roi_y + m->roi_h > m->source_height)
        return fail("roi %" PRId64 "x%" PRId64 "+%" PRId64 "+%" PRId64 " reaches outside the %" PRId64 "x%" PRId64 " frame",
                    m->roi_w, m->roi_h, m->roi_x, m->roi_y, m->source_width, m->source_height);
    /* binning = roi size / mask size; the publisher rounds it to 9 decimals. */
    if (fabs(m->binning_x * (double)m->width - (double)m->roi_w) > 1e-6 * (double)m->roi_w + 1e-6 + 1e-9 * (double)m->width ||
        fabs(m->binning_y * (double)m->height - (double)m->roi_h) > 1e-6 * (double)m->roi_h + 1e-6 + 1e-9 * (double)m->height)
        return fail("binning %g x %g does not map the %" PRId64 "x%" PRId64 " mask onto the %" PRId64 "x%" PRId64 " roi",
                    m->binning_x, m->binning_y, m->width, m->height, m->roi_w, m->roi_h);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Payload decoders: the declared size is checked before anything is allocated.               */
/* ------------------------------------------------------------------------------------------ */

/* What libpng reads: the PNG's signature and IHDR, its run of IDAT chunks and an IEND, one after
 * the other (ancillary chunks and a PLTE are left out: check_png_chunks). */
typedef struct {
    const unsigned char *data[3];
    size_t size[3];
    int part;
    size_t pos;
} png_source_t;

static void png_read_memory(png_structp png, png_bytep out, png_size_t n) {
    png_source_t *src = (png_source_t *)png_get_io_ptr(png);
    while (n > 0) {
        if (src->part == 3) png_error(png, "truncated");
        size_t take = src->size[src->part] - src->pos;
        if (take > n) take = n;
        memcpy(out, src->data[src->part] + src->pos, take);
        out += take;
        n -= take;
        src->pos += take;
        if (src->pos == src->size[src->part]) {
            src->part++;
            src->pos = 0;
        }
    }
}

static const unsigned char png_iend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82};

static void png_quiet_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

static void png_fail(png_structp png, png_const_charp msg) {
    fail("png payload is not a readable PNG (%.120s)", msg);
    png_longjmp(png, 1);
}

static uint32_t be32(const unsigned char *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static int is_letter(unsigned char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

/* The PNG's chunks whole (each within the payload, its CRC right, IEND reached), each of a type of
 * four letters, IHDR once, no critical chunk (its type's first letter upper case) but IHDR, PLTE,
 * IDAT and IEND, the IDAT chunks one run (*idat_at, *idat_len: where it lies), the image not
 * interlaced (Adam7 rows come in passes of other sizes; no node sends them), and its image data one
 * whole zlib stream (its end and Adler-32 there, no byte after it in the IDAT data) inflating to
 * exactly the declared rows (a filter byte of 0..4 and the pixels each), as every reader checks:
 * libpng alone would take more rows than the IHDR says (it warns and drops them), a stream without
 * its checksum, or data after the stream. The inflation counts into a small buffer and stops one
 * byte past the declared size. */
static int check_png_chunks(const unsigned char *p, size_t n, uint32_t height, uint32_t width, size_t *idat_at,
                            size_t *idat_len) {
    size_t offset = 8, idat_end = 0;
    *idat_at = *idat_len = 0;
    for (;;) {
        if (n - offset < 12) return fail("png payload is cut short (no IEND chunk)");
        uint32_t length = be32(p + offset);
        const unsigned char *kind = p + offset + 4;
        if (length > n - offset - 12) return fail("png payload is cut short (its '%.4s' chunk runs past the end)", kind);
        if (crc32(crc32(0L, Z_NULL, 0), kind, length + 4) != be32(p + offset + 8 + length))
            return fail("png payload's '%.4s' chunk has a bad CRC", kind);
        if (!is_letter(kind[0]) || !is_letter(kind[1]) || !is_letter(kind[2]) || !is_letter(kind[3]))
            return fail("png payload has a chunk of type '%.4s', not four ASCII letters", kind);
        if (memcmp(kind, "IHDR", 4) == 0 && offset != 8) return fail("png payload has a second IHDR chunk");
        if (kind[0] <= 'Z' && memcmp(kind, "IHDR", 4) != 0 && memcmp(kind, "PLTE", 4) != 0 && memcmp(kind, "IDAT", 4) != 0 &&
            memcmp(kind, "IEND", 4) != 0)
            return fail("png payload has an unknown critical chunk '%.4s'", kind);
        int iend = memcmp(kind, "IEND", 4) == 0;
        if (memcmp(kind, "IDAT", 4) == 0) {
            if (idat_end != 0 && idat_end != offset) return fail("png payload's IDAT chunks are not consecutive");
            if (idat_end == 0) *idat_at = offset;
            idat_end = offset + 12 + (size_t)length;
            *idat_len = idat_end - *idat_at;
        }
        offset += 12 + (size_t)length;
        if (iend) break;
    }
    if (p[28] != 0) return fail("png payload is interlaced; masks are sent non-interlaced"); /* as every reader */
    uint64_t rows = (uint64_t)height * ((uint64_t)width + 1);
    uint64_t bad_row = UINT64_MAX;
    unsigned char scratch[16384], bad_filter = 0;
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit(&z) != Z_OK) return fail("zlib could not start");
    int rc = Z_OK, after_end = 0; /* after_end: IDAT bytes left once the stream ended */
    for (offset = 8; z.total_out <= rows;) {
        uint32_t length = be32(p + offset);
        const unsigned char *kind = p + offset + 4;
        if (memcmp(kind, "IEND", 4) == 0) break;
        offset += 12 + (size_t)length;
        if (memcmp(kind, "IDAT", 4) != 0) continue;
        if (rc == Z_STREAM_END) {
            after_end |= length > 0;
            continue;
        }
        z.next_in = (unsigned char *)(kind + 4);
        z.avail_in = length;
        while (z.avail_in > 0 && z.total_out <= rows) {
            uint64_t at = z.total_out; /* the stream offset of scratch[0] */
            z.next_out = scratch;
            z.avail_out = sizeof scratch;
            rc = inflate(&z, Z_NO_FLUSH);
            /* Each row starts with its filter byte: offsets 0, width + 1, 2 (width + 1), ... */
            for (uint64_t k = (at + width) / (width + 1) * (width + 1); bad_row == UINT64_MAX && k < z.total_out && k < rows;
                 k += width + 1)
                if (scratch[k - at] > 4) {
                    bad_row = k / (width + 1);
                    bad_filter = scratch[k - at];
                }
            if (rc == Z_STREAM_END || rc == Z_BUF_ERROR || z.total_out > rows) break; /* BUF_ERROR: no progress */
            if (rc != Z_OK) {
                inflateEnd(&z);
                return fail("png payload's image data does not inflate (%.80s)", z.msg ? z.msg : "zlib error");
            }
        }
        if (rc == Z_STREAM_END) after_end |= z.avail_in > 0;
    }
    uint64_t got = z.total_out;
    inflateEnd(&z);
    if (got != rows)
        return fail("png payload's image data holds %s than the %u rows of %u pixels its header declares", got > rows ? "more" : "less",
                    height, width);
    if (rc != Z_STREAM_END) return fail("png payload's zlib stream is cut short (no end of stream and Adler-32 checksum)");
    if (after_end) return fail("png payload's image data has bytes after the end of its zlib stream");
    if (bad_row != UINT64_MAX)
        return fail("png payload has a bad adaptive filter value (%u starts row %" PRIu64 "; PNG defines 0..4)", bad_filter,
                    bad_row);
    return 0;
}

static int decode_png(const unsigned char *p, size_t n, uint32_t height, uint32_t width, unsigned char *out) {
    static const unsigned char signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    /* The IHDR first (26 bytes): an 8-bit greyscale image of the header's size, nothing larger. */
    if (n < 26 || memcmp(p, signature, 8) != 0 || be32(p + 8) != 13 || memcmp(p + 12, "IHDR", 4) != 0)
        return fail("png payload is not a PNG (no signature and IHDR chunk)");
    if (be32(p + 16) != width || be32(p + 20) != height || p[24] != 8 || p[25] != 0)
        return fail("png payload is a %ux%u image of depth %u, colour type %u; header says 8-bit greyscale %ux%u", be32(p + 16),
                    be32(p + 20), p[24], p[25], width, height);
    if (n < 29) return fail("png payload is cut short (no IEND chunk)");
    if (p[26] != 0 || p[27] != 0)
        return fail("png payload's IHDR has compression method %u and filter method %u; PNG defines only 0", p[26], p[27]);
    size_t idat_at, idat_len;
    if (check_png_chunks(p, n, height, width, &idat_at, &idat_len) < 0) return -1;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, png_fail, png_quiet_warning);
    if (png == NULL) return fail("libpng could not start");
    png_infop info = png_create_info_struct(png);
    png_bytep *volatile rows = NULL; /* volatile: set after setjmp, freed after a longjmp */
    png_source_t src = {{p, p + idat_at, png_iend}, {33, idat_len, sizeof png_iend}, 0, 0}; /* 33: signature and IHDR */
    if (info == NULL || setjmp(png_jmpbuf(png))) {
        int started = info != NULL; /* png_destroy_read_struct sets info to NULL */
        free(rows);
        png_destroy_read_struct(&png, started ? &info : NULL, NULL);
        if (!started) fail("libpng could not start");
        return -1;
    }
    png_set_user_limits(png, width, height);
    png_set_chunk_malloc_max(png, 64 * 1024); /* no chunk but IHDR, IDAT and IEND reaches it; none can balloon */
    png_set_read_fn(png, &src, png_read_memory);
    png_read_info(png, info);
    if (png_get_bit_depth(png, info) != 8 || png_get_color_type(png, info) != PNG_COLOR_TYPE_GRAY)
        png_error(png, "not 8-bit greyscale");
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != width) png_error(png, "unexpected row size");
    rows = malloc(sizeof *rows * height);
    if (rows == NULL) png_error(png, "out of memory");
    for (uint32_t r = 0; r < height; r++) rows[r] = out + (size_t)r * width;
    png_read_image(png, rows);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    return 0;
}

static int decode_payload(const char *compression, const unsigned char *p, size_t n, uint64_t height, uint64_t width,
                          unsigned char *out) {
    uint64_t pixels = height * width;
    if (strcmp(compression, "none") == 0) {
        if (n != pixels) return fail("none payload has %zu bytes, %" PRIu64 "x%" PRIu64 " needs %" PRIu64, n, height, width, pixels);
        memcpy(out, p, n);
        return 0;
    }
    if (strcmp(compression, "bitpack") == 0) {
        if (n != (pixels + 7) / 8) return fail("bitpack payload has %zu bytes, needs %" PRIu64, n, (pixels + 7) / 8);
        for (uint64_t i = 0; i < pixels; i++) out[i] = (p[i >> 3] >> (7 - (i & 7))) & 1 ? 255 : 0;
        return 0;
    }
    if (strcmp(compression, "rle") == 0) {
        if (n % 5 != 0) return fail("rle payload has %zu bytes, not a multiple of 5", n);
        if (n / 5 > pixels) return fail("rle payload has more runs than the mask has pixels");
        uint64_t i = 0;
        for (size_t k = 0; k < n; k += 5) {
            uint32_t len = (uint32_t)p[k + 1] | (uint32_t)p[k + 2] << 8 | (uint32_t)p[k + 3] << 16 | (uint32_t)p[k + 4] << 24;
            if (len == 0) return fail("rle payload holds a zero-length run");
            if (len > pixels - i) return fail("rle runs cover more than %" PRIu64 " pixels", pixels);
            memset(out + i, p[k], len);
            i += len;
        }
        if (i != pixels) return fail("rle runs cover %" PRIu64 " pixels, needs %" PRIu64, i, pixels);
        return 0;
    }
    if (strcmp(compression, "png") == 0) return decode_png(p, n, (uint32_t)height, (uint32_t)width, out);
    return fail_upgrade("compression '%.40s' is a compression " NEWER_PUBLISHER_FIX, compression);
}

/* An integer as a JSON number, exactly: cJSON prints numbers with 15 significant digits when they
 * do not fit an int (seq 9007199254740991 came out as 9.00719925474099e+15). */
static void add_int(cJSON *line, const char *name, int64_t v) {
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, v);
    cJSON_AddRawToObject(line, name, text);
}

/* ------------------------------------------------------------------------------------------ */
/* <ns>/info: the class table, kept per info topic.                                            */
/* ------------------------------------------------------------------------------------------ */

static info_t *find_info(const char *topic) {
    for (int i = 0; i < n_infos; i++)
        if (strcmp(infos[i].topic, topic) == 0) return &infos[i];
    return NULL;
}

/* The info of the namespace a topic belongs to (the longest <ns>/info whose <ns>/ prefixes it). */
static const info_t *info_for(const char *topic) {
    const info_t *best = NULL;
    size_t best_len = 0;
    for (int i = 0; i < n_infos; i++) {
        size_t ns_len = strlen(infos[i].topic) - strlen("info");
        if (strncmp(infos[i].topic, topic, ns_len) == 0 && ns_len > best_len) best = &infos[i], best_len = ns_len;
    }
    return best;
}

static int read_info(const char *topic, const cJSON *doc, cJSON *line) {
    int64_t version, unknown_id, id;
    const char *model_id, *name;
    if (!cJSON_IsObject(doc)) return fail("info payload is not a JSON object");
    if (get_int(doc, "wire_version", 0, 1e6, &version) < 0 || get_string(doc, "model_id", &model_id) < 0 ||
        get_int(doc, "unknown_id", 0, 255, &unknown_id) < 0)
        return -1;
    const cJSON *classes = cJSON_GetObjectItemCaseSensitive(doc, "classes");
    if (!cJSON_IsArray(classes) || cJSON_GetArraySize(classes) > 255) return fail("info 'classes' is not an array of at most 255");
    char *names[256] = {0};
    int n = 0;
    const cJSON *c;
    cJSON *out_classes = cJSON_AddArrayToObject(line, "classes");
    cJSON_ArrayForEach(c, classes) {
        const cJSON *rgb = cJSON_GetObjectItemCaseSensitive(c, "color_rgb");
        int rgb_ok = cJSON_IsArray(rgb) && cJSON_GetArraySize(rgb) == 3;
        for (const cJSON *v = rgb_ok ? rgb->child : NULL; v != NULL; v = v->next)
            rgb_ok &= cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) && v->valuedouble >= 0 && v->valuedouble <= 255;
        if (!cJSON_IsObject(c) || get_int(c, "id", 0, 254, &id) < 0 || get_string(c, "name", &name) < 0 || names[id] != NULL ||
            id == unknown_id || !rgb_ok) {
            for (int k = 0; k < 256; k++) free(names[k]);
            return fail("info class %d is not {id (unique, 0..254, not unknown_id), name, color_rgb [r, g, b] in 0..255}", n);
        }
        names[id] = strdup(name);
        cJSON *entry = cJSON_CreateObject();
        cJSON_AddNumberToObject(entry, "id", (double)id);
        cJSON_AddStringToObject(entry, "name", name);
        cJSON_AddItemToArray(out_classes, entry);
        n++;
    }
    /* Kept for a tracked topic only, so at most --max-topics of them; a message on a topic past them
     * is skipped and counted (track), not printed. */
    if (!track(topic)) {
        for (int k = 0; k < 256; k++) free(names[k]);
        return 1;
    }
    info_t *info = find_info(topic);
    if (info == NULL) {
        if (n_infos == cap_infos) {
            int cap = cap_infos ? 2 * cap_infos : 4;
            info_t *grown = realloc(infos, (size_t)cap * sizeof *infos);
            if (grown == NULL) {
                for (int k = 0; k < 256; k++) free(names[k]);
                return fail("out of memory for the class table of %d info topics", n_infos + 1);
            }
            infos = grown;
            cap_infos = cap;
        }
        info = &infos[n_infos++];
        snprintf(info->topic, sizeof info->topic, "%s", topic);
    } else {
        for (int k = 0; k < 256; k++) free(info->names[k]);
    }
    memcpy(info->names, names, sizeof names);
    info->n_classes = n;
    info->unknown_id = (int)unknown_id;
    add_int(line, "info_wire_version", version);
    cJSON_AddStringToObject(line, "model_id", model_id);
    add_int(line, "unknown_id", unknown_id);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Output                                                                                       */
/* ------------------------------------------------------------------------------------------ */

static void print_line(cJSON *line) {
    char *text = cJSON_PrintUnformatted(line);
    if (text != NULL) {
        fputs(text, stdout);
        fputc('\n', stdout);
        free(text);
    }
    cJSON_Delete(line);
}

static void add_ns(cJSON *line, const char *name, int64_t v) {
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, v);
    cJSON_AddStringToObject(line, name, text);
}

static cJSON *mask_line(const char *topic, const mask_header_t *m, const unsigned char *mask, int64_t frame_pub_seq) {
    uint64_t pixels = (uint64_t)m->height * (uint64_t)m->width;
    cJSON *line = cJSON_CreateObject();
    cJSON_AddStringToObject(line, "kind", "mask");
    cJSON_AddStringToObject(line, "topic", topic);
    add_int(line, "seq", m->seq);
    add_int(line, "pub_seq", m->pub_seq);
    if (frame_pub_seq >= 0) add_int(line, "frame_pub_seq", frame_pub_seq);
    add_ns(line, "capture_ns", m->capture_ns);
    add_ns(line, "publish_ns", m->publish_ns);
    add_int(line, "stamp_sec", m->sec);
    add_int(line, "stamp_nanosec", m->nanosec);
    cJSON_AddStringToObject(line, "frame_id", m->frame_id);
    cJSON_AddStringToObject(line, "model_id", m->model_id);
    add_int(line, "height", m->height);
    add_int(line, "width", m->width);
    cJSON_AddStringToObject(line, "compression", m->compression);
    cJSON_AddStringToObject(line, "values", m->values);
    add_int(line, "source_height", m->source_height);
    add_int(line, "source_width", m->source_width);
    double roi[4] = {(double)m->roi_x, (double)m->roi_y, (double)m->roi_w, (double)m->roi_h};
    cJSON_AddItemToObject(line, "roi_xywh", cJSON_CreateDoubleArray(roi, 4));
    cJSON_AddNumberToObject(line, "binning_x", m->binning_x);
    cJSON_AddNumberToObject(line, "binning_y", m->binning_y);
    char crc[9];
    snprintf(crc, sizeof crc, "%08lx", crc32(crc32(0L, Z_NULL, 0), mask, (uInt)pixels));
    cJSON_AddStringToObject(line, "crc32", crc);
    /* Which classes the mask holds, by the name <ns>/info's class table gives them (class maps
     * only); an id the table does not name, its unknown_id (255) among them, is "id<N>". */
    if (strcmp(m->values, "class_ids") == 0) {
        uint64_t hist[256] = {0};
        for (uint64_t i = 0; i < pixels; i++) hist[mask[i]]++;
        const info_t *info = info_for(topic);
        cJSON *present = cJSON_AddArrayToObject(line, "classes_present");
        for (int id = 0; id < 256; id++) {
            if (!hist[id]) continue;
            char fallback[16];
            snprintf(fallback, sizeof fallback, "id%d", id);
            const char *name = info != NULL && info->names[id] ? info->names[id] : fallback;
            cJSON_AddItemToArray(present, cJSON_CreateString(name));
        }
    }
    if (dump_offset != UINT64_MAX) add_int(line, "dump_offset", (int64_t)dump_offset);
    return line;
}

static void emit_mask(cJSON *line, const unsigned char *mask, uint64_t pixels, FILE *dump) {
    if (dump != NULL) {
        if (fwrite(mask, 1, pixels, dump) != pixels) {
            fprintf(stderr, "perception_sub: error: cannot write the dump file (%s)\n", strerror(errno));
            exit(1);
        }
        dump_offset += pixels;
    }
    print_line(line);
    n_masks++;
}

/* ------------------------------------------------------------------------------------------ */
/* Messages                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static int handle_mask(const char *topic, const cJSON *h, zmq_msg_t *payload, const options_t *o) {
    mask_header_t m;
    if (parse_mask_header(h, &m) < 0) return -1;
    uint64_t pixels = (uint64_t)m.height * (uint64_t)m.width;
    if (pixels > o->max_pixels)
        return fail("mask of %" PRId64 "x%" PRId64 " pixels is over the limit of %" PRIu64 " (--max-mask-pixels)", m.height, m.width,
                    o->max_pixels);
    unsigned char *mask = malloc(pixels);
    if (mask == NULL) return fail("out of memory for a %" PRIu64 "-pixel mask", pixels);
    if (decode_payload(m.compression, zmq_msg_data(payload), zmq_msg_size(payload), (uint64_t)m.height, (uint64_t)m.width, mask) < 0) {
        free(mask);
        return -1;
    }
    if (track(topic)) emit_mask(mask_line(topic, &m, mask, -1), mask, pixels, o->dump);
    free(mask);
    return 0;
}

/* An atomic frame's mask name, which makes the topic <ns>/<name>: relative, made of /-separated parts
 * none of which is empty, '.' or '..' (a per-class mask is obstacle/<class>), the last not a name
 * reserved for JSON documents or frames. */
static const char *mask_name_problem(const char *name) {
    for (const char *part = name;;) {
        size_t len = strcspn(part, "/");
        if (len == 0 || (len == 1 && part[0] == '.') || (len == 2 && part[0] == '.' && part[1] == '.'))
            return "has an empty, '.' or '..' part";
        if (part[len] == '\0') return is_reserved(part, 4) ? "ends in a name reserved for JSON documents or frames" : NULL;
        part += len + 1;
    }
}

/* An atomic frame: [topic, frame header, mask header 1, payload 1, ...]. Every part is checked and
 * decoded before any is printed: a frame is all or nothing, as on the wire. */
static int handle_frame(const char *topic, const cJSON *h, zmq_msg_t *parts, int n_parts, const options_t *o) {
    int64_t seq, pub_seq, capture_ns, publish_ns;
    const char *frame_id;
    if (get_int(h, "seq", 0, MAX_WIRE_INT, &seq) < 0 || get_int(h, "pub_seq", 0, MAX_WIRE_INT, &pub_seq) < 0 ||
        get_ns(h, "capture_ns", &capture_ns) < 0 || get_ns(h, "publish_ns", &publish_ns) < 0 || get_string(h, "frame_id", &frame_id) < 0)
        return -1;
    const cJSON *names = cJSON_GetObjectItemCaseSensitive(h, "masks");
    int n = cJSON_IsArray(names) ? cJSON_GetArraySize(names) : -1;
    if (n < 1 || n > MAX_FRAME_MASKS) return fail("frame 'masks' is not a list of 1..%d names", MAX_FRAME_MASKS);
    if (n_parts != 2 + 2 * n) return fail("frame message has %d parts, expected %d for %d masks", n_parts, 2 + 2 * n, n);
    if (!ends_with(topic, "/frame")) return fail("frame message on a topic not ending in /frame");
    size_t ns_len = strlen(topic) - strlen("frame");
    mask_header_t heads[MAX_FRAME_MASKS];
    cJSON *docs[MAX_FRAME_MASKS] = {0};
    char topics[MAX_FRAME_MASKS][2 * MAX_TOPIC_BYTES + 2];
    unsigned char *masks[MAX_FRAME_MASKS] = {0};
    uint64_t total = 0;
    int rc = -1, i;
    for (i = 0; i < n; i++) {
        const cJSON *name = cJSON_GetArrayItem(names, i);
        if (!cJSON_IsString(name) || utf8_length(name->valuestring) > MAX_HEADER_STRING) {
            fail("frame mask name %d is not a string of at most %d characters", i, MAX_HEADER_STRING);
            goto done;
        }
        const char *problem = mask_name_problem(name->valuestring);
        if (problem != NULL) {
            fail("frame mask name %d %s", i, problem);
            goto done;
        }
        for (int k = 0; k < i; k++)
            if (strcmp(cJSON_GetArrayItem(names, k)->valuestring, name->valuestring) == 0) {
                fail("frame names mask '%.40s' twice", name->valuestring);
                goto done;
            }
        /* The mask's own topic, as this reader prints it, under the rules of a received topic. */
        snprintf(topics[i], sizeof topics[i], "%.*s%s", (int)ns_len, topic, name->valuestring);
        char checked[MAX_TOPIC_BYTES + 1];
        if (check_topic((const unsigned char *)topics[i], strlen(topics[i]), checked) < 0) {
            char reason[sizeof why];
            snprintf(reason, sizeof reason, "%s", why);
            fail("frame mask name %d makes a bad topic: %s", i, reason);
            goto done;
        }
        docs[i] = parse_json(zmq_msg_data(&parts[2 + 2 * i]), zmq_msg_size(&parts[2 + 2 * i]), MAX_HEADER_BYTES, "frame mask header");
        if (docs[i] == NULL || parse_mask_header(docs[i], &heads[i]) < 0) goto done;
        if (heads[i].seq != seq) {
            fail("frame mask '%.40s' has seq %" PRId64 ", the frame %" PRId64, name->valuestring, heads[i].seq, seq);
            goto done;
        }
        total += (uint64_t)heads[i].height * (uint64_t)heads[i].width;
    }
    if (total > FRAME_PIXEL_FACTOR * o->max_pixels) {
        fail("frame declares %" PRIu64 " pixels, more than %d x --max-mask-pixels", total, FRAME_PIXEL_FACTOR);
        goto done;
    }
    for (i = 0; i < n; i++) {
        uint64_t pixels = (uint64_t)heads[i].height * (uint64_t)heads[i].width;
        if (pixels > o->max_pixels) {
            fail("frame mask of %" PRIu64 " pixels is over the limit (--max-mask-pixels)", pixels);
            goto done;
        }
        masks[i] = malloc(pixels);
        if (masks[i] == NULL) {
            fail("out of memory");
            goto done;
        }
        zmq_msg_t *payload = &parts[3 + 2 * i];
        if (decode_payload(heads[i].compression, zmq_msg_data(payload), zmq_msg_size(payload), (uint64_t)heads[i].height,
                           (uint64_t)heads[i].width, masks[i]) < 0)
            goto done;
    }
    /* With --topic, the frame topic itself asked for gives every mask; a frame subscribed to for
     * asked-for mask topics (frame_topics_of) gives only those. */
    int whole = o->n_topics == 0 || topic_in(o->topics, o->n_topics, topic, strlen(topic)), any = whole;
    for (i = 0; i < n && !any; i++) any = topic_in(o->topics, o->n_topics, topics[i], strlen(topics[i]));
    if (!any) { /* none of its masks asked for: dropped as not asked for, on its masks' topics */
        n_unasked++;
        for (i = 0; i < n; i++) note_unasked_topic(topics[i], strlen(topics[i]));
    }
    for (i = 0; i < n; i++)
        if ((whole || topic_in(o->topics, o->n_topics, topics[i], strlen(topics[i]))) && track(topics[i]))
            emit_mask(mask_line(topics[i], &heads[i], masks[i], pub_seq), masks[i],
                      (uint64_t)heads[i].height * (uint64_t)heads[i].width, o->dump);
    rc = 0;
done:
    for (i = 0; i < n; i++) {
        cJSON_Delete(docs[i]);
        free(masks[i]);
    }
    return rc;
}

static int handle_json(const char *topic, const cJSON *h, zmq_msg_t *payload) {
    int64_t seq, pub_seq, publish_ns;
    const char *name;
    if (get_string(h, "name", &name) < 0 || get_int(h, "seq", 0, MAX_WIRE_INT, &seq) < 0 ||
        get_int(h, "pub_seq", 0, MAX_WIRE_INT, &pub_seq) < 0 || get_ns(h, "publish_ns", &publish_ns) < 0)
        return -1;
    cJSON *doc = parse_json(zmq_msg_data(payload), zmq_msg_size(payload), MAX_JSON_PAYLOAD_BYTES, "JSON payload");
    if (doc == NULL) return -1;
    cJSON *line = cJSON_CreateObject();
    cJSON_AddStringToObject(line, "kind", "json");
    cJSON_AddStringToObject(line, "topic", topic);
    cJSON_AddStringToObject(line, "name", name);
    add_int(line, "seq", seq);
    add_int(line, "pub_seq", pub_seq);
    add_ns(line, "publish_ns", publish_ns);
    add_int(line, "payload_bytes", (int64_t)zmq_msg_size(payload));
    /* 0: taken; 1: on a topic past --max-topics (skipped and counted by track, no line); -1: refused. */
    int taken = strcmp(topic_name(topic), "info") == 0 ? read_info(topic, doc, line) : track(topic) ? 0 : 1;
    if (taken != 0) {
        cJSON_Delete(line);
        cJSON_Delete(doc);
        return taken < 0 ? -1 : 0;
    }
    cJSON_Delete(doc);
    print_line(line);
    n_json++;
    return 0;
}

static void handle_message(zmq_msg_t *parts, int n_parts, const options_t *o) {
    char topic[MAX_TOPIC_BYTES + 1] = "?";
    if (n_parts < 3) {
        fail("message has %d parts, expected 3 (topic, header, payload)", n_parts);
        skip(NULL);
        return;
    }
    if (check_topic(zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]), topic) < 0) {
        skip(NULL);
        return;
    }
    cJSON *h = parse_json(zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), MAX_HEADER_BYTES, "header");
    const char *kind = NULL;
    int rc = -1;
    if (h == NULL) {
        /* why says it */
    } else if (!cJSON_IsObject(h)) {
        fail("header is not a JSON object");
    } else if (check_version(h) == 0 && get_string(h, "kind", &kind) == 0) {
        if (strcmp(kind, "frame") == 0) {
            rc = handle_frame(topic, h, parts, n_parts, o);
        } else if (n_parts != 3) {
            fail("message has %d parts, expected 3 (topic, header, payload)", n_parts);
        } else if (strcmp(kind, "mask") == 0) {
            if (is_reserved(topic_name(topic), 4))
                fail("mask on a topic named '%s', a name reserved for %s", topic_name(topic),
                     is_reserved(topic_name(topic), N_JSON_NAMES) ? "a JSON document" : "atomic frames");
            else
                rc = handle_mask(topic, h, &parts[2], o);
        } else if (strcmp(kind, "json") == 0) {
            if (!json_fits_topic(topic))
                fail("JSON document on a topic named '%.40s', a %s topic", topic_name(topic),
                     strcmp(topic_name(topic), "frame") == 0 ? "frame" : "mask");
            else
                rc = handle_json(topic, h, &parts[2]);
        } else {
            fail_upgrade("header kind '%.40s' is a message kind " NEWER_PUBLISHER_FIX, kind);
        }
    }
    if (rc < 0) skip(topic);
    cJSON_Delete(h);
    fflush(stdout);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------------------------------ */
/* The connection: ZeroMQ reconnects by itself after the network or the node dropped it, but not  */
/* after a protocol error, above all a frame over ZMQ_MAXMSGSIZE: that publisher is cut off for   */
/* good. A socket monitor tells the two apart (ZeroMQ announces its own reconnect at once).       */
/* ------------------------------------------------------------------------------------------ */

#define RECONNECT_GRACE_S 0.1
#define MONITOR_EVENTS (ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CONNECT_RETRIED)

typedef struct {
    void *monitor;     /* the PAIR socket the monitor's events arrive on; NULL without one */
    int up;            /* the connection's handshake done */
    double dropped_at; /* when it was dropped with no reconnect announced yet (0: none) */
    long reconnects;
} watch_t;

/* Reads the monitor's events; connects again to the endpoint once a connection that was up has been
 * dropped for RECONNECT_GRACE_S without ZeroMQ announcing a reconnect, with a rate-limited line. */
static void watch_connection(watch_t *w, void *sock, const char *endpoint, int64_t max_msg, uint64_t max_pixels) {
    for (;;) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, w->monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            break;
        }
        uint16_t event = 0; /* the first part: the event (uint16) and a value (uint32); then the endpoint */
        if (zmq_msg_size(&part) >= sizeof event) memcpy(&event, zmq_msg_data(&part), sizeof event);
        for (int more = zmq_msg_more(&part); more && zmq_msg_recv(&part, w->monitor, 0) >= 0;) more = zmq_msg_more(&part);
        zmq_msg_close(&part);
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            w->up = 1;
            w->dropped_at = 0;
        } else if (event == ZMQ_EVENT_DISCONNECTED && w->up) {
            w->up = 0;
            w->dropped_at = now_s();
        } else if (event == ZMQ_EVENT_CONNECT_RETRIED) {
            w->dropped_at = 0;
        }
    }
    if (w->dropped_at == 0 || now_s() - w->dropped_at < RECONNECT_GRACE_S) return;
    w->dropped_at = 0;
    zmq_disconnect(sock, endpoint); /* its session is gone; this clears the endpoint */
    if (zmq_connect(sock, endpoint) != 0) return;
    w->reconnects++;
    if (w->reconnects == 1 || w->reconnects == 10 || w->reconnects == 100 || w->reconnects % 1000 == 0) /* rate-limited */
        fprintf(stderr,
                "perception_sub: ZeroMQ dropped the connection to %s for a protocol error and would not reconnect; most likely "
                "the publisher sent a frame over %" PRId64 " bytes, more than any valid message of masks up to %" PRIu64
                " pixels holds (ZMQ_MAXMSGSIZE; --max-mask-pixels raises it); reconnected (%ld so far)\n",
                endpoint, max_msg, max_pixels, w->reconnects);
}

static void usage(int code) {
    fprintf(code ? stderr : stdout,
            "usage: perception_sub [--endpoint E] [--namespace NS | --topic T ...] [--count N] [--duration S]\n"
            "                      [--idle S] [--dump FILE] [--max-mask-pixels N] [--max-queue-mb MB] [--max-topics N]\n"
            "  --endpoint E         node endpoint (default tcp://127.0.0.1:5556)\n"
            "  --namespace NS       subscribe to NS/ (default perception/front)\n"
            "  --topic T            subscribe to topic T exactly (repeatable; instead of --namespace); a mask\n"
            "                       topic NS/M is also taken out of atomic frames on NS/frame\n"
            "  --count N            stop after N masks\n"
            "  --duration S         stop after S seconds\n"
            "  --idle S             stop once nothing has arrived for S seconds (from the start until a message)\n"
            "  --dump FILE          write every decoded mask's bytes to FILE (lines give dump_offset)\n"
            "  --max-mask-pixels N  largest mask accepted, 1..268435456 (default 16777216 = 4096 x 4096)\n"
            "  --max-queue-mb MB    MiB of received messages ZeroMQ may queue before the client takes them, 1..65536\n"
            "                       (default 256): max(1, MB MiB / frame limit) messages, the frame limit being\n"
            "                       max(5 x --max-mask-pixels, 1 MiB)\n"
            "  --max-topics N       distinct topics kept track of, 1..65536 (default 256; NS/info counts from the\n"
            "                       start): messages on further topics are skipped and counted, with one line\n");
    exit(code);
}

static double number_arg(const char *flag, const char *text, double lo) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || *end || !isfinite(v) || v < lo) {
        fprintf(stderr, "perception_sub: error: %s takes a number >= %g, got '%s'\n", flag, lo, text);
        exit(2);
    }
    return v;
}

/* A whole number in lo..hi written in decimal digits, with an optional sign, as listen's flags take
 * it (1e3, 0x10 and 10.0 are refused); hi at most 2^53, so the double is exact and the cast defined. */
static double whole_arg(const char *flag, const char *text, double lo, double hi) {
    const char *digits = text + (text[0] == '+' || text[0] == '-');
    int decimal = digits[0] != '\0';
    for (const char *c = digits; *c; c++) decimal = decimal && *c >= '0' && *c <= '9';
    char *end;
    errno = 0;
    double v = decimal ? strtod(text, &end) : NAN;
    if (!decimal || errno || *end || !(v >= lo && v <= hi) || v != floor(v)) {
        fprintf(stderr, "perception_sub: error: %s takes a whole number in %.0f..%.0f, got '%s'\n", flag, lo, hi, text);
        exit(2);
    }
    return v;
}

/* An endpoint this subscriber could never receive on, refused at start with one line (exit 2), as
 * `perception listen` refuses it (perception/endpoints.py check_endpoint, connect mode): inproc://
 * reaches only sockets of this process's own ZeroMQ context, and `*` (any interface, any free port
 * or ipc path) is for a node's bind, which ZeroMQ refuses to connect to. */
static void check_endpoint(const char *endpoint) {
    if (!strncmp(endpoint, "inproc://", 9)) {
        fprintf(stderr, "perception_sub: error: endpoint '%s': inproc:// reaches only sockets of one ZeroMQ context in one "
                        "process; use tcp://HOST:PORT (e.g. tcp://127.0.0.1:5556) or ipc://PATH\n", endpoint);
        exit(2);
    }
    if (!strcmp(endpoint, "ipc://*")) {
        fprintf(stderr, "perception_sub: error: cannot connect to %s: ipc://* is for a node's bind only (any free path); "
                        "connect to the ipc:// path the node logged at start\n", endpoint);
        exit(2);
    }
    /* tcp://HOST:PORT, split at the last ':' (an IPv6 host is in brackets); any other form is left
     * to ZeroMQ's own error at connect. */
    const char *colon = strrchr(endpoint, ':');
    if (strncmp(endpoint, "tcp://", 6) || colon == NULL || colon < endpoint + 6) return;
    char host[256], port[16];
    size_t host_len = (size_t)(colon - (endpoint + 6)), port_len = strlen(colon + 1);
    if (host_len == 0 || host_len >= sizeof host || port_len == 0 || port_len >= sizeof port) return;
    memcpy(host, endpoint + 6, host_len);
    host[host_len] = '\0';
    memcpy(port, colon + 1, port_len + 1);
    int any_host = !strcmp(host, "*"), any_port = !strcmp(port, "*");
    if (any_host && any_port)
        fprintf(stderr, "perception_sub: error: cannot connect to %s: host * (every interface) and port * (any free port) "
                        "are for a node's bind only; connect to the node's address and the port it logged at start, e.g. "
                        "tcp://127.0.0.1:5556\n", endpoint);
    else if (any_host)
        fprintf(stderr, "perception_sub: error: cannot connect to %s: host * (every interface) is for a node's bind only; "
                        "connect to the node's address: tcp://127.0.0.1:%s on this machine, or the IP address or name of "
                        "the node's machine\n", endpoint, port);
    else if (any_port)
        fprintf(stderr, "perception_sub: error: cannot connect to %s: port * (any free port) is for a node's bind only; "
                        "connect to the port the node logged at start ('publishing ... on tcp://%s:PORT'), e.g. "
                        "tcp://%s:5556\n", endpoint, host, host);
    else
        return;
    exit(2);
}

static const char *name_arg(const char *flag, const char *text) {
    if (text[0] == '\0') {
        fprintf(stderr, "perception_sub: error: %s takes a non-empty name\n", flag);
        exit(2);
    }
    /* A ROS 2 name (/perception/front) subscribes to nothing a node sends: refused with the line
     * perception listen, record and view give (perception/options.py leading_slash_error). */
    char fixed[4 * MAX_TOPIC_BYTES];
    size_t n = 0;
    for (const char *c = text; *c && n + 2 < sizeof fixed; c++)
        if (*c != '/' || (n > 0 && fixed[n - 1] != '/')) fixed[n++] = *c;
    while (n > 0 && fixed[n - 1] == '/') n--;
    fixed[n] = '\0';
    if (text[0] == '/' && n > 0) {
        fprintf(stderr, "perception_sub: error: %s '%s' starts with '/': wire topics have no leading '/' (only the ROS 2 "
                        "names of a recording's channels have one), so it would receive nothing from a node; drop the "
                        "leading '/': '%s'\n", flag, text, fixed);
        exit(2);
    }
    return text;
}

int main(int argc, char **argv) {
    options_t o = {"tcp://127.0.0.1:5556", NULL, {0}, 0, {0}, 0, 0, 0, 0, 4096ull * 4096ull, NULL};
    const char *dump_path = NULL;
    int64_t max_queue_mb = DEFAULT_MAX_QUEUE_MB;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) usage(0);
        if (i + 1 >= argc) usage(2);
        const char *v = argv[++i];
        if (!strcmp(a, "--endpoint")) o.endpoint = v;
        else if (!strcmp(a, "--namespace")) o.namespace_ = name_arg(a, v);
        else if (!strcmp(a, "--topic") && o.n_topics < 64) o.topics[o.n_topics++] = name_arg(a, v);
        else if (!strcmp(a, "--count")) o.count = (int64_t)whole_arg(a, v, 0, EXACT_DOUBLE_INT);
        else if (!strcmp(a, "--duration")) o.duration_s = number_arg(a, v, 0);
        else if (!strcmp(a, "--idle")) o.idle_s = number_arg(a, v, 0);
        else if (!strcmp(a, "--dump")) dump_path = v;
        else if (!strcmp(a, "--max-mask-pixels")) o.max_pixels = (uint64_t)whole_arg(a, v, 1, MAX_MASK_PIXELS_FLAG);
        else if (!strcmp(a, "--max-queue-mb")) max_queue_mb = (int64_t)whole_arg(a, v, 1, MAX_QUEUE_MB);
        else if (!strcmp(a, "--max-topics")) max_topics = (int64_t)whole_arg(a, v, 1, MAX_TOPICS);
        else usage(2);
    }
    check_endpoint(o.endpoint);
    if (dump_path != NULL && (o.dump = fopen(dump_path, "wb")) == NULL) {
        fprintf(stderr, "perception_sub: error: cannot open %s for writing (%s)\n", dump_path, strerror(errno));
        return 2;
    }
    if (o.dump == NULL) dump_offset = UINT64_MAX;
    if (track_init() < 0) {
        fprintf(stderr, "perception_sub: error: out of memory\n");
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_SUB);
    int linger = 0, ivl = 100, ivl_max = 250;
    /* The largest frame ZeroMQ takes off the wire, the largest of a valid message: an rle payload of
     * --max-mask-pixels at worst (one 5-byte run a pixel; none, bitpack and png are smaller), or a
     * JSON document. ZeroMQ cuts off the sender of a larger one (watch_connection connects again). */
    int64_t max_msg = (int64_t)(RLE_RUN_BYTES * o.max_pixels);
    if (max_msg < MAX_JSON_PAYLOAD_BYTES) max_msg = MAX_JSON_PAYLOAD_BYTES;
    /* ZeroMQ counts its receive queue in whole messages (a multipart message is one), whatever their
     * size: as many as frames of max_msg fit in --max-queue-mb MiB, at least one. A full queue makes
     * ZeroMQ stop reading the connection (TCP pushes back to the publisher); it drops nothing. */
    int64_t hwm64 = (max_queue_mb << 20) / max_msg;
    int rcvhwm = hwm64 < 1 ? 1 : (int)hwm64;
    zmq_setsockopt(sock, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm);
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg);
    if (strstr(o.endpoint, "://[") != NULL) { /* tcp://[::1]:5556: IPv6 needs ZeroMQ's option */
        int ipv6 = 1;
        zmq_setsockopt(sock, ZMQ_IPV6, &ipv6, sizeof ipv6);
    }
    if (o.n_topics == 0) {
        /* Subscriptions match byte prefixes: the trailing / keeps perception/front2 out. */
        char prefix[MAX_TOPIC_BYTES + 2];
        const char *ns = o.namespace_ ? o.namespace_ : "perception/front";
        snprintf(prefix, sizeof prefix, "%s%s", ns, ends_with(ns, "/") ? "" : "/");
        zmq_setsockopt(sock, ZMQ_SUBSCRIBE, prefix, strlen(prefix));
        /* The node's own info topic is tracked from the start: topics that come first take no slot of it. */
        char info_topic[MAX_TOPIC_BYTES + 8];
        snprintf(info_topic, sizeof info_topic, "%sinfo", prefix);
        track(info_topic);
    }
    for (int i = 0; i < o.n_topics; i++) {
        zmq_setsockopt(sock, ZMQ_SUBSCRIBE, o.topics[i], strlen(o.topics[i]));
        /* An --atomic-frames node sends mask topic <ns>/<mask> only inside <ns>/frame: subscribe to
         * that too (handle_frame keeps the asked-for masks of each frame). */
        char found[2][MAX_TOPIC_BYTES + 8];
        for (int k = 0, n_found = frame_topics_of(o.topics[i], found); k < n_found; k++) {
            if (topic_in(o.topics, o.n_topics, found[k], strlen(found[k])) ||
                topic_in((const char *const *)o.frame_topics, o.n_frame_topics, found[k], strlen(found[k])))
                continue;
            if ((o.frame_topics[o.n_frame_topics] = strdup(found[k])) == NULL) {
                fprintf(stderr, "perception_sub: error: out of memory\n");
                return 2;
            }
            zmq_setsockopt(sock, ZMQ_SUBSCRIBE, found[k], strlen(found[k]));
            o.n_frame_topics++;
        }
    }
    /* The monitor first, so that it sees the first connection's handshake. Without one (it cannot
     * fail short of running out of memory) the client still works, as before. */
    watch_t watch = {NULL, 0, 0, 0};
    if (zmq_socket_monitor(sock, "inproc://perception_sub.monitor", MONITOR_EVENTS) == 0 &&
        (watch.monitor = zmq_socket(ctx, ZMQ_PAIR)) != NULL) {
        zmq_setsockopt(watch.monitor, ZMQ_LINGER, &linger, sizeof linger);
        if (zmq_connect(watch.monitor, "inproc://perception_sub.monitor") != 0) {
            zmq_close(watch.monitor);
            watch.monitor = NULL;
        }
    }
    if (zmq_connect(sock, o.endpoint) != 0) {
        fprintf(stderr, "perception_sub: error: cannot connect to %s (%s)\n", o.endpoint, zmq_strerror(zmq_errno()));
        return 2;
    }

    zmq_msg_t parts[MAX_PARTS];
    double start = now_s(), last = start;
    while (!stop_requested) {
        double t = now_s();
        if ((o.count && n_masks >= o.count) || (o.duration_s && t - start >= o.duration_s)) break;
        if (watch.monitor != NULL) watch_connection(&watch, sock, o.endpoint, max_msg, o.max_pixels);
        /* --idle is due (only messages not asked for came since the last one taken: a stream of them
         * leaves no 100 ms poll empty): it ends the client unless a message is waiting already. */
        zmq_pollitem_t waiting = {sock, 0, ZMQ_POLLIN, 0};
        if (o.idle_s && t - last >= o.idle_s && (zmq_poll(&waiting, 1, 0) <= 0 || !(waiting.revents & ZMQ_POLLIN))) break;
        zmq_pollitem_t items[2] = {{sock, 0, ZMQ_POLLIN, 0}, {watch.monitor, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, watch.monitor != NULL ? 2 : 1, 100) <= 0 || !(items[0].revents & ZMQ_POLLIN)) {
            /* --idle counts only while nothing is waiting: a client that was descheduled does not
             * stop with messages still queued. */
            if (o.idle_s && now_s() - last >= o.idle_s) break;
            continue;
        }
        /* One multipart message; more parts than any valid message has are drained and dropped. */
        int n = 0, more = 1, too_many = 0;
        while (more) {
            if (n < MAX_PARTS) {
                zmq_msg_init(&parts[n]);
                if (zmq_msg_recv(&parts[n], sock, 0) < 0) {
                    zmq_msg_close(&parts[n]);
                    break;
                }
                more = zmq_msg_more(&parts[n]);
                n++;
            } else {
                zmq_msg_t extra;
                zmq_msg_init(&extra);
                more = zmq_msg_recv(&extra, sock, 0) >= 0 && zmq_msg_more(&extra);
                zmq_msg_close(&extra);
                too_many = 1;
            }
        }
        /* Subscriptions match byte prefixes: with --topic, a longer topic that starts with an
         * asked-for one (perception/front/lane2 for perception/front/lane) is dropped unread. Only
         * messages taken count as arrivals for --idle: a typo that is a prefix of real topics
         * (perception/front/lan) must not keep the client waiting for ever. */
        long unasked_before = n_unasked;
        int asked = n == 0 || o.n_topics == 0 ||
                    topic_in(o.topics, o.n_topics, zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0])) ||
                    topic_in((const char *const *)o.frame_topics, o.n_frame_topics, zmq_msg_data(&parts[0]),
                             zmq_msg_size(&parts[0]));
        if (!asked) {
            n_unasked++;
            note_unasked_topic(zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]));
        } else if (too_many) {
            fail("message has more than %d parts", MAX_PARTS);
            skip(NULL);
        } else if (n > 0) {
            handle_message(parts, n, &o);
        }
        if (n_unasked == unasked_before) last = now_s();
        for (int i = 0; i < n; i++) zmq_msg_close(&parts[i]);
    }
    int status = 0;
    if (n_masks + n_json + n_skipped + n_over_topics == 0 && n_unasked && n_unasked_topics) {
        /* Only messages on longer topics than a --topic came (a typo, a namespace given as a topic):
         * said so, naming them and what was probably meant (exit 4, as perception listen). */
        /* The first topic kept that starts with one asked for (else the first: an atomic frame's). */
        const char *first = unasked_topics[0], *meant = NULL;
        for (int k = n_unasked_topics - 1; k >= 0; k--)
            for (int i = 0; i < o.n_topics; i++)
                if (!strncmp(unasked_topics[k], o.topics[i], strlen(o.topics[i]))) first = unasked_topics[k];
        for (int i = 0; i < o.n_topics && meant == NULL; i++) {
            size_t len = strlen(o.topics[i]);
            while (len > 0 && o.topics[i][len - 1] == '/') len--;
            if (!strncmp(first, o.topics[i], len) && first[len] == '/') meant = o.topics[i];
        }
        fprintf(stderr, "perception_sub: error: no messages on the topic%s ", o.n_topics > 1 ? "s" : "");
        for (int i = 0; i < o.n_topics; i++) fprintf(stderr, "%s%s", i ? ", " : "", o.topics[i]);
        fprintf(stderr, " from %s in %.1f s, but %ld on other topics (", o.endpoint, now_s() - start, n_unasked);
        for (int i = 0; i < n_unasked_topics; i++) fprintf(stderr, "%s%s", i ? ", " : "", unasked_topics[i]);
        fprintf(stderr, "%s): --topic takes whole topic names, --namespace a namespace; did you mean ",
                unasked_more ? ", ..." : "");
        if (meant != NULL) {
            size_t len = strlen(meant);
            while (len > 0 && meant[len - 1] == '/') len--;
            fprintf(stderr, "--namespace %.*s?\n", (int)len, meant);
        } else {
            fprintf(stderr, "--topic %s?\n", first);
        }
        status = 4;
    } else if (n_masks + n_json + n_skipped + n_over_topics == 0) {
        /* Nothing at all arrived: the stream is not there (exit 4, as perception listen). */
        fprintf(stderr, "perception_sub: error: no messages received from %s in %.1f s; is the node running? check --endpoint / %s\n",
                o.endpoint, now_s() - start, o.n_topics ? "--topic" : "--namespace");
        status = 4;
    } else if (n_masks + n_json == 0) {
        /* Messages came, none readable: a bad input (exit 2), as perception listen and record. */
        char head[400];
        snprintf(head, sizeof head, "perception_sub: error: nothing read from %s in %.1f s: all %ld messages received were skipped",
                 o.endpoint, now_s() - start, n_skipped + n_over_topics);
        if (n_upgrade)
            fprintf(stderr, "%s, %ld from another wire version or a newer publisher (%s)\n", head, n_upgrade, last_upgrade_why);
        else if (n_skipped)
            fprintf(stderr, "%s as malformed (the last: %s); check that --endpoint is a perception node's, of the same "
                            "perception version\n", head, last_why);
        else
            fprintf(stderr, "%s: on topics past the first %" PRId64 "; raise --max-topics or subscribe to fewer (--topic)\n",
                    head, max_topics);
        status = 2;
    } else {
        char over[96] = "", reconnects[64] = "";
        if (n_over_topics)
            snprintf(over, sizeof over, ", %ld on topics past the first %" PRId64 " (--max-topics)", n_over_topics, max_topics);
        if (watch.reconnects) snprintf(reconnects, sizeof reconnects, ", %ld reconnects", watch.reconnects);
        fprintf(stderr, "perception_sub: %ld masks, %ld JSON documents, %ld skipped%s%s\n", n_masks, n_json, n_skipped, over,
                reconnects);
    }
    if (o.dump) fclose(o.dump);
    for (int i = 0; i < o.n_frame_topics; i++) free(o.frame_topics[i]);
    for (int i = 0; i < n_infos; i++)
        for (int k = 0; k < 256; k++) free(infos[i].names[k]);
    free(infos);
    for (size_t i = 0; i < cap_tracked; i++) free(tracked[i]);
    free(tracked);
    if (watch.monitor != NULL) {
        zmq_socket_monitor(sock, NULL, 0);
        zmq_close(watch.monitor);
    }
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return status;
}

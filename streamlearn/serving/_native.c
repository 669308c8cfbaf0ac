/* streamlearn.serving._native: score the plain one-event body in one call.
 *
 * A `Shares` object belongs to one served version of a one-output linear model
 * without scaling (a version never changes). It holds, in a hash table keyed by
 * bytes, each feature's share of the score that the Python path has worked out:
 * a name's share of a number (booleans count as 0 and 1), and a (name, string)
 * pair's share. `score(body)` reads the raw request body, which must be exactly
 * `{"features": {...}}` with numbers, plain strings (no escapes), true/false and
 * lists of plain strings as values, and returns the raw score
 * `intercept + sum of shares * values`, summed in the order and the way the
 * Python path sums (`sum(map(mul, ...))`, then the intercept), from numbers
 * parsed to the nearest double as `orjson` parses them.
 *
 * `score_event(body)` scores a body that may also hold the event's `id`, `key`
 * and `ts`, and a `label` and `weight` it checks and drops, before or after
 * `features` (see `meta_member`), and returns
 * `(score, known, id, key, ts)`: `known` is how many of the event's features
 * have a non-zero share (a list: any of its strings), that is a non-zero weight
 * in the model, the features the model knows; the three fields are None when
 * absent.
 *
 * A table made with `k > 0` serves a factorization machine: each share comes
 * with the k signed factors of its slot (`v[slot] * sign`), and the score adds
 * the pairwise term 1/2 sum_f ((sum_j v_jf x_j)^2 - sum_j v_jf^2 x_j^2) over the
 * event's entries j. A feature is then known when its weight or any of its
 * factors is non-zero. The linear scan is a separate specialisation of the same
 * code (`scan`, `scan_fm`): a linear table pays one test per body for it.
 *
 * It returns None for anything else (escapes, nested values, null, duplicate
 * names, bad JSON, a non-finite score...), and False when the body is plain but
 * a name or a string is not in the table yet: Python then answers the request
 * as before and, on False, adds the event's shares (`add_number`, `add_string`,
 * `add_name`) so that the next such event is answered here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_native_codes.h"
#include "_native_pow5.h"

/* -- decimal to double: exact cases, then a 128-bit product by 5**q, else dtoa -- */

static const double EXACT_POW10[] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The correctly rounded double nearest to w * 10**q (w != 0, w < 2**64), or -1.0
 * when this cannot decide cheaply (the caller then uses the exact dtoa). */
static double
pow5_product(uint64_t w, int64_t q)
{
    if (q < POW5_MIN_Q) {
        return 0.0;
    }
    if (q > POW5_MAX_Q) {
        return HUGE_VAL;
    }
    int lz = __builtin_clzll(w);
    w <<= lz;
    const uint64_t *p5 = POW5_128 + 2 * (q - POW5_MIN_Q);
    __uint128_t first = (__uint128_t)w * p5[0];
    uint64_t high = (uint64_t)(first >> 64);
    uint64_t low = (uint64_t)first;
    const uint64_t mask = UINT64_MAX >> 55; /* 52 mantissa bits + 3 */
    if ((high & mask) == mask) {
        __uint128_t second = (__uint128_t)w * p5[1];
        uint64_t second_high = (uint64_t)(second >> 64);
        low += second_high;
        if (second_high > low) {
            high++;
        }
        if (low == UINT64_MAX && (q < -27 || q > 55)) {
            return -1.0; /* too close to call with 128 bits */
        }
    }
    int upperbit = (int)(high >> 63);
    int shift = upperbit + 64 - 52 - 3;
    uint64_t mantissa = high >> shift;
    int32_t power2 = (int32_t)(((152170 + 65536) * q) >> 16) + 63 + upperbit - lz + 1023;
    if (power2 <= 0) { /* subnormal */
        if (-power2 + 1 >= 64) {
            return 0.0;
        }
        mantissa >>= -power2 + 1;
        mantissa += mantissa & 1;
        mantissa >>= 1;
        power2 = mantissa < ((uint64_t)1 << 52) ? 0 : 1;
    }
    else {
        if (low <= 1 && q >= -4 && q <= 23 && (mantissa & 3) == 1 &&
            (mantissa << shift) == high) {
            mantissa &= ~(uint64_t)1; /* halfway: round to even, down */
        }
        mantissa += mantissa & 1;
        mantissa >>= 1;
        if (mantissa >= ((uint64_t)2 << 52)) {
            mantissa = (uint64_t)1 << 52;
            power2++;
        }
        mantissa &= ~((uint64_t)1 << 52);
        if (power2 >= 0x7FF) {
            return HUGE_VAL;
        }
    }
    uint64_t bits = mantissa | ((uint64_t)power2 << 52);
    double out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

/* Parse a JSON number at *pp (end: end of buffer). Sets *out and *is_int, moves
 * *pp past it; 0 on success, -1 when the text is not a JSON number. */
static int
parse_number(const char **pp, const char *end, double *out, int *is_int)
{
    const char *p = *pp;
    const char *start = p;
    int negative = 0;
    if (p < end && *p == '-') {
        negative = 1;
        p++;
    }
    if (p >= end || (unsigned)(*p - '0') > 9) {
        return -1;
    }
    uint64_t w = 0;
    int digits = 0;    /* significant digits kept in w */
    int64_t q = 0;     /* decimal exponent of w */
    int dropped = 0;   /* digits beyond 19, or an exponent of over 6 digits: the exact dtoa */
    if (*p == '0') {
        p++;
        if (p < end && (unsigned)(*p - '0') <= 9) {
            return -1; /* a leading zero */
        }
    }
    else {
        while (p < end && (unsigned)(*p - '0') <= 9) {
            if (digits < 19) {
                w = w * 10 + (uint64_t)(*p - '0');
                if (w) {
                    digits++;
                }
            }
            else {
                q++;
                dropped = 1;
            }
            p++;
        }
    }
    *is_int = 1;
    if (p < end && *p == '.') {
        *is_int = 0;
        p++;
        if (p >= end || (unsigned)(*p - '0') > 9) {
            return -1;
        }
        while (p < end && (unsigned)(*p - '0') <= 9) {
            if (digits < 19) {
                w = w * 10 + (uint64_t)(*p - '0');
                q--;
                if (w) {
                    digits++;
                }
            }
            else {
                dropped = 1;
            }
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        *is_int = 0;
        p++;
        int exp_negative = 0;
        if (p < end && (*p == '+' || *p == '-')) {
            exp_negative = *p == '-';
            p++;
        }
        if (p >= end || (unsigned)(*p - '0') > 9) {
            return -1;
        }
        int64_t e = 0;
        while (p < end && (unsigned)(*p - '0') <= 9) {
            if (e < 100000) {
                e = e * 10 + (*p - '0');
            }
            else {
                /* not kept: the leading zeros of a fraction (q) can offset any
                 * exponent, "0.<999999 zeros>1e1000000" is 1.0 */
                dropped = 1;
            }
            p++;
        }
        q += exp_negative ? -e : e;
    }
    *pp = p;
    double value;
    if (w == 0) {
        value = 0.0;
    }
    else if (dropped) {
        value = -1.0;
    }
    else if (q >= -22 && q <= 22 && w <= ((uint64_t)1 << 53)) {
        value = q < 0 ? (double)w / EXACT_POW10[-q] : (double)w * EXACT_POW10[q];
    }
    else {
        value = pow5_product(w, q);
    }
    if (value < 0.0) { /* more than 19 digits, or undecided: the exact dtoa */
        char local[128];
        size_t n = (size_t)(p - start);
        char *text = n < sizeof local ? local : PyMem_Malloc(n + 1);
        if (text == NULL) {
            return -1;
        }
        memcpy(text, start, n);
        text[n] = '\0';
        value = PyOS_string_to_double(text, NULL, NULL);
        if (text != local) {
            PyMem_Free(text);
        }
        if (value == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return -1;
        }
        *out = value;
        return 0;
    }
    /* an integer zero is Python's int 0, whose product has the share's sign */
    *out = negative && !(*is_int && value == 0.0) ? -value : value;
    return 0;
}

/* -- the table ----------------------------------------------------------------- */

#define KIND_NAME 1  /* key: a name; share: of a number, when has_number */
#define KIND_VALUE 2 /* key: name \0 value; share: of that string */

typedef struct {
    uint64_t hash;
    char *key; /* NULL: free slot */
    Py_ssize_t len;
    double share;
    uint64_t stamp; /* the call that last saw this name: duplicate names */
    double *vec;    /* a factorization machine's k signed factors of the slot, or NULL */
    unsigned char kind;
    unsigned char has_number;
    unsigned char known; /* a factorization machine's: share or any factor non-zero */
} Entry;

typedef struct {
    PyObject_HEAD
    Entry *entries;
    Py_ssize_t capacity; /* a power of two */
    Py_ssize_t used;
    Py_ssize_t limit; /* most entries before starting afresh */
    uint64_t stamp;
    double intercept;
    unsigned long long hits;
    int k; /* factors per slot of a factorization machine; 0 for a linear model */
} Shares;

/* Keys are hashed with Python's own keyed hash of bytes (SipHash, seeded per
 * process), so that names chosen to collide cannot slow the table down any more
 * than they can slow a dict. */
static inline uint64_t
hash_bytes(const char *s, Py_ssize_t n)
{
#if PY_VERSION_HEX >= 0x030E0000
    return (uint64_t)Py_HashBuffer(s, n);
#else
    return (uint64_t)_Py_HashBytes(s, n);
#endif
}

/* The hash of the key name \0 value, from the hashes of its two parts. */
static inline uint64_t
pair_hash(uint64_t name_hash, const char *value, Py_ssize_t n)
{
    return (name_hash * 0x9E3779B97F4A7C15ULL) ^ hash_bytes(value, n);
}

static inline uint64_t
mix(uint64_t h)
{
    h ^= h >> 32;
    h *= 0x9E3779B97F4A7C15ULL;
    return h ^ (h >> 29);
}

static Entry *
find(Shares *self, uint64_t hash, const char *key, Py_ssize_t len, int kind)
{
    Py_ssize_t mask = self->capacity - 1;
    Py_ssize_t i = (Py_ssize_t)(mix(hash) & (uint64_t)mask);
    for (;;) {
        Entry *e = &self->entries[i];
        if (e->key == NULL) {
            return e;
        }
        if (e->hash == hash && e->len == len && e->kind == kind &&
            memcmp(e->key, key, (size_t)len) == 0) {
            return e;
        }
        i = (i + 1) & mask;
    }
}

/* The entry of the key name \0 value, compared piecewise so that the key is never
 * built; NULL when the table lacks it. */
static inline Entry *
find_value(Shares *self, uint64_t hash, const char *name, Py_ssize_t name_len, const char *s,
           Py_ssize_t n)
{
    Py_ssize_t mask = self->capacity - 1;
    Py_ssize_t i = (Py_ssize_t)(mix(hash) & (uint64_t)mask);
    for (;;) {
        Entry *v = &self->entries[i];
        if (v->key == NULL) {
            return NULL;
        }
        if (v->hash == hash && v->len == name_len + 1 + n && v->kind == KIND_VALUE &&
            memcmp(v->key, name, (size_t)name_len) == 0 &&
            memcmp(v->key + name_len + 1, s, (size_t)n) == 0) {
            return v;
        }
        i = (i + 1) & mask;
    }
}

static void
free_entries(Entry *entries, Py_ssize_t capacity)
{
    for (Py_ssize_t i = 0; i < capacity; i++) {
        PyMem_Free(entries[i].key);
        PyMem_Free(entries[i].vec);
    }
    PyMem_Free(entries);
}

static int
reset(Shares *self, Py_ssize_t capacity)
{
    Entry *entries = PyMem_Calloc((size_t)capacity, sizeof(Entry));
    if (entries == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (self->entries != NULL) {
        free_entries(self->entries, self->capacity);
    }
    self->entries = entries;
    self->capacity = capacity;
    self->used = 0;
    return 0;
}

static int
grow(Shares *self)
{
    Py_ssize_t capacity = self->capacity * 2;
    Entry *entries = PyMem_Calloc((size_t)capacity, sizeof(Entry));
    if (entries == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Entry *old = self->entries;
    Py_ssize_t old_capacity = self->capacity;
    self->entries = entries;
    self->capacity = capacity;
    for (Py_ssize_t i = 0; i < old_capacity; i++) {
        if (old[i].key != NULL) {
            *find(self, old[i].hash, old[i].key, old[i].len, old[i].kind) = old[i];
        }
    }
    PyMem_Free(old);
    return 0;
}

/* The entry of key (created empty when absent), or NULL with an exception. */
static Entry *
insert(Shares *self, const char *key, Py_ssize_t len, int kind)
{
    if (self->used >= self->limit) {
        if (reset(self, 64) < 0) {
            return NULL;
        }
    }
    if (2 * (self->used + 1) > self->capacity && grow(self) < 0) {
        return NULL;
    }
    uint64_t hash;
    if (kind == KIND_VALUE) { /* as score() computes it */
        const char *zero = memchr(key, '\0', (size_t)len);
        Py_ssize_t n = zero - key;
        hash = pair_hash(hash_bytes(key, n), zero + 1, len - n - 1);
    }
    else {
        hash = hash_bytes(key, len);
    }
    Entry *e = find(self, hash, key, len, kind);
    if (e->key == NULL) {
        e->key = PyMem_Malloc((size_t)len + 1);
        if (e->key == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        memcpy(e->key, key, (size_t)len);
        e->key[len] = '\0';
        e->hash = hash;
        e->len = len;
        e->kind = kind;
        e->has_number = 0;
        e->share = 0.0;
        e->stamp = 0;
        e->vec = NULL;
        e->known = 0;
        self->used++;
    }
    return e;
}

/* -- scanning ------------------------------------------------------------------ */

#define WS(c) ((c) == ' ' || (c) == '\n' || (c) == '\r' || (c) == '\t')

static inline const char *
skip_ws(const char *p, const char *end)
{
    while (p < end && WS(*p)) {
        p++;
    }
    return p;
}

/* A plain string at p (on its opening quote): sets *s, *n and returns the
 * position after the closing quote; NULL for an escape, a control character or
 * no closing quote. */
static inline const char *
scan_string(const char *p, const char *end, const char **s, Py_ssize_t *n)
{
    const char *start = ++p;
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            *s = start;
            *n = p - start;
            return p + 1;
        }
        if (c == '\\' || c < 0x20) {
            return NULL;
        }
        p++;
    }
    return NULL;
}

/* An event's field besides `features` that `score_event` takes: `id` and `key` (the
 * contract's "name": a string or an integer) and `ts` ("time": an integer >= 0), each
 * at most once. A string is plain (no escape); an integer has at most 18 digits, so
 * that it is one orjson reads (64 bits); anything else leaves the body to Python.
 * Also, each at most once and then dropped: a `label` (ignored by serving: a plain
 * string, true, false, null, or a number of at most 18 digits without exponent) and
 * a `weight` (an integer or a decimal of at most 18 digits, >= 0 as the contract's
 * rule wants), so that a training event sent as it is stays on this path. */
typedef struct {
    const char *s; /* a string's text, or an integer's */
    Py_ssize_t n;
    char kind; /* 0: absent, 's': a string, 'i': an integer, 'f': a decimal (label,
                  weight), 'w': true, false or null (label) */
} MetaValue;

typedef struct {
    MetaValue id, key, ts, label, weight;
} Meta;

enum { META_NAME, META_TIME, META_LABEL, META_WEIGHT };

#define MAX_META_DIGITS 18

/* The value of a meta field of kind `mode` at p into *v; the position after it, or
 * NULL. */
static inline const char *
meta_value(const char *p, const char *end, int mode, MetaValue *v)
{
    if (p >= end) {
        return NULL;
    }
    if (mode == META_LABEL) {
        static const char *const words[3] = {"true", "false", "null"};
        for (int w = 0; w < 3; w++) {
            Py_ssize_t n = (Py_ssize_t)strlen(words[w]);
            if (end - p >= n && memcmp(p, words[w], (size_t)n) == 0) {
                v->kind = 'w';
                return p + n;
            }
        }
    }
    if (*p == '"') {
        if (mode == META_TIME || mode == META_WEIGHT) {
            return NULL;
        }
        const char *s;
        Py_ssize_t n;
        if ((p = scan_string(p, end, &s, &n)) == NULL) {
            return NULL;
        }
        v->s = s;
        v->n = n;
        v->kind = 's';
        return p;
    }
    const char *start = p;
    if (*p == '-') {
        if (mode == META_TIME || mode == META_WEIGHT) {
            return NULL;
        }
        p++;
    }
    const char *digits = p;
    if (p < end && *p == '0') {
        p++;
    }
    else if (p < end && *p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }
    else {
        return NULL;
    }
    Py_ssize_t n_digits = p - digits;
    if ((mode == META_LABEL || mode == META_WEIGHT) && p < end && *p == '.') {
        const char *fraction = ++p;
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
        if (p == fraction) {
            return NULL; /* `1.`: not JSON */
        }
        n_digits += p - fraction;
        v->kind = 'f';
    }
    else {
        v->kind = 'i';
    }
    if (p < end && (*p == '.' || *p == 'e' || *p == 'E' || (*p >= '0' && *p <= '9'))) {
        return NULL; /* a fraction, an exponent, a leading zero */
    }
    if (n_digits > MAX_META_DIGITS) {
        return NULL;
    }
    v->s = start;
    v->n = p - start;
    return p;
}

/* One member `"id" | "key" | "ts" | "label" | "weight": value` at p (on its name's
 * quote) into *meta; the position after its value, or NULL (another name, a field
 * twice, a value of another kind). */
static inline const char *
meta_member(const char *p, const char *end, Meta *meta)
{
    const char *name;
    Py_ssize_t n;
    if ((p = scan_string(p, end, &name, &n)) == NULL) {
        return NULL;
    }
    MetaValue *v;
    int mode = META_NAME;
    if (n == 2 && memcmp(name, "id", 2) == 0) {
        v = &meta->id;
    }
    else if (n == 3 && memcmp(name, "key", 3) == 0) {
        v = &meta->key;
    }
    else if (n == 2 && memcmp(name, "ts", 2) == 0) {
        v = &meta->ts;
        mode = META_TIME;
    }
    else if (n == 5 && memcmp(name, "label", 5) == 0) {
        v = &meta->label;
        mode = META_LABEL;
    }
    else if (n == 6 && memcmp(name, "weight", 6) == 0) {
        v = &meta->weight;
        mode = META_WEIGHT;
    }
    else {
        return NULL;
    }
    if (v->kind) {
        return NULL; /* twice: orjson keeps the last, Python decides */
    }
    p = skip_ws(p, end);
    if (p >= end || *p != ':') {
        return NULL;
    }
    return meta_value(skip_ws(p + 1, end), end, mode, v);
}

#define NOT_PLAIN 0
#define MISSING 1
#define SCORED 2

/* Add a term to the running sum as Python's sum() of floats does. */
#if PY_VERSION_HEX >= 0x030C0000
/* 3.12+: the compensated sum of sum() */
#define SUM_ADD(x)                                  \
    do {                                            \
        double x_ = (x);                            \
        double t_ = z + x_;                         \
        if (fabs(z) >= fabs(x_)) {                  \
            c += (z - t_) + x_;                     \
        }                                           \
        else {                                      \
            c += (x_ - t_) + z;                     \
        }                                           \
        z = t_;                                     \
    } while (0)
#define SUM_END() \
    do { if (c != 0.0 && isfinite(c)) { z += c; } } while (0)
#else
#define SUM_ADD(x) (z += (x))
#define SUM_END() ((void)c)
#endif

/* A factorization machine's entry of value x: its factors into the sums S and Q. */
#define FM_ADD(entry, x)                                  \
    do {                                                  \
        if (fm) {                                         \
            const double *vv_ = (entry)->vec;             \
            double x__ = (x);                             \
            for (int f_ = 0; f_ < k; f_++) {              \
                double t_ = vv_[f_] * x__;                \
                S[f_] += t_;                              \
                Q[f_] += t_ * t_;                         \
            }                                             \
        }                                                 \
    } while (0)
/* Whether an entry counts as known: a non-zero share, or for a factorization
 * machine also any non-zero factor. */
#define KNOWN(entry) (fm ? (int)(entry)->known : (entry)->share != 0.0)

/* The scan of one body; S == NULL for a linear table (the calls below pass a
 * constant, so each gets its own specialised copy). */
static inline __attribute__((always_inline)) int
scan_impl(Shares *self, const char *p, const char *end, double *score, Py_ssize_t *known_out,
          double *S, double *Q, int k, int *why, Meta *meta)
{
    static const char FEATURES[] = "\"features\"";
    const int fm = S != NULL;
    const Py_ssize_t features_len = sizeof FEATURES - 1;
    double z = 0.0, c = 0.0;
    int missing = 0;
    Py_ssize_t known = 0; /* features with a non-zero share */
    Py_ssize_t count = 0; /* features, repeated names included: at most SL_MAX_FEATURES */
    uint64_t stamp = ++self->stamp;

    p = skip_ws(p, end);
    if (p >= end || *p != '{') {
        return NOT_PLAIN;
    }
    p = skip_ws(p + 1, end);
    /* with meta: the event's other fields before `features`, each followed by a comma */
    while (meta != NULL && p < end && *p == '"' &&
           (end - p < features_len || memcmp(p, FEATURES, (size_t)features_len) != 0)) {
        if ((p = meta_member(p, end, meta)) == NULL) {
            return NOT_PLAIN;
        }
        p = skip_ws(p, end);
        if (p >= end || *p != ',') {
            return NOT_PLAIN;
        }
        p = skip_ws(p + 1, end);
    }
    if (end - p < features_len || memcmp(p, FEATURES, (size_t)features_len) != 0) {
        return NOT_PLAIN;
    }
    p = skip_ws(p + features_len, end);
    if (p >= end || *p != ':') {
        return NOT_PLAIN;
    }
    p = skip_ws(p + 1, end);
    if (p >= end || *p != '{') {
        return NOT_PLAIN;
    }
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') {
        *why = SL_FEATURES_EMPTY;
        return NOT_PLAIN; /* no feature: the validating path answers */
    }
    for (;;) {
        const char *name;
        Py_ssize_t name_len;
        if (p >= end || *p != '"' || (p = scan_string(p, end, &name, &name_len)) == NULL) {
            return NOT_PLAIN;
        }
        if (name_len == 0) {
            *why = SL_FEATURES_EMPTY_NAME;
            return NOT_PLAIN; /* an empty name: refused by the validating path, as training does */
        }
        count++;
        uint64_t h = hash_bytes(name, name_len);
        p = skip_ws(p, end);
        if (p >= end || *p != ':') {
            return NOT_PLAIN;
        }
        p = skip_ws(p + 1, end);
        if (p >= end) {
            return NOT_PLAIN;
        }
        Entry *e = NULL;
        if (!missing) {
            e = find(self, h, name, name_len, KIND_NAME);
            if (e->key == NULL) {
                missing = 1;
            }
            else if (e->stamp == stamp) {
                return NOT_PLAIN; /* a name twice: the last value counts, in the first place */
            }
            else {
                e->stamp = stamp;
            }
        }
        char first = *p;
        if (first == '"') {
            const char *s;
            Py_ssize_t n;
            if ((p = scan_string(p, end, &s, &n)) == NULL) {
                return NOT_PLAIN;
            }
            if (!missing) {
                Entry *v = find_value(self, pair_hash(h, s, n), name, name_len, s, n);
                if (v == NULL) {
                    missing = 1;
                }
                else {
                    SUM_ADD(v->share);
                    FM_ADD(v, 1.0);
                    known += KNOWN(v);
                }
            }
        }
        else if (first == '[') {
            double total = 0.0;
            int any_known = 0;
            p = skip_ws(p + 1, end);
            if (p < end && *p == ']') {
                p++;
            }
            else {
                for (;;) {
                    const char *s;
                    Py_ssize_t n;
                    if (p >= end || *p != '"' || (p = scan_string(p, end, &s, &n)) == NULL) {
                        if (p != NULL && p < end && *p != '"' && *p != ']') {
                            *why = SL_FEATURES_BAD_LIST_ITEM; /* if the rest is JSON */
                        }
                        return NOT_PLAIN;
                    }
                    if (!missing) {
                        Entry *v = find_value(self, pair_hash(h, s, n), name, name_len, s, n);
                        if (v == NULL) {
                            missing = 1;
                        }
                        else {
                            total += v->share;
                            FM_ADD(v, 1.0);
                            any_known |= KNOWN(v);
                        }
                    }
                    p = skip_ws(p, end);
                    if (p < end && *p == ',') {
                        p = skip_ws(p + 1, end);
                        continue;
                    }
                    if (p < end && *p == ']') {
                        p++;
                        break;
                    }
                    return NOT_PLAIN;
                }
            }
            if (!missing) {
                SUM_ADD(total);
                known += any_known;
            }
        }
        else if (first == 't' || first == 'f') {
            int flag = first == 't';
            const char *word = flag ? "true" : "false";
            Py_ssize_t n = flag ? 4 : 5;
            if (end - p < n || memcmp(p, word, (size_t)n) != 0) {
                return NOT_PLAIN;
            }
            p += n;
            if (!missing) {
                if (!e->has_number) {
                    missing = 1;
                }
                else {
                    SUM_ADD(e->share * (flag ? 1.0 : 0.0));
                    if (flag) {
                        FM_ADD(e, 1.0);
                    }
                    known += KNOWN(e);
                }
            }
        }
        else {
            double x;
            int is_int;
            if (parse_number(&p, end, &x, &is_int) < 0) {
                if (first == 'n' || first == '{') {
                    *why = SL_FEATURES_BAD_VALUE; /* null or an object, if the rest is JSON */
                }
                return NOT_PLAIN;
            }
            if (!isfinite(x)) {
                *why = SL_MESSAGE_NOT_JSON;
                return NOT_PLAIN; /* orjson refuses it, or Python's int * float overflows */
            }
            if (!missing) {
                if (!e->has_number) {
                    missing = 1;
                }
                else {
                    SUM_ADD(e->share * x);
                    FM_ADD(e, x);
                    known += KNOWN(e);
                }
            }
        }
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (p < end && *p == '}') {
            break;
        }
        return NOT_PLAIN;
    }
    p = skip_ws(p + 1, end);
    /* with meta: the event's other fields after `features` */
    while (meta != NULL && p < end && *p == ',') {
        p = skip_ws(p + 1, end);
        if (p >= end || *p != '"' || (p = meta_member(p, end, meta)) == NULL) {
            return NOT_PLAIN;
        }
        p = skip_ws(p, end);
    }
    if (p >= end || *p != '}') {
        return NOT_PLAIN;
    }
    p = skip_ws(p + 1, end);
    if (p != end) {
        return NOT_PLAIN;
    }
    if (count > SL_MAX_FEATURES) {
        *why = SL_FEATURES_TOO_MANY;
        return NOT_PLAIN;
    }
    if (missing) {
        return MISSING;
    }
    SUM_END();
    z += self->intercept;
    if (fm) {
        double pair = 0.0;
        for (int f = 0; f < k; f++) {
            pair += S[f] * S[f] - Q[f];
        }
        z += 0.5 * pair;
    }
    if (!isfinite(z)) {
        return NOT_PLAIN;
    }
    *score = z;
    *known_out = known;
    return SCORED;
}

#define MAX_K 256

static int
scan(Shares *self, const char *p, const char *end, double *score, Py_ssize_t *known_out,
     int *why, Meta *meta)
{
    if (self->k == 0) {
        return scan_impl(self, p, end, score, known_out, NULL, NULL, 0, why, meta);
    }
    double S[MAX_K], Q[MAX_K];
    int k = self->k;
    memset(S, 0, sizeof(double) * (size_t)k);
    memset(Q, 0, sizeof(double) * (size_t)k);
    return scan_impl(self, p, end, score, known_out, S, Q, k, why, meta);
}

/* -- the Python type ----------------------------------------------------------- */

static PyObject *
Shares_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"intercept", "limit", "k", NULL};
    double intercept;
    Py_ssize_t limit = 1 << 20;
    int k = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "d|ni", keywords, &intercept, &limit, &k)) {
        return NULL;
    }
    if (k < 0 || k > MAX_K) {
        PyErr_Format(PyExc_ValueError, "k: expected 0 to %d factors per slot, got %d", MAX_K, k);
        return NULL;
    }
    if (limit < 1) {
        PyErr_SetString(PyExc_ValueError, "limit: expected a positive number of entries");
        return NULL;
    }
    Shares *self = (Shares *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->intercept = intercept;
    self->limit = limit;
    self->k = k;
    if (reset(self, 64) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void
Shares_dealloc(Shares *self)
{
    if (self->entries != NULL) {
        free_entries(self->entries, self->capacity);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Shares_score(Shares *self, PyObject *body)
{
    const char *p;
    Py_ssize_t n;
    if (PyBytes_CheckExact(body)) {
        p = PyBytes_AS_STRING(body);
        n = PyBytes_GET_SIZE(body);
    }
    else {
        Py_RETURN_NONE; /* not a body this scans (bytes): the Python path answers it */
    }
    double z;
    Py_ssize_t known;
    int why = SL_NO_CODE;
    int got = scan(self, p, p + n, &z, &known, &why, NULL);
    if (got == SCORED) {
        self->hits++;
        return PyFloat_FromDouble(z);
    }
    if (got == MISSING) {
        Py_RETURN_FALSE;
    }
    Py_RETURN_NONE;
}

/* A meta value as Python reads it (None when absent); NULL with no exception set when a
 * string is not UTF-8 (orjson refuses the body). */
static PyObject *
meta_object(const MetaValue *v)
{
    if (!v->kind) {
        Py_RETURN_NONE;
    }
    if (v->kind == 's') {
        PyObject *text = PyUnicode_DecodeUTF8(v->s, v->n, NULL);
        if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
        }
        return text;
    }
    char digits[MAX_META_DIGITS + 2];
    memcpy(digits, v->s, (size_t)v->n);
    digits[v->n] = '\0';
    return PyLong_FromString(digits, NULL, 10);
}

static PyObject *
Shares_score_event(Shares *self, PyObject *body)
{
    if (!PyBytes_CheckExact(body)) {
        Py_RETURN_NONE;
    }
    const char *p = PyBytes_AS_STRING(body);
    double z;
    Py_ssize_t known;
    int why = SL_NO_CODE;
    Meta meta = {{NULL, 0, 0}, {NULL, 0, 0}, {NULL, 0, 0}, {NULL, 0, 0}, {NULL, 0, 0}};
    int got = scan(self, p, p + PyBytes_GET_SIZE(body), &z, &known, &why, &meta);
    if (got == MISSING) {
        Py_RETURN_FALSE;
    }
    if (got != SCORED) {
        Py_RETURN_NONE;
    }
    if (meta.label.kind == 's') { /* dropped, but read: orjson refuses one not UTF-8 */
        PyObject *label = meta_object(&meta.label);
        if (label == NULL) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
        Py_DECREF(label);
    }
    PyObject *items[5] = {NULL, NULL, NULL, NULL, NULL};
    items[0] = PyFloat_FromDouble(z);
    items[1] = PyLong_FromSsize_t(known);
    items[2] = meta_object(&meta.id);
    items[3] = meta_object(&meta.key);
    items[4] = meta_object(&meta.ts);
    PyObject *out = NULL;
    int complete = 1;
    for (int i = 0; i < 5; i++) {
        complete &= items[i] != NULL;
    }
    if (complete) {
        out = PyTuple_New(5);
    }
    if (out == NULL) {
        for (int i = 0; i < 5; i++) {
            Py_XDECREF(items[i]);
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE; /* a string that is not UTF-8: the Python path refuses the body */
    }
    for (int i = 0; i < 5; i++) {
        PyTuple_SET_ITEM(out, i, items[i]);
    }
    self->hits++;
    return out;
}

/* The factors given with a share: k doubles' bytes for a factorization machine's
 * table, none for a linear one; -1 with an exception otherwise. */
static int
check_factors(Shares *self, const char *vec, Py_ssize_t vec_len)
{
    if (self->k == 0 && vec != NULL) {
        PyErr_SetString(PyExc_ValueError, "factors: expected none for a table with k = 0");
        return -1;
    }
    if (self->k > 0 && (vec == NULL || vec_len != (Py_ssize_t)sizeof(double) * self->k)) {
        PyErr_Format(PyExc_ValueError, "factors: expected the bytes of %d float64, got %zd bytes",
                     self->k, vec == NULL ? (Py_ssize_t)0 : vec_len);
        return -1;
    }
    return 0;
}

/* Copy a factorization machine's factors into e and mark e known or not. */
static int
set_factors(Shares *self, Entry *e, double share, const char *vec)
{
    if (self->k == 0) {
        return 0;
    }
    size_t size = sizeof(double) * (size_t)self->k;
    if (e->vec == NULL && (e->vec = PyMem_Malloc(size)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(e->vec, vec, size);
    int known = share != 0.0;
    for (int f = 0; f < self->k && !known; f++) {
        known = e->vec[f] != 0.0;
    }
    e->known = (unsigned char)known;
    return 0;
}

static PyObject *
Shares_add_number(Shares *self, PyObject *args)
{
    const char *name;
    Py_ssize_t n;
    double share;
    const char *vec = NULL;
    Py_ssize_t vec_len = 0;
    if (!PyArg_ParseTuple(args, "y#d|y#:add_number", &name, &n, &share, &vec, &vec_len)) {
        return NULL;
    }
    if (check_factors(self, vec, vec_len) < 0) {
        return NULL;
    }
    Entry *e = insert(self, name, n, KIND_NAME);
    if (e == NULL || set_factors(self, e, share, vec) < 0) {
        return NULL;
    }
    e->share = share;
    e->has_number = 1;
    Py_RETURN_NONE;
}

static PyObject *
Shares_add_name(Shares *self, PyObject *args)
{
    const char *name;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "y#:add_name", &name, &n)) {
        return NULL;
    }
    if (insert(self, name, n, KIND_NAME) == NULL) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Shares_add_string(Shares *self, PyObject *args)
{
    const char *name, *value;
    Py_ssize_t n, m;
    double share;
    const char *vec = NULL;
    Py_ssize_t vec_len = 0;
    if (!PyArg_ParseTuple(args, "y#y#d|y#:add_string", &name, &n, &value, &m, &share, &vec,
                          &vec_len)) {
        return NULL;
    }
    if (check_factors(self, vec, vec_len) < 0) {
        return NULL;
    }
    if (memchr(name, '\0', (size_t)n) != NULL || memchr(value, '\0', (size_t)m) != NULL) {
        Py_RETURN_NONE; /* never in a plain JSON string: nothing to remember */
    }
    if (insert(self, name, n, KIND_NAME) == NULL) {
        return NULL;
    }
    char local[256];
    Py_ssize_t len = n + 1 + m;
    char *key = len <= (Py_ssize_t)sizeof local ? local : PyMem_Malloc((size_t)len);
    if (key == NULL) {
        return PyErr_NoMemory();
    }
    memcpy(key, name, (size_t)n);
    key[n] = '\0';
    memcpy(key + n + 1, value, (size_t)m);
    Entry *e = insert(self, key, len, KIND_VALUE);
    if (key != local) {
        PyMem_Free(key);
    }
    if (e == NULL || set_factors(self, e, share, vec) < 0) {
        return NULL;
    }
    e->share = share;
    Py_RETURN_NONE;
}

/* The contract's code of the rule a body breaks, as the scan found it where it stepped aside
 * (see streamlearn.contract; the validating path still answers the request), or None: the
 * body was scored, has a name not remembered yet, or is left to that path without a verdict
 * (escapes, malformed JSON, fields besides `features`...). A code found before the end of
 * the body holds if the rest is JSON. */
static PyObject *
Shares_verdict(Shares *self, PyObject *body)
{
    if (!PyBytes_CheckExact(body)) {
        PyErr_SetString(PyExc_TypeError, "verdict: expected bytes");
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(body);
    double z;
    Py_ssize_t known;
    int why = SL_NO_CODE;
    int got = scan(self, p, p + PyBytes_GET_SIZE(body), &z, &known, &why, NULL);
    if (got != NOT_PLAIN || why == SL_NO_CODE) {
        Py_RETURN_NONE;
    }
    return PyUnicode_FromString(SL_CODE_NAMES[why]);
}

static PyObject *
Shares_parse_number(PyObject *type, PyObject *text)
{
    if (!PyBytes_CheckExact(text)) {
        PyErr_SetString(PyExc_TypeError, "parse_number: expected bytes");
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(text);
    const char *end = p + PyBytes_GET_SIZE(text);
    double x;
    int is_int;
    if (parse_number(&p, end, &x, &is_int) < 0 || p != end) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(x);
}

static Py_ssize_t
Shares_len(Shares *self)
{
    return self->used;
}

static PyObject *
Shares_get_hits(Shares *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->hits);
}

static PyObject *
Shares_get_intercept(Shares *self, void *closure)
{
    return PyFloat_FromDouble(self->intercept);
}

static PyMethodDef Shares_methods[] = {
    {"score", (PyCFunction)Shares_score, METH_O,
     "score(body) -> float | False | None: the raw score of a plain one-event body; "
     "False when a name or string is not remembered yet; None for any other body."},
    {"score_event", (PyCFunction)Shares_score_event, METH_O,
     "score_event(body) -> (float, int, id, key, ts) | False | None: score() of a body "
     "that may also hold the event's id, key (a plain string or an integer) and ts (an "
     "integer >= 0), each None when absent, and a label and weight (checked, dropped); "
     "and how many of the event's features have a non-zero share (a list: any of its "
     "strings)."},
    {"add_number", (PyCFunction)Shares_add_number, METH_VARARGS,
     "add_number(name, share[, factors]): remember a name's share of a number (and of true); "
     "a table with k > 0 also takes its slot's k signed factors as float64 bytes."},
    {"add_name", (PyCFunction)Shares_add_name, METH_VARARGS,
     "add_name(name): remember a name seen with a list of strings (an empty one adds 0)."},
    {"add_string", (PyCFunction)Shares_add_string, METH_VARARGS,
     "add_string(name, value, share[, factors]): remember the share of string value under "
     "name (and, with k > 0, its slot's k signed factors as float64 bytes)."},
    {"verdict", (PyCFunction)Shares_verdict, METH_O,
     "verdict(body) -> str | None: the contract's code of the rule the body breaks, where "
     "the scan steps aside for it; None when scored, missing a name, or without a verdict."},
    {"parse_number", (PyCFunction)Shares_parse_number, METH_O | METH_STATIC,
     "parse_number(text) -> float | None: a JSON number as score() reads it."},
    {NULL, NULL, 0, NULL},
};

static PyObject *
Shares_get_k(Shares *self, void *closure)
{
    return PyLong_FromLong(self->k);
}

static PyGetSetDef Shares_getset[] = {
    {"k", (getter)Shares_get_k, NULL, "factors per slot (0: a linear model)", NULL},
    {"hits", (getter)Shares_get_hits, NULL, "bodies scored here so far", NULL},
    {"intercept", (getter)Shares_get_intercept, NULL, "the intercept added to each score", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Shares_as_sequence = {
    .sq_length = (lenfunc)Shares_len,
};

static PyTypeObject SharesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "streamlearn.serving._native.Shares",
    .tp_doc = "Remembered shares of one served version; scores plain one-event bodies.",
    .tp_basicsize = sizeof(Shares),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Shares_new,
    .tp_dealloc = (destructor)Shares_dealloc,
    .tp_methods = Shares_methods,
    .tp_getset = Shares_getset,
    .tp_as_sequence = &Shares_as_sequence,
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "streamlearn.serving._native",
    .m_doc = "Score the plain one-event prediction body from its raw bytes.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    if (PyType_Ready(&SharesType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&native_module);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&SharesType);
    if (PyModule_AddObject(module, "Shares", (PyObject *)&SharesType) < 0) {
        Py_DECREF(&SharesType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}

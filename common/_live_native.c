/* The C twin of common/live_scripts.py `python_write_argv`, built by scripts/build_native.py.

   write_argv(events, cutoff_ms, now_ms) -> ([aggregates text, members text], count)   (after bind())

   The Python function is the rule; this one gives the same two texts, byte for byte, for the
   batches the collector writes: a list of Liquidation objects whose exchange, symbol, side and
   source are plain (`common.live_view.PLAIN`: no JSON escaping, a symbol its own key text), whose
   amounts are Decimals of at most 54 digits before and after the point, with int times and keys. Any other batch
   goes whole to the Python twin, so an odd event gets exactly what Python gives (or raises).
   tests/storage/test_live_native.py holds the two equal.

   Why: at the whole market's rate the Python encoder was a fifth of the collector's CPU (one
   aggregate and one member line per event, Decimal sums, text limbs). Sums stay exact here: each
   amount's digits are added as 9-digit limbs in 64-bit words (a batch would need 9e9 events to
   overflow one), and carried once per aggregate. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_slots.h"

#define WHOLE 8           /* limbs of the whole part: 54 digits an amount (2 spare for the carries) */
#define WHOLE_DIGITS 54
#define FRAC 6            /* limbs of the fraction: 54 digits */
#define FRAC_DIGITS 54
#define LIMB 1000000000LL

/* Liquidation's slots this encoder reads, in this order (bind() receives the names). */
enum { F_EXCHANGE, F_SYMBOL, F_SIDE, F_QUANTITY, F_PRICE, F_VALUE_USD, F_TIME_MS, F_SOURCE, F_SAMPLED, F_KEY, NFIELDS };

static PyTypeObject *liquidation_type = NULL;
static PyTypeObject *side_type = NULL;
static PyObject *decimal_type = NULL;
static PyObject *python_twin = NULL;
static Py_ssize_t offsets[NFIELDS];
static long long bucket_ms = 0, keep_ms = 0;
static char plain[256]; /* common.live_view.PLAIN */

#define FIELD(ev, f) (*(PyObject **)((char *)(ev) + offsets[f]))

typedef struct {
    long long bucket, count, newest;
    Py_ssize_t parent;                         /* 1-based index of the all-symbols sums; 0 for those */
    PyObject *symbol, *exchange, *side, *source; /* new references; symbol NULL for the all-symbols sums */
    PyObject *largest;                         /* str() of the largest USD value (new reference), or NULL */
    Py_ssize_t largest_len;                    /* its canonical length (trailing fractional zeros cut) */
    int64_t q[WHOLE + FRAC], u[WHOLE + FRAC];  /* limbs: [0, WHOLE) whole part from the units up, then the fraction */
} Agg;

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    char *data = PyMem_Realloc(b->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static inline void put(Buf *b, const char *s, Py_ssize_t n) {
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static inline void put_int(Buf *b, long long v) {
    char digits[24];
    int n = 0;
    unsigned long long x = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        digits[n++] = (char)('0' + x % 10);
        x /= 10;
    } while (x);
    if (v < 0) b->data[b->len++] = '-';
    while (n) b->data[b->len++] = digits[--n];
}

static int is_plain(PyObject *s) {
    if (!PyUnicode_IS_ASCII(s)) return 0;
    const unsigned char *p = PyUnicode_1BYTE_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    for (Py_ssize_t i = 0; i < n; i++)
        if (!plain[p[i]]) return 0;
    return 1;
}

/* The plain text of a positive "d.dddE+n" / "dE-n" (what str() gives outside 1e-6 .. 1e28): the
   digits of format(amount, "f") with trailing fractional zeros cut, as canonical_text writes it; NULL
   without an error when it is longer than the limbs hold (the batch goes to Python). */
static PyObject *plain_of_exponent(const char *p, Py_ssize_t n, const char *e) {
    char digits[WHOLE_DIGITS + FRAC_DIGITS + 2], out[WHOLE_DIGITS + FRAC_DIGITS + 4];
    Py_ssize_t nd = 0, point = -1;
    for (const char *c = p; c < e; c++) {
        if (*c == '.') {
            point = nd;
            continue;
        }
        if (*c < '0' || *c > '9' || nd == (Py_ssize_t)sizeof digits) return NULL;
        digits[nd++] = *c;
    }
    if (point < 0) point = nd;
    char *end;
    errno = 0;
    long exponent = strtol(e + 1, &end, 10);
    if (errno || end != p + n || labs(exponent) > WHOLE_DIGITS + FRAC_DIGITS) return NULL;
    Py_ssize_t at = point + exponent, len = 0; /* the point's place among the digits */
    if (at > WHOLE_DIGITS || nd - at > FRAC_DIGITS) return NULL;
    if (at <= 0) {
        out[len++] = '0';
        out[len++] = '.';
        for (Py_ssize_t i = at; i < 0; i++) out[len++] = '0';
        memcpy(out + len, digits, nd);
        len += nd;
    } else {
        for (Py_ssize_t i = 0; i < at; i++) out[len++] = i < nd ? digits[i] : '0';
        if (at < nd) {
            out[len++] = '.';
            memcpy(out + len, digits + at, nd - at);
            len += nd - at;
        }
    }
    Py_ssize_t lead = 0; /* "000" -> "0", "00.5" cannot occur: str() has one digit before its point */
    while (lead + 1 < len && out[lead] == '0' && out[lead + 1] != '.') lead++;
    return PyUnicode_FromStringAndSize(out + lead, len - lead);
}

/* An amount as a str whose first `*len` characters are its canonical text, with `*writable` set when
   it is a positive finite number: 1 if so, 0 when the batch must go to Python, -1 on error. */
static int amount_text(PyObject *amount, PyObject **text, Py_ssize_t *len, int *writable) {
    if (!Py_IS_TYPE(amount, (PyTypeObject *)decimal_type)) return 0;
    PyObject *s = PyObject_Str(amount);
    if (s == NULL) return -1;
    if (!PyUnicode_IS_ASCII(s)) {
        Py_DECREF(s);
        return 0;
    }
    const char *p = (const char *)PyUnicode_1BYTE_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    /* NaN, Infinity and negatives start with a letter or '-'; zero has no other digit */
    *writable = 0;
    *text = s;
    *len = n;
    if (n == 0 || p[0] < '0' || p[0] > '9') return 1;
    const char *e = memchr(p, 'E', n);
    if (e != NULL) {
        PyObject *plain_text = plain_of_exponent(p, n, e);
        Py_DECREF(s);
        *text = NULL;
        if (plain_text == NULL) return PyErr_Occurred() ? -1 : 0;
        *text = s = plain_text;
        p = (const char *)PyUnicode_1BYTE_DATA(s);
        n = PyUnicode_GET_LENGTH(s);
    }
    Py_ssize_t end = n;
    if (memchr(p, '.', n) != NULL) { /* text.rstrip("0").rstrip(".") */
        while (end > 0 && p[end - 1] == '0') end--;
        while (end > 0 && p[end - 1] == '.') end--;
    }
    for (Py_ssize_t i = 0; i < end; i++)
        if (p[i] >= '1' && p[i] <= '9') {
            *writable = 1;
            break;
        }
    *len = end;
    return 1;
}

/* Adds a positive canonical text's digits to the limbs; 0 if it has more digits than they hold. */
static int add_limbs(int64_t *limbs, const char *p, Py_ssize_t n) {
    const char *dot = memchr(p, '.', n);
    Py_ssize_t whole = dot ? dot - p : n, frac = dot ? n - whole - 1 : 0;
    if (whole > WHOLE_DIGITS || frac > FRAC_DIGITS) return 0;
    for (int k = 0; whole > 0; k++) { /* from the units up, 9 digits a limb */
        Py_ssize_t start = whole > 9 ? whole - 9 : 0;
        int64_t v = 0;
        for (Py_ssize_t i = start; i < whole; i++) v = v * 10 + (p[i] - '0');
        limbs[k] += v;
        whole = start;
    }
    const char *f = dot ? dot + 1 : NULL;
    for (int k = 0; k * 9 < frac; k++) { /* from the point down, each limb padded to 9 digits */
        int64_t v = 0;
        for (Py_ssize_t i = k * 9; i < k * 9 + 9; i++) v = v * 10 + (i < frac ? f[i] - '0' : 0);
        limbs[WHOLE + k] += v;
    }
    return 1;
}

/* a > b for positive canonical texts (no leading zeros but a lone "0", no trailing fractional zeros) */
static int greater(const char *a, Py_ssize_t na, const char *b, Py_ssize_t nb) {
    const char *da = memchr(a, '.', na), *db = memchr(b, '.', nb);
    Py_ssize_t wa = da ? da - a : na, wb = db ? db - b : nb;
    if (wa != wb) return wa > wb;
    Py_ssize_t n = na < nb ? na : nb;
    int c = memcmp(a, b, n);
    if (c != 0) return c > 0;
    return na > nb;
}

static void carry(int64_t *limbs) {
    int64_t c = 0;
    for (int k = WHOLE + FRAC - 1; k >= WHOLE; k--) { /* the fraction's last limb first */
        int64_t v = limbs[k] + c;
        limbs[k] = v % LIMB;
        c = v / LIMB;
    }
    for (int k = 0; k < WHOLE; k++) {
        int64_t v = limbs[k] + c;
        limbs[k] = v % LIMB;
        c = v / LIMB;
    }
}

/* "\tq0=1\tq-1=500000000": the nonzero limbs, the whole part's from the units up, then the fraction's */
static void put_limbs(Buf *b, char name, const int64_t *limbs) {
    for (int k = 0; k < WHOLE + FRAC; k++) {
        if (!limbs[k]) continue;
        b->data[b->len++] = '\t';
        b->data[b->len++] = name;
        put_int(b, k < WHOLE ? k : WHOLE - 1 - k);
        b->data[b->len++] = '=';
        put_int(b, limbs[k]);
    }
}

static void put_str(Buf *b, PyObject *s) {
    put(b, (const char *)PyUnicode_1BYTE_DATA(s), PyUnicode_GET_LENGTH(s));
}

static PyObject *call_twin(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (python_twin == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "common._live_native: bind() was not called");
        return NULL;
    }
    return PyObject_Vectorcall(python_twin, args, nargs, kwnames);
}

#define TWIN (-2) /* the batch goes to Python */

typedef struct {
    PyObject *index;       /* (bucket, symbol or None, exchange, side, source) -> index in aggs */
    Agg *aggs;
    Py_ssize_t naggs, cap;
    PyObject *bucket_obj;  /* the last bucket as an int, for the keys */
    long long bucket;
    PyObject *texts[3];    /* the event's quantity, price and USD as str(), while it is encoded */
} State;

static void drop_texts(State *st) {
    for (int f = 0; f < 3; f++) Py_CLEAR(st->texts[f]);
}

/* The index of the sums of (bucket, symbol, ...) for this batch, made (after its all-symbols
   sums, when those are new too) at first sight; -1 on error. */
static Py_ssize_t agg_of(State *st, long long bucket, PyObject *symbol, PyObject *exchange, PyObject *side,
                         PyObject *source) {
    if (st->bucket_obj == NULL || bucket != st->bucket) {
        Py_XSETREF(st->bucket_obj, PyLong_FromLongLong(bucket));
        if (st->bucket_obj == NULL) return -1;
        st->bucket = bucket;
    }
    PyObject *key = PyTuple_Pack(5, st->bucket_obj, symbol == NULL ? Py_None : symbol, exchange, side, source);
    if (key == NULL) return -1;
    PyObject *found = PyDict_GetItemWithError(st->index, key);
    if (found != NULL || PyErr_Occurred()) {
        Py_DECREF(key);
        return found == NULL ? -1 : PyLong_AsSsize_t(found);
    }
    Py_ssize_t parent = 0;
    if (symbol != NULL) {
        parent = agg_of(st, bucket, NULL, exchange, side, source);
        if (parent < 0) {
            Py_DECREF(key);
            return -1;
        }
        parent += 1;
    }
    if (st->naggs == st->cap) {
        Py_ssize_t cap = st->cap ? st->cap * 2 : 64;
        Agg *grown = PyMem_Realloc(st->aggs, cap * sizeof(Agg));
        if (grown == NULL) {
            Py_DECREF(key);
            PyErr_NoMemory();
            return -1;
        }
        st->aggs = grown;
        st->cap = cap;
    }
    Py_ssize_t at = st->naggs;
    PyObject *number = PyLong_FromSsize_t(at);
    int failed = number == NULL || PyDict_SetItem(st->index, key, number) < 0;
    Py_XDECREF(number);
    Py_DECREF(key);
    if (failed) return -1;
    Agg *a = &st->aggs[st->naggs++];
    memset(a, 0, sizeof *a);
    a->bucket = bucket;
    a->parent = parent;
    a->symbol = Py_XNewRef(symbol);
    a->exchange = Py_NewRef(exchange);
    a->side = Py_NewRef(side);
    a->source = Py_NewRef(source);
    return at;
}

/* The events' members into `tail`, their sums into `st`; how many were written, TWIN or -1. */
static Py_ssize_t encode(State *st, PyObject *events, long long cutoff, Buf *tail) {
    Py_ssize_t written = 0, n = PyList_GET_SIZE(events);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *ev = PyList_GET_ITEM(events, i);
        if (!Py_IS_TYPE(ev, liquidation_type)) return TWIN;
        PyObject *time_obj = FIELD(ev, F_TIME_MS), *key_obj = FIELD(ev, F_KEY), *sampled = FIELD(ev, F_SAMPLED);
        PyObject *exchange = FIELD(ev, F_EXCHANGE), *symbol = FIELD(ev, F_SYMBOL), *side = FIELD(ev, F_SIDE);
        PyObject *source = FIELD(ev, F_SOURCE);
        if (time_obj == NULL || !PyLong_CheckExact(time_obj)) return TWIN;
        int overflow = 0;
        long long t = PyLong_AsLongLongAndOverflow(time_obj, &overflow);
        if (overflow || (t == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return TWIN;
        }
        if (t < cutoff) continue;
        Py_ssize_t lens[3];
        int writable = 1;
        for (int f = 0; f < 3; f++) {
            int w = 0, ok;
            PyObject *amount = FIELD(ev, F_QUANTITY + f);
            ok = amount == NULL ? 0 : amount_text(amount, &st->texts[f], &lens[f], &w);
            if (ok != 1) return ok == 0 ? TWIN : -1;
            writable &= w;
        }
        if (!writable) { /* not a positive finite amount: left out, as in Python */
            drop_texts(st);
            continue;
        }
        if (key_obj == NULL || !PyLong_CheckExact(key_obj) || sampled == NULL || !PyBool_Check(sampled) ||
            exchange == NULL || !PyUnicode_CheckExact(exchange) || !is_plain(exchange) || symbol == NULL ||
            !PyUnicode_CheckExact(symbol) || !is_plain(symbol) || source == NULL || !PyUnicode_CheckExact(source) ||
            !is_plain(source) || side == NULL || !Py_IS_TYPE(side, side_type) || !is_plain(side))
            return TWIN;
        long long key = PyLong_AsLongLongAndOverflow(key_obj, &overflow);
        if (overflow || (key == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return TWIN;
        }
        long long rem = t % bucket_ms; /* Python's floor modulo: a time before 1970 too */
        if (rem < 0) rem += bucket_ms;
        Py_ssize_t at = agg_of(st, t - rem, symbol, exchange, side, source);
        if (at < 0) return -1;
        Agg *a = &st->aggs[at];
        const char *q = (const char *)PyUnicode_1BYTE_DATA(st->texts[0]);
        const char *p = (const char *)PyUnicode_1BYTE_DATA(st->texts[1]);
        const char *u = (const char *)PyUnicode_1BYTE_DATA(st->texts[2]);
        if (!add_limbs(a->q, q, lens[0]) || !add_limbs(a->u, u, lens[2])) return TWIN; /* (the batch is redone) */
        a->count++;
        if (a->largest == NULL || greater(u, lens[2], (const char *)PyUnicode_1BYTE_DATA(a->largest), a->largest_len)) {
            Py_XSETREF(a->largest, Py_NewRef(st->texts[2]));
            a->largest_len = lens[2];
        }
        if (t > a->newest) a->newest = t;
        /* "{t} {index} [key,"exchange","symbol","side","q","p","u",t,"source",sampled]\n" */
        Py_ssize_t names = PyUnicode_GET_LENGTH(exchange) + PyUnicode_GET_LENGTH(symbol) +
                           PyUnicode_GET_LENGTH(side) + PyUnicode_GET_LENGTH(source);
        if (buf_reserve(tail, 160 + lens[0] + lens[1] + lens[2] + names) < 0) return -1;
        put_int(tail, t);
        put(tail, " ", 1);
        put_int(tail, at + 1);
        put(tail, " [", 2);
        put_int(tail, key);
        put(tail, ",\"", 2);
        put_str(tail, exchange);
        put(tail, "\",\"", 3);
        put_str(tail, symbol);
        put(tail, "\",\"", 3);
        put_str(tail, side);
        put(tail, "\",\"", 3);
        put(tail, q, lens[0]);
        put(tail, "\",\"", 3);
        put(tail, p, lens[1]);
        put(tail, "\",\"", 3);
        put(tail, u, lens[2]);
        put(tail, "\",", 2);
        put_int(tail, t);
        put(tail, ",\"", 2);
        put_str(tail, source);
        if (sampled == Py_True)
            put(tail, "\",true]\n", 8);
        else
            put(tail, "\",false]\n", 9);
        drop_texts(st);
        written++;
    }
    return written;
}

/* The aggregates' lines: the all-symbols sums first get their symbols' sums added up. */
static int encode_aggs(State *st, long long now, Buf *out) {
    for (Py_ssize_t i = 0; i < st->naggs; i++) {
        Agg *a = &st->aggs[i];
        if (!a->parent) continue;
        Agg *p = &st->aggs[a->parent - 1];
        p->count += a->count;
        for (int k = 0; k < WHOLE + FRAC; k++) {
            p->q[k] += a->q[k];
            p->u[k] += a->u[k];
        }
        if (p->largest == NULL || greater((const char *)PyUnicode_1BYTE_DATA(a->largest), a->largest_len,
                                          (const char *)PyUnicode_1BYTE_DATA(p->largest), p->largest_len)) {
            Py_XSETREF(p->largest, Py_NewRef(a->largest));
            p->largest_len = a->largest_len;
        }
        if (a->newest > p->newest) p->newest = a->newest;
    }
    /* "suffix\tgroup\tstart\texpire\tcount\tlargest\tnewest\tparent\tq..\tu.." */
    for (Py_ssize_t i = 0; i < st->naggs; i++) {
        Agg *a = &st->aggs[i];
        carry(a->q);
        carry(a->u);
        Py_ssize_t names = PyUnicode_GET_LENGTH(a->exchange) + PyUnicode_GET_LENGTH(a->side) +
                           PyUnicode_GET_LENGTH(a->source) + (a->symbol ? PyUnicode_GET_LENGTH(a->symbol) : 0);
        if (buf_reserve(out, 200 + names + a->largest_len + 2 * (WHOLE + FRAC) * 16) < 0) return -1;
        if (i) put(out, "\n", 1);
        put_int(out, a->bucket);
        if (a->symbol) {
            put(out, ":", 1);
            put_str(out, a->symbol);
        }
        put(out, "\t[\"", 3);
        put_str(out, a->exchange);
        put(out, "\",\"", 3);
        put_str(out, a->side);
        put(out, "\",\"", 3);
        put_str(out, a->source);
        put(out, "\"]\t", 3);
        put_int(out, a->bucket);
        put(out, "\t", 1);
        long long end = a->bucket + bucket_ms;
        put_int(out, (end > now ? end : now) + keep_ms);
        put(out, "\t", 1);
        put_int(out, a->count);
        put(out, "\t", 1);
        put(out, (const char *)PyUnicode_1BYTE_DATA(a->largest), a->largest_len);
        put(out, "\t", 1);
        put_int(out, a->newest);
        put(out, "\t", 1);
        put_int(out, (long long)a->parent);
        put_limbs(out, 'q', a->q);
        put_limbs(out, 'u', a->u);
    }
    return 0;
}

static void free_state(State *st) {
    for (Py_ssize_t i = 0; i < st->naggs; i++) {
        Agg *a = &st->aggs[i];
        Py_XDECREF(a->symbol);
        Py_XDECREF(a->exchange);
        Py_XDECREF(a->side);
        Py_XDECREF(a->source);
        Py_XDECREF(a->largest);
    }
    PyMem_Free(st->aggs);
    drop_texts(st);
    Py_XDECREF(st->bucket_obj);
    Py_XDECREF(st->index);
}

static PyObject *text_of(Buf *b) {
    PyObject *s = PyUnicode_New(b->len, 127);
    if (s != NULL && b->len) memcpy(PyUnicode_1BYTE_DATA(s), b->data, b->len);
    return s;
}

static PyObject *write_argv(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (kwnames != NULL || nargs != 3 || liquidation_type == NULL || !PyList_CheckExact(args[0]) ||
        !PyLong_CheckExact(args[1]) || !PyLong_CheckExact(args[2]))
        return call_twin(args, nargs, kwnames);
    int o1 = 0, o2 = 0;
    long long cutoff = PyLong_AsLongLongAndOverflow(args[1], &o1);
    long long now = PyLong_AsLongLongAndOverflow(args[2], &o2);
    if (o1 || o2 || PyErr_Occurred()) {
        PyErr_Clear();
        return call_twin(args, nargs, kwnames);
    }
    State st = {0};
    Buf aggs = {NULL, 0, 0}, tail = {NULL, 0, 0};
    PyObject *result = NULL;
    st.index = PyDict_New();
    Py_ssize_t written = st.index == NULL ? -1 : encode(&st, args[0], cutoff, &tail);
    if (written >= 0 && encode_aggs(&st, now, &aggs) < 0) written = -1;
    free_state(&st);
    if (written == TWIN) {
        result = call_twin(args, nargs, kwnames);
    } else if (written >= 0) {
        PyObject *a = text_of(&aggs), *m = text_of(&tail);
        if (a != NULL && m != NULL) {
            result = Py_BuildValue("([NN]n)", a, m, written);
        } else {
            Py_XDECREF(a);
            Py_XDECREF(m);
        }
    }
    PyMem_Free(aggs.data);
    PyMem_Free(tail.data);
    return result;
}

/* bind(Liquidation, field names, Side, Decimal, python_write_argv, BUCKET_MS, KEEP_MS, plain characters) */
static PyObject *bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8 || !PyType_Check(args[0]) || !PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) != NFIELDS ||
        !PyType_Check(args[2]) || !PyType_Check(args[3]) || !PyLong_Check(args[5]) || !PyLong_Check(args[6]) ||
        !PyUnicode_Check(args[7]) || !PyUnicode_IS_ASCII(args[7])) {
        PyErr_SetString(PyExc_TypeError,
                        "bind(cls, 10 field names, Side, Decimal, python_write_argv, bucket_ms, keep_ms, plain)");
        return NULL;
    }
    if (slot_offsets(args[0], args[1], NFIELDS, offsets) < 0) return NULL;
    bucket_ms = PyLong_AsLongLong(args[5]);
    keep_ms = PyLong_AsLongLong(args[6]);
    if (PyErr_Occurred()) return NULL;
    if (bucket_ms <= 0) {
        PyErr_SetString(PyExc_ValueError, "bind: bucket_ms must be positive");
        return NULL;
    }
    memset(plain, 0, sizeof plain);
    const unsigned char *p = PyUnicode_1BYTE_DATA(args[7]);
    for (Py_ssize_t i = 0; i < PyUnicode_GET_LENGTH(args[7]); i++) plain[p[i]] = 1;
    Py_XSETREF(liquidation_type, (PyTypeObject *)Py_NewRef(args[0]));
    Py_XSETREF(side_type, (PyTypeObject *)Py_NewRef(args[2]));
    Py_XSETREF(decimal_type, Py_NewRef(args[3]));
    Py_XSETREF(python_twin, Py_NewRef(args[4]));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"write_argv", (PyCFunction)(void (*)(void))write_argv, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "common._live_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__live_native(void) { return PyModule_Create(&module); }

/* C twins of two hot-path functions of common/events.py, built by scripts/build_native.py.

   dedup_key_of_texts(exchange, symbol, time_ms, side, price, quantity[, extra]) -> int
   new_liquidation(exchange, ..., key) -> Liquidation   (after bind(Liquidation))
   canonical_text(amount) -> str   (OKX's base quantity, a product of Decimals)

   The Python functions in events.py are the rule; these give the same result for the inputs the
   adapters pass (exact str parts, an int time) and hand everything else to the Python twin
   (`fallback`), so an odd input raises exactly what the Python function raises.
   tests/exchanges/test_native_twins.py holds the two equal. blake2b is written out below (RFC 7693) because
   hashlib's object protocol costs several times the compression itself for a 60-byte key text. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#include "_slots.h"

/* ---- blake2b-64, unkeyed (RFC 7693) ---- */

static const uint64_t IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const uint8_t SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static inline uint64_t rotr64(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

#define G(a, b, c, d, x, y)    \
    do {                       \
        a = a + b + (x);       \
        d = rotr64(d ^ a, 32); \
        c = c + d;             \
        b = rotr64(b ^ c, 24); \
        a = a + b + (y);       \
        d = rotr64(d ^ a, 16); \
        c = c + d;             \
        b = rotr64(b ^ c, 63); \
    } while (0)

/* One round with its permutation as constants: the twelve are written out so that the compiler
   turns every SIGMA lookup into a fixed offset (about half the instructions of a loop over r). */
#define ROUND(r)                                                   \
    do {                                                           \
        G(v0, v4, v8, v12, m[SIGMA[r][0]], m[SIGMA[r][1]]);        \
        G(v1, v5, v9, v13, m[SIGMA[r][2]], m[SIGMA[r][3]]);        \
        G(v2, v6, v10, v14, m[SIGMA[r][4]], m[SIGMA[r][5]]);       \
        G(v3, v7, v11, v15, m[SIGMA[r][6]], m[SIGMA[r][7]]);       \
        G(v0, v5, v10, v15, m[SIGMA[r][8]], m[SIGMA[r][9]]);       \
        G(v1, v6, v11, v12, m[SIGMA[r][10]], m[SIGMA[r][11]]);     \
        G(v2, v7, v8, v13, m[SIGMA[r][12]], m[SIGMA[r][13]]);      \
        G(v3, v4, v9, v14, m[SIGMA[r][14]], m[SIGMA[r][15]]);      \
    } while (0)

static void compress(uint64_t h[8], const uint8_t block[128], uint64_t counter, int last) {
    uint64_t m[16];
    for (int i = 0; i < 16; i++) m[i] = load64(block + 8 * i);
    uint64_t v0 = h[0], v1 = h[1], v2 = h[2], v3 = h[3], v4 = h[4], v5 = h[5], v6 = h[6], v7 = h[7];
    uint64_t v8 = IV[0], v9 = IV[1], v10 = IV[2], v11 = IV[3];
    uint64_t v12 = IV[4] ^ counter; /* the counter's high word stays 0: no key text is 2**64 bytes */
    uint64_t v13 = IV[5], v14 = last ? ~IV[6] : IV[6], v15 = IV[7];
    ROUND(0);
    ROUND(1);
    ROUND(2);
    ROUND(3);
    ROUND(4);
    ROUND(5);
    ROUND(6);
    ROUND(7);
    ROUND(8);
    ROUND(9);
    ROUND(10);
    ROUND(11);
    h[0] ^= v0 ^ v8;
    h[1] ^= v1 ^ v9;
    h[2] ^= v2 ^ v10;
    h[3] ^= v3 ^ v11;
    h[4] ^= v4 ^ v12;
    h[5] ^= v5 ^ v13;
    h[6] ^= v6 ^ v14;
    h[7] ^= v7 ^ v15;
}

/* The first 8 bytes of blake2b(data, digest_size=8) as one little-endian word. */
static uint64_t blake2b_64(const uint8_t *data, size_t len) {
    uint64_t h[8];
    uint8_t block[128];
    memcpy(h, IV, sizeof h);
    h[0] ^= 0x01010000ULL ^ 8; /* depth 1, fanout 1, no key, 8-byte digest */
    size_t done = 0;
    while (len - done > 128) {
        compress(h, data + done, done + 128, 0);
        done += 128;
    }
    memset(block, 0, sizeof block);
    memcpy(block, data + done, len - done);
    compress(h, block, len, 1);
    return h[0];
}

/* ---- dedup_key_of_texts ---- */

static PyObject *py_dedup_key_of_texts = NULL; /* events.dedup_key_of_texts, for what the C path leaves */
static PyObject *py_new_liquidation = NULL; /* events.new_liquidation (the Python twin) */
static PyObject *py_canonical_text = NULL;
static PyObject *decimal_type = NULL;
static PyTypeObject *liquidation_type = NULL;
#define FIELDS 14 /* Liquidation's slots in field order; new_liquidation sets the first 12 */
static Py_ssize_t offsets[FIELDS];

static PyObject *fallback(PyObject *function, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (function == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "common._events_native: bind() was not called");
        return NULL;
    }
    return PyObject_Vectorcall(function, args, nargs, kwnames);
}

/* Writes the decimal digits of v at out; returns the count. */
static Py_ssize_t write_int(char *out, long long v) {
    char digits[24];
    Py_ssize_t n = 0, written = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) out[written++] = '-';
    while (n) out[written++] = digits[--n];
    return written;
}

static PyObject *dedup_key_of_texts(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (kwnames != NULL) return fallback(py_dedup_key_of_texts, args, nargs, kwnames); /* keywords: the Python way */
    /* exchange, symbol, time_ms, side, price, quantity[, extra]: "|".join of their texts */
    static const int TEXTS[6] = {0, 1, 3, 4, 5, 6};
    const char *parts[7];
    Py_ssize_t sizes[7], total = 0;
    int count = 6;
    if (nargs < 6 || nargs > 7 || !PyLong_CheckExact(args[2])) return fallback(py_dedup_key_of_texts, args, nargs, kwnames);
    if (nargs == 7) {
        if (!PyUnicode_CheckExact(args[6])) return fallback(py_dedup_key_of_texts, args, nargs, kwnames);
        if (PyUnicode_GET_LENGTH(args[6]) > 0) count = 7;
    }
    int overflow = 0;
    long long time_ms = PyLong_AsLongLongAndOverflow(args[2], &overflow);
    if (overflow) return fallback(py_dedup_key_of_texts, args, nargs, kwnames);
    for (int i = 0; i < 6; i++) {
        int at = TEXTS[i];
        if (at >= nargs || (at == 6 && count == 6)) continue;
        /* str and its subclasses (Side is a StrEnum): join takes their text */
        if (!PyUnicode_Check(args[at])) return fallback(py_dedup_key_of_texts, args, nargs, kwnames);
        parts[at] = PyUnicode_AsUTF8AndSize(args[at], &sizes[at]);
        if (parts[at] == NULL) { /* a lone surrogate: let str.encode raise its own error */
            PyErr_Clear();
            return fallback(py_dedup_key_of_texts, args, nargs, kwnames);
        }
        total += sizes[at] + 1;
    }
    total += 24;
    char small[512];
    char *text = total <= (Py_ssize_t)sizeof small ? small : PyMem_Malloc(total);
    if (text == NULL) return PyErr_NoMemory();
    Py_ssize_t n = 0;
    for (int i = 0; i < 7; i++) {
        if (i == 6 && count == 6) break;
        if (i) text[n++] = '|';
        if (i == 2) {
            n += write_int(text + n, time_ms);
        } else {
            memcpy(text + n, parts[i], sizes[i]);
            n += sizes[i];
        }
    }
    uint64_t word = blake2b_64((const uint8_t *)text, (size_t)n);
    if (text != small) PyMem_Free(text);
    /* the digest's 8 bytes read as a big-endian int64, then >> 1 (Python's floor shift) */
    int64_t signed_key = (int64_t)__builtin_bswap64(word);
    return PyLong_FromLongLong(signed_key >> 1);
}

/* ---- new_liquidation ---- */

static PyObject *new_liquidation(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (kwnames != NULL) return fallback(py_new_liquidation, args, nargs, kwnames); /* keywords: the Python way */
    if (nargs != 12 || liquidation_type == NULL) return fallback(py_new_liquidation, args, nargs, kwnames);
    PyObject *event = liquidation_type->tp_alloc(liquidation_type, 0);
    if (event == NULL) return NULL;
    for (int i = 0; i < 12; i++) {
        Py_INCREF(args[i]);
        *(PyObject **)((char *)event + offsets[i]) = args[i];
    }
    for (int i = 12; i < FIELDS; i++) { /* cascade_id, risk_score */
        Py_INCREF(Py_None);
        *(PyObject **)((char *)event + offsets[i]) = Py_None;
    }
    return event;
}

/* ---- canonical_text ---- */

static PyObject *canonical_text(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (kwnames != NULL || nargs != 1 || decimal_type == NULL || !Py_IS_TYPE(args[0], (PyTypeObject *)decimal_type))
        return fallback(py_canonical_text, args, nargs, kwnames);
    PyObject *text = PyObject_Str(args[0]);
    if (text == NULL) return NULL;
    if (!PyUnicode_IS_ASCII(text)) {
        Py_DECREF(text);
        return fallback(py_canonical_text, args, nargs, kwnames);
    }
    const char *s = (const char *)PyUnicode_1BYTE_DATA(text);
    Py_ssize_t len = PyUnicode_GET_LENGTH(text), end = len;
    if (memchr(s, 'E', len) != NULL) { /* written with an exponent: format(amount, "f") the Python way */
        Py_DECREF(text);
        return fallback(py_canonical_text, args, nargs, kwnames);
    }
    if (memchr(s, '.', len) == NULL) return text;
    while (end > 0 && s[end - 1] == '0') end--; /* text.rstrip("0").rstrip(".") */
    while (end > 0 && s[end - 1] == '.') end--;
    if (end == len) return text;
    PyObject *canonical = PyUnicode_Substring(text, 0, end);
    Py_DECREF(text);
    return canonical;
}

/* bind(Liquidation, field_names, dedup_key_of_texts, new_liquidation, canonical_text, Decimal): the
   slots to fill, in order, and the Python twins. Refuses a class whose fields are not plain object
   slots. */
static PyObject *bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6 || !PyType_Check(args[0]) || !PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) != FIELDS ||
        !PyType_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "bind(cls, 14 field names, key function, constructor, canonical_text, Decimal)");
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)args[0];
    if (slot_offsets(args[0], args[1], FIELDS, offsets) < 0) return NULL;
    Py_INCREF(cls);
    Py_XSETREF(liquidation_type, cls);
    Py_INCREF(args[2]);
    Py_XSETREF(py_dedup_key_of_texts, args[2]);
    Py_INCREF(args[3]);
    Py_XSETREF(py_new_liquidation, args[3]);
    Py_INCREF(args[4]);
    Py_XSETREF(py_canonical_text, args[4]);
    Py_INCREF(args[5]);
    Py_XSETREF(decimal_type, args[5]);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"dedup_key_of_texts", (PyCFunction)(void (*)(void))dedup_key_of_texts, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"new_liquidation", (PyCFunction)(void (*)(void))new_liquidation, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"canonical_text", (PyCFunction)(void (*)(void))canonical_text, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "common._events_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__events_native(void) { return PyModule_Create(&module); }

/* C twins of four hot-path checks of collector/validation.py, built by scripts/build_native.py.

   amount_text(text) -> (canonical text, Decimal)
   price_text(text) -> (canonical text, Decimal), remembered in validation._PRICES
   check_time(time_ms, received_ms, max_age_ms) -> time_ms
   check_ms_text(text, name, received_ms, max_age_ms) -> time_ms

   Each takes only the inputs it can settle as accepted, on its own, in a few dozen instructions
   (a plain decimal of ASCII digits well inside the bounds, a time well inside the window), and
   hands every other one to the Python function of the same name, which is the rule: it accepts
   the rest or raises `Rejected` with the reason. A twin never refuses, so the reasons counted for
   drops are always the Python ones. tests/exchanges/test_native_twins.py holds them equal. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_NUMBER_CHARS 28       /* validation._MAX_NUMBER_CHARS */
#define MAX_INTEGER_DIGITS 15     /* whole part below 1e15 (validation._MAX_AMOUNT) */
#define MAX_LEADING_ZEROS 17      /* 0.000000000000000001 = 1e-18 (validation._MIN_AMOUNT) */
#define MAX_MS_DIGITS 16          /* validation._MAX_MS_DIGITS */
#define MIN_TIME_MS 1500000000000LL
#define FUTURE_TOLERANCE_MS 300000LL

static PyObject *decimal_type = NULL;
static PyObject *prices = NULL; /* validation._PRICES */
static Py_ssize_t prices_max = 0;
static PyObject *py_amount_text = NULL, *py_price_text = NULL, *py_check_time = NULL, *py_check_ms_text = NULL;

static PyObject *fallback(PyObject *function, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (function == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "collector._validation_native: bind() was not called");
        return NULL;
    }
    return PyObject_Vectorcall(function, args, nargs, kwnames);
}

/* (canonical, Decimal) of a plain decimal inside the amount bounds; NULL without an error when
   the Python rule must decide. */
static PyObject *plain_amount(PyObject *text) {
    if (!PyUnicode_CheckExact(text) || !PyUnicode_IS_ASCII(text)) return NULL;
    Py_ssize_t len = PyUnicode_GET_LENGTH(text);
    if (len == 0 || len > MAX_NUMBER_CHARS) return NULL;
    const char *s = (const char *)PyUnicode_1BYTE_DATA(text);
    Py_ssize_t whole = 0;
    while (whole < len && s[whole] >= '0' && s[whole] <= '9') whole++;
    if (whole == 0 || (s[0] == '0' && whole > 1)) return NULL; /* no digit, or a leading zero */
    Py_ssize_t end = len;                                       /* of the canonical text */
    if (whole < len) {
        if (s[whole] != '.' || whole + 1 == len) return NULL;
        for (Py_ssize_t i = whole + 1; i < len; i++) {
            if (s[i] < '0' || s[i] > '9') return NULL;
        }
        while (s[end - 1] == '0') end--;
        if (end == whole + 1) end = whole; /* "5916.0" -> "5916" */
    }
    if (s[0] == '0') { /* below 1: at least 1e-18 */
        if (end == whole) return NULL; /* zero */
        Py_ssize_t zeros = 0;
        while (s[whole + 1 + zeros] == '0') zeros++;
        if (zeros > MAX_LEADING_ZEROS) return NULL;
    } else if (whole > MAX_INTEGER_DIGITS) {
        return NULL;
    }
    PyObject *canonical;
    if (end == len) {
        Py_INCREF(text);
        canonical = text;
    } else {
        canonical = PyUnicode_Substring(text, 0, end);
        if (canonical == NULL) return NULL;
    }
    PyObject *value = PyObject_CallOneArg(decimal_type, canonical);
    if (value == NULL) {
        Py_DECREF(canonical);
        return NULL;
    }
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) {
        Py_DECREF(canonical);
        Py_DECREF(value);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, canonical);
    PyTuple_SET_ITEM(pair, 1, value);
    return pair;
}

static PyObject *amount_text(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (kwnames != NULL) return fallback(py_amount_text, args, nargs, kwnames); /* keywords: the Python way */
    if (nargs != 1) return fallback(py_amount_text, args, nargs, kwnames);
    PyObject *pair = plain_amount(args[0]);
    if (pair != NULL || PyErr_Occurred()) return pair;
    return fallback(py_amount_text, args, nargs, kwnames);
}

static PyObject *price_text(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (kwnames != NULL) return fallback(py_price_text, args, nargs, kwnames); /* keywords: the Python way */
    if (nargs != 1 || prices == NULL || !PyUnicode_CheckExact(args[0])) return fallback(py_price_text, args, nargs, kwnames);
    PyObject *known = PyDict_GetItemWithError(prices, args[0]);
    if (known != NULL) {
        Py_INCREF(known);
        return known;
    }
    if (PyErr_Occurred()) return NULL;
    PyObject *pair = plain_amount(args[0]);
    if (pair == NULL) {
        if (PyErr_Occurred()) return NULL;
        return fallback(py_price_text, args, nargs, kwnames); /* remembers what it accepts itself */
    }
    if (PyDict_GET_SIZE(prices) >= prices_max) PyDict_Clear(prices);
    if (PyDict_SetItem(prices, args[0], pair) < 0) {
        Py_DECREF(pair);
        return NULL;
    }
    return pair;
}

/* 1 when the time is inside the window: not before MIN_TIME_MS, at most FUTURE_TOLERANCE_MS ahead
   of received_ms and, when max_age_ms is an int, at most that old. 0: the Python rule decides. */
static int time_inside(long long time_ms, PyObject *received, PyObject *max_age) {
    int overflow = 0;
    if (!PyLong_CheckExact(received)) return 0;
    long long received_ms = PyLong_AsLongLongAndOverflow(received, &overflow);
    if (overflow || received_ms == -1) return 0;
    if (time_ms < MIN_TIME_MS || received_ms < MIN_TIME_MS || received_ms > (1LL << 52)) return 0;
    if (time_ms > (1LL << 52) || time_ms - received_ms > FUTURE_TOLERANCE_MS) return 0;
    if (max_age == Py_None) return 1;
    if (!PyLong_CheckExact(max_age)) return 0;
    long long max_age_ms = PyLong_AsLongLongAndOverflow(max_age, &overflow);
    if (overflow || max_age_ms < 0) return 0;
    return received_ms - time_ms <= max_age_ms;
}

static PyObject *check_time(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (kwnames != NULL) return fallback(py_check_time, args, nargs, kwnames); /* keywords: the Python way */
    if (nargs == 3 && PyLong_CheckExact(args[0])) {
        int overflow = 0;
        long long time_ms = PyLong_AsLongLongAndOverflow(args[0], &overflow);
        if (!overflow && time_inside(time_ms, args[1], args[2])) {
            Py_INCREF(args[0]);
            return args[0];
        }
    }
    PyErr_Clear();
    return fallback(py_check_time, args, nargs, kwnames);
}

static PyObject *check_ms_text(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (kwnames != NULL) return fallback(py_check_ms_text, args, nargs, kwnames); /* keywords: the Python way */
    if (nargs == 4 && PyUnicode_CheckExact(args[0]) && PyUnicode_IS_ASCII(args[0])) {
        Py_ssize_t len = PyUnicode_GET_LENGTH(args[0]);
        const char *s = (const char *)PyUnicode_1BYTE_DATA(args[0]);
        long long time_ms = 0;
        int digits = len > 0 && len <= MAX_MS_DIGITS;
        for (Py_ssize_t i = 0; digits && i < len; i++) {
            digits = s[i] >= '0' && s[i] <= '9';
            time_ms = time_ms * 10 + (s[i] - '0');
        }
        if (digits && time_inside(time_ms, args[2], args[3])) return PyLong_FromLongLong(time_ms);
    }
    PyErr_Clear();
    return fallback(py_check_ms_text, args, nargs, kwnames);
}

/* bind(Decimal, _PRICES, _PRICES_MAX, amount_text, price_text, check_time, check_ms_text): the
   Python rules and the memo the twins share with them. */
static PyObject *bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7 || !PyDict_CheckExact(args[1]) || !PyLong_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "bind(Decimal, prices dict, prices max, 4 Python rules)");
        return NULL;
    }
    Py_ssize_t max = PyLong_AsSsize_t(args[2]);
    if (max == -1 && PyErr_Occurred()) return NULL;
    PyObject **slots[] = {&decimal_type, &prices, NULL, &py_amount_text, &py_price_text, &py_check_time, &py_check_ms_text};
    for (int i = 0; i < 7; i++) {
        if (slots[i] == NULL) continue;
        Py_INCREF(args[i]);
        Py_XSETREF(*slots[i], args[i]);
    }
    prices_max = max;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"amount_text", (PyCFunction)(void (*)(void))amount_text, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"price_text", (PyCFunction)(void (*)(void))price_text, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"check_time", (PyCFunction)(void (*)(void))check_time, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"check_ms_text", (PyCFunction)(void (*)(void))check_ms_text, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "collector._validation_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__validation_native(void) { return PyModule_Create(&module); }

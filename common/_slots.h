/* Shared by the C twins (common/_events_native.c, common/_live_native.c): where a slots class keeps
   its fields, so that they read and write an event's slots directly instead of by attribute name. */

#ifndef LIQ_SLOTS_H
#define LIQ_SLOTS_H

#include <Python.h>
#include <structmember.h>

/* The offsets of `names` (a tuple of n field names) in `cls`; -1 with TypeError unless every one is
   a plain object slot (a `__slots__` member). */
static int slot_offsets(PyObject *cls, PyObject *names, Py_ssize_t n, Py_ssize_t *offsets) {
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *descr = PyObject_GetAttr(cls, PyTuple_GET_ITEM(names, i));
        if (descr == NULL) return -1;
        int ok = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                 ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
        if (ok) offsets[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
        if (!ok) {
            PyErr_SetString(PyExc_TypeError, "bind: every field must be a __slots__ member");
            return -1;
        }
    }
    return 0;
}

#endif

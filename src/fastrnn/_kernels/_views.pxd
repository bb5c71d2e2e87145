# Raw pointers to typed memoryviews for the kernels' nogil code: the data of
# an array, or NULL when it is empty (an optional input or output the caller
# left out).
from cython cimport floating


cdef inline floating *ptr1(floating[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


cdef inline const floating *const_ptr1(const floating[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


cdef inline floating *ptr2(floating[:, ::1] a) noexcept nogil:
    return &a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0 else NULL


cdef inline const floating *const_ptr2(const floating[:, ::1] a) noexcept nogil:
    return &a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0 else NULL


cdef inline floating *ptr3(floating[:, :, ::1] a) noexcept nogil:
    return &a[0, 0, 0] if a.shape[0] > 0 and a.shape[1] > 0 and a.shape[2] > 0 else NULL


cdef inline const floating *const_ptr3(const floating[:, :, ::1] a) noexcept nogil:
    return &a[0, 0, 0] if a.shape[0] > 0 and a.shape[1] > 0 and a.shape[2] > 0 else NULL

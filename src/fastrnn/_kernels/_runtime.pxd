# Shared by every kernel module: BLAS thread control callable without the GIL.
cdef void blas_set_threads(int n) noexcept nogil
cdef int blas_get_threads() noexcept nogil
cdef double parallel_min_work() noexcept nogil
cdef Py_ssize_t blas_int_limit() noexcept nogil

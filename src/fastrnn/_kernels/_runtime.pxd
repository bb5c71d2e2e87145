# Shared by every kernel module: BLAS thread control callable without the GIL,
# and the one rule that splits work over threads (see _runtime.pyx).
cdef void blas_set_threads(int n) noexcept nogil
cdef int blas_get_threads() noexcept nogil
cdef double parallel_min_work() noexcept nogil

cdef enum:
    MAX_SPLIT = 256     # most chunks split_threads gives (more than any machine's cores)

cdef int split_threads(double work, int num_threads) noexcept nogil
cdef Py_ssize_t chunk_start(Py_ssize_t n, int chunks, int c,
                            Py_ssize_t align) noexcept nogil
cdef Py_ssize_t blas_int_limit() noexcept nogil

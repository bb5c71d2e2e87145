"""The packed-weight product as the kernels call it (``_packed.pxd`` over
fr_gemm.h), against numpy, at every instruction-set level this CPU runs.

``_gemm_probe`` exposes ``pack_weights_into`` (a rows x cols weight matrix
packed plain or transposed, as the recurrent kernels pack W_ih / W_hh),
``packed_gemm`` and ``parallel_packed_gemm`` (rows of C split over OpenMP
threads) with leading dimensions wider than the product.  Shapes are odd on
purpose: m, n and k cross the micro-kernel's tile edges (MR rows, one SIMD
vector of columns, the K block) by one either way.
"""

import numpy as np
import pytest

from fastrnn._kernels import _dispatch, _runtime

LEVELS = [level for level in _dispatch.compiled_levels() if level in _dispatch.cpu_levels()]
TOLERANCE = {"float32": dict(rtol=2e-5, atol=2e-5), "float64": dict(rtol=1e-12, atol=1e-12)}


def probe(level):
    return _dispatch.module("_gemm_probe", level)


def tile(level):
    """(MR, columns per vector for float32, K block) of the level's micro-kernel."""
    mr, vector_bytes, kc = _dispatch.module("_gemm_twin", level).tile_shape()
    return mr, vector_bytes // 4, kc


def odd_shapes(level):
    """(m, n, k) around this level's tile edges, plus a few plain odd ones."""
    mr, lanes, kc = tile(level)
    shapes = {(1, 1, 1), (3, 5, 7), (17, 33, 9), (mr + 1, lanes - 1, kc + 1),
              (2 * mr - 1, 2 * lanes + 1, kc - 1), (mr, 3 * lanes, 2 * kc + 3),
              (5, lanes + 1, 1)}
    return sorted(shapes)


@pytest.fixture(autouse=True)
def parallel_even_for_small_products():
    """parallel_packed_gemm runs small products on one thread; these tests
    lower the threshold so their small products are split too."""
    before = _runtime.get_parallel_min_work()
    _runtime.set_parallel_min_work(1)
    yield
    _runtime.set_parallel_min_work(before)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("transpose", [False, True], ids=["w", "wT"])
@pytest.mark.parametrize("threads", [0, 1, 2, 3], ids=lambda t: f"threads{t}")
def test_packed_product_matches_numpy(level, dtype, transpose, threads, rng):
    module = probe(level)
    for m, n, k in odd_shapes(level):
        # B (k x n) is given as a weight matrix w: B itself, or w = B^T (n x k)
        b = rng.standard_normal((k, n)).astype(dtype)
        w = np.ascontiguousarray(b.T) if transpose else b
        packed = module.pack(w, transpose)
        # A and C are blocks of wider buffers (lda > k, ldc > n); what lies
        # beyond the block must not be read into C or written.
        a_buffer = rng.standard_normal((m, k + 3)).astype(dtype)
        c_buffer = rng.standard_normal((m, n + 2)).astype(dtype)
        expected = c_buffer.copy()
        expected[:, :n] += a_buffer[:, :k].astype(np.float64) @ b.astype(np.float64)
        module.gemm(a_buffer, k, packed, c_buffer, n, threads)
        np.testing.assert_allclose(c_buffer, expected, **TOLERANCE[dtype],
                                   err_msg=f"m={m} n={n} k={k}")
        np.testing.assert_array_equal(c_buffer[:, n:], expected[:, n:])


@pytest.mark.parametrize("level", LEVELS)
def test_pack_of_w_and_of_its_transpose_agree(level, rng):
    """Packing B directly and packing W = B^T with transpose=True must give
    the same panels: the kernels rely on it to read W_hh in place."""
    module = probe(level)
    for dtype in ("float32", "float64"):
        b = rng.standard_normal((13, 21)).astype(dtype)
        np.testing.assert_array_equal(module.pack(b), module.pack(np.ascontiguousarray(b.T),
                                                                  True))


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_packed_panels_hold_b_column_block_by_column_block(level, dtype, rng):
    """The panel layout itself, against numpy: panel q holds columns
    [q*NR, q*NR + NR) of B as k rows of NR, zeros past n.  Row counts around
    the vector width and column counts around a panel reach every copy in
    the pack: whole rows, register-transposed blocks and their leftovers."""
    module = probe(level)
    nr = module.pack(np.ones((1, 1), dtype)).size      # one row of one panel
    for k in (1, 3, nr // 2 - 1, nr // 2, nr // 2 + 1, nr, 2 * nr + 5, 64):
        for n in (1, nr - 1, nr, nr + 1, 2 * nr, 3 * nr - 2):
            b = rng.standard_normal((k, n)).astype(dtype)
            panels = -(-n // nr)
            padded = np.zeros((k, panels * nr), dtype)
            padded[:, :n] = b
            expected = padded.reshape(k, panels, nr).transpose(1, 0, 2).reshape(-1)
            for transpose in (False, True):
                w = np.ascontiguousarray(b.T) if transpose else b
                np.testing.assert_array_equal(module.pack(w, transpose), expected,
                                              err_msg=f"k={k} n={n} transpose={transpose}")


@pytest.mark.parametrize("level", LEVELS)
def test_thread_split_gives_the_serial_result_bit_for_bit(level, rng):
    """Rows are split whole: every row's sums are the serial ones."""
    module = probe(level)
    a = rng.standard_normal((37, 19)).astype(np.float32)
    b = rng.standard_normal((19, 23)).astype(np.float32)
    packed = module.pack(b)
    results = []
    for threads in (0, 1, 2, 4):
        c = np.zeros((37, 23), np.float32)
        module.gemm(a, 19, packed, c, 23, threads)
        results.append(c)
    for c in results[1:]:
        np.testing.assert_array_equal(c, results[0])


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_half_used_last_panel_gives_the_full_panel_sums(level, dtype, rng):
    """A last panel using at most one vector of its columns skips the other
    (zero-padded) vector.  Its columns must be the sums the full-width tile
    gives them: the same columns, computed with lanes more beside them."""
    module = probe(level)
    mr, lanes_f32, kc = tile(level)
    lanes = lanes_f32 * 4 // np.dtype(dtype).itemsize
    for m in (1, 2, mr + 1):
        for k in (1, 37, kc + 5):
            for used in (1, lanes - 1, lanes):
                n = 2 * lanes + used                 # one full panel, then `used` columns
                b = rng.standard_normal((k, n + lanes)).astype(dtype)
                a = rng.standard_normal((m, k)).astype(dtype)
                half = np.zeros((m, n), dtype)
                module.gemm(a, k, module.pack(np.ascontiguousarray(b[:, :n])), half, n)
                full = np.zeros((m, n + lanes), dtype)
                module.gemm(a, k, module.pack(b), full, n + lanes)
                np.testing.assert_array_equal(half, full[:, :n],
                                              err_msg=f"m={m} k={k} used={used}")
                np.testing.assert_allclose(half, a.astype(np.float64) @ b[:, :n],
                                           **TOLERANCE[dtype])


@pytest.mark.parametrize("level", LEVELS)
def test_every_row_count_gives_each_row_its_one_row_sums(level, rng):
    """Rows are tiled by count (a short remainder is split with the tile
    before it): for every m up to three tiles, each row of the product is
    the one-row product of that row bit for bit, and all rows are right."""
    module = probe(level)
    mr, lanes, _ = tile(level)
    k, n = 37, 2 * lanes + 3
    b = rng.standard_normal((k, n)).astype(np.float32)
    packed = module.pack(b)
    for m in range(1, 3 * mr + 4):
        a = rng.standard_normal((m, k)).astype(np.float32)
        c = np.zeros((m, n), np.float32)
        module.gemm(a, k, packed, c, n)
        np.testing.assert_allclose(c, a.astype(np.float64) @ b, **TOLERANCE["float32"],
                                   err_msg=f"m={m}")
        for i in range(m):
            row = np.zeros((1, n), np.float32)
            module.gemm(np.ascontiguousarray(a[i:i + 1]), k, packed, row, n)
            np.testing.assert_array_equal(c[i], row[0], err_msg=f"m={m} row {i}")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("small", [False, True], ids=["packed", "step"])
def test_a_product_started_from_the_bias_is_the_copy_and_add_bit_for_bit(level, small, rng):
    """packed_gemm_bias / step_gemm_bias (C = bias + A @ B) give exactly what
    copying the bias into C and adding the product gives, without reading
    C: for every row count up to three tiles (1 and 2 rows take the
    small-batch route with ``small``), columns past four panels (the route
    walks four at a time) and k past the K block; also many rows, which go
    in several L2-sized row blocks."""
    module = probe(level)
    mr, lanes, kc = tile(level)
    for dtype in (np.float32, np.float64):
        for m, n, k in [(m, 9 * lanes + 3, kc + 5) for m in range(1, 3 * mr + 4)] + \
                       [(700, lanes + 1, 300), (3, 4 * 2 * lanes, 1)]:
            a = rng.standard_normal((m, k)).astype(dtype)
            b = rng.standard_normal((k, n)).astype(dtype)
            bias = rng.standard_normal(n).astype(dtype)
            packed = module.pack(b)
            c = np.full((m, n), np.nan, dtype)
            module.gemm_bias(a, k, packed, bias, c, n, small)
            copied = np.tile(bias, (m, 1))
            module.gemm(a, k, packed, copied, n)
            np.testing.assert_array_equal(c, copied, err_msg=f"{dtype} m={m} n={n} k={k}")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [0, 1, 2, 3], ids=lambda t: f"threads{t}")
def test_weight_gradient_product_matches_numpy(level, dtype, threads, rng):
    """C += A^T B (dW = dG^T X): the packed product takes it when C is at
    least one panel wide and declines (C untouched) when it is narrower;
    through parallel_gemm_tn every width is computed, split over threads by
    rows of A and B.  A, B and C are blocks of wider buffers."""
    module = probe(level)
    nr = module.pack(np.ones((1, 1), dtype)).size
    shapes = [(1, nr, 1), (5, nr - 1, 9), (7, nr, 300), (nr + 3, 2 * nr + 1, 257),
              (300, 40, 530), (64, 3 * nr, 1), (2, 1, 64)]
    for m, n, k in shapes:
        a = rng.standard_normal((k, m + 3)).astype(dtype)
        b = rng.standard_normal((k, n + 2)).astype(dtype)
        c = rng.standard_normal((m + 1, n + 4)).astype(dtype)
        expected = c.astype(np.float64)
        expected[:m, :n] += a[:, :m].T.astype(np.float64) @ b[:, :n].astype(np.float64)
        before = c.copy()
        took = module.gemm_tn(a, m, b, n, c, threads)
        if threads == 0 and n < nr:
            assert not took, f"m={m} n={n} k={k}: the packed product took a narrow C"
            np.testing.assert_array_equal(c, before)
            continue
        assert took, f"m={m} n={n} k={k}: the packed product declined"
        tol = dict(TOLERANCE[dtype])
        tol["atol"] *= np.sqrt(k)
        np.testing.assert_allclose(c, expected, **tol, err_msg=f"m={m} n={n} k={k}")
        np.testing.assert_array_equal(c[m:], before[m:])
        np.testing.assert_array_equal(c[:, n:], before[:, n:])
        again = before.copy()
        module.gemm_tn(a, m, b, n, again, threads)
        np.testing.assert_array_equal(again, c)            # the same bits every time


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [0, 1, 2, 3], ids=lambda t: f"threads{t}")
def test_paired_weight_gradient_products_match_numpy_and_the_single_product(level, dtype,
                                                                            threads, rng):
    """C1 += A^T B1 and C2 += A^T B2 in one pass (dW_ih and dW_hh over the
    same gate gradients, A packed once): each C as numpy gives it, columns
    and rows past the product untouched, and bit for bit what the single
    product gives on one thread.  With either C narrower than a panel the
    packed pair declines and leaves both alone; parallel_gemm_tn_pair then
    still computes both."""
    module = probe(level)
    nr = module.pack(np.ones((1, 1), dtype)).size
    shapes = [(1, nr, nr, 1), (7, nr, 2 * nr + 3, 300), (nr + 3, 2 * nr + 1, nr, 257),
              (300, 40, 3 * nr, 530), (64, 3 * nr, nr - 1, 9), (5, nr - 1, nr, 9)]
    for m, n1, n2, k in shapes:
        a = rng.standard_normal((k, m + 3)).astype(dtype)
        b1 = rng.standard_normal((k, n1 + 2)).astype(dtype)
        b2 = rng.standard_normal((k, n2 + 5)).astype(dtype)
        c1 = rng.standard_normal((m + 1, n1 + 4)).astype(dtype)
        c2 = rng.standard_normal((m + 2, n2 + 1)).astype(dtype)
        before1, before2 = c1.copy(), c2.copy()
        took = module.gemm_tn_pair(a, m, b1, n1, c1, b2, n2, c2, threads)
        shape = f"m={m} n1={n1} n2={n2} k={k}"
        if threads == 0 and min(n1, n2) < nr:
            assert not took, f"{shape}: the packed pair took a narrow C"
            np.testing.assert_array_equal(c1, before1)
            np.testing.assert_array_equal(c2, before2)
            continue
        assert took, f"{shape}: the packed pair declined"
        tol = dict(TOLERANCE[dtype])
        tol["atol"] *= np.sqrt(k)
        for c, before, b, n in ((c1, before1, b1, n1), (c2, before2, b2, n2)):
            expected = before.astype(np.float64)
            expected[:m, :n] += a[:, :m].T.astype(np.float64) @ b[:, :n].astype(np.float64)
            np.testing.assert_allclose(c, expected, **tol, err_msg=shape)
            np.testing.assert_array_equal(c[m:], before[m:])
            np.testing.assert_array_equal(c[:, n:], before[:, n:])
            if threads <= 1:
                single = before.copy()
                module.gemm_tn(a, m, b, n, single, threads)
                np.testing.assert_array_equal(c, single, err_msg=shape)


@pytest.mark.parametrize("level", LEVELS)
def test_the_packed_product_leaves_a_large_weight_gradient_to_blas(level, rng):
    """Past 2**18 values of C (1024 x 512: OpenBLAS is 4% faster there) the
    packed product and its pair decline and leave C alone; the threaded
    route still computes it."""
    module = probe(level)
    m, n, k = 1024, 512, 3
    a = rng.standard_normal((k, m)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = np.zeros((m, n), np.float32)
    assert module.gemm_tn(a, 512, b, n, c, 0)               # 512 x 512: taken
    c[...] = 0
    assert not module.gemm_tn(a, m, b, n, c, 0)
    assert not module.gemm_tn_pair(a, m, b, n, c, b, 16, c, 0)
    np.testing.assert_array_equal(c, 0)
    assert module.gemm_tn(a, m, b, n, c, 2)
    np.testing.assert_allclose(c, a.T @ b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("level", LEVELS)
def test_weight_gradient_product_of_no_rows_leaves_c_alone(level):
    """T = 1 gives dW_hh a product over (T - 1) * B = 0 rows."""
    module = probe(level)
    nr = module.pack(np.ones((1, 1), np.float32)).size
    c = np.full((4, nr), 2.5, np.float32)
    for threads in (0, 2):
        assert module.gemm_tn(np.ones((0, 4), np.float32), 4,
                              np.ones((0, nr), np.float32), nr, c, threads)
    np.testing.assert_array_equal(c, 2.5)


@pytest.mark.parametrize("level", LEVELS)
def test_empty_products_leave_c_alone(level):
    module = probe(level)
    c = np.full((3, 4), 7.0)
    module.gemm(np.ones((3, 2)), 0, module.pack(np.ones((0, 4))), c, 4, 2)
    module.gemm(np.ones((3, 2)), 2, module.pack(np.ones((2, 0))), c, 0, 2)
    np.testing.assert_array_equal(c, 7.0)


def test_probe_refuses_operands_that_do_not_fit():
    module = probe(LEVELS[0])
    packed = module.pack(np.ones((2, 3)))
    with pytest.raises(ValueError, match="do not fit"):
        module.gemm(np.ones((4, 2)), 3, packed, np.zeros((4, 3)), 3)     # k > A's width
    with pytest.raises(ValueError, match="do not fit"):
        module.gemm(np.ones((4, 2)), 2, packed, np.zeros((5, 3)), 3)     # rows differ
    with pytest.raises(ValueError, match="do not fit"):
        module.gemm(np.ones((4, 2)), 2, packed[:-1].copy(), np.zeros((4, 3)), 3)
